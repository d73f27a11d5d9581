"""MinHash's clusters for stage ``deduplicated`` (lmbuild.data.deduplicated): the connected
components of the candidate edges that the reduce jobs wrote, one survivor per component (its
smallest id, so the result does not depend on shard order, bucket count or thread scheduling).

What this module does not do: verify a candidate pair by its Jaccard similarity (every edge
counts), or read the edges (the stage loads them into DuckDB table ``e``).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from lmbuild.data.minhash import sorted_unique


def components(u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """Label of every node 0..n-1: the smallest node of its connected component.

    Min-label propagation over the edges with pointer jumping, all in numpy; converges in
    O(log(component diameter)) rounds for the star-shaped edge sets the buckets produce.
    """
    labels = np.arange(n, dtype=np.int64)
    while True:
        m = np.minimum(labels[u], labels[v])
        before = labels.copy()
        np.minimum.at(labels, u, m)
        np.minimum.at(labels, v, m)
        while True:  # pointer jumping: every node to its label's label
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels


def clusters(con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Table ``dup`` (id, keep: the smallest id of its connected component) from the edges in
    table ``e``; returns the size of every component."""
    # Nodes numbered in id order, so the smallest label of a component is its smallest id.
    con.execute(
        "CREATE TEMP TABLE nodes AS SELECT id, (row_number() OVER (ORDER BY id) - 1)::BIGINT AS i "
        "FROM (SELECT id FROM e UNION SELECT keep FROM e)"
    )
    n_nodes = con.execute("SELECT count(*) FROM nodes").fetchone()[0]
    uv = con.execute("SELECT a.i AS u, b.i AS v FROM e JOIN nodes a ON e.id = a.id JOIN nodes b ON e.keep = b.id").fetchnumpy()
    labels = components(np.asarray(uv["u"], np.int64), np.asarray(uv["v"], np.int64), n_nodes)
    sizes = np.bincount(labels, minlength=n_nodes)[sorted_unique(labels)] if n_nodes else np.zeros(0, np.int64)
    con.register("lab", pa.table({"i": np.arange(n_nodes, dtype=np.int64), "label": labels}))
    con.execute(
        "CREATE TEMP TABLE dup AS SELECT n.id, k.id AS keep FROM lab JOIN nodes n ON lab.i = n.i "
        "JOIN nodes k ON lab.label = k.i WHERE lab.i <> lab.label"
    )
    con.unregister("lab")
    return sizes
