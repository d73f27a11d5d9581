"""Per-source statistics of the documents a data stage keeps (stages ``cleaned`` and ``shards``;
the shards artifact's data card, lmbuild.data.data_card, is written from them).

Each part job counts its own documents into fixed histogram bins (:data:`EDGES`), so the gather
job only adds counts (:func:`merge`); the result is ``stats.json`` in the artifact and ``stats`` in
its manifest's counts, where the report page's Data section reads it from the lineage. Per source
(the ``source`` column) and for all sources together (``"*"``):

    documents, chars/words/tokens: {total, counts per bin}, lang: {code: documents},
    lang_score/quality_score: {counts per bin}, domains: {host: documents}, dropped: {reason: n}

Words are whitespace-separated (the same for every language, so comparable across stages, not
the word rules' segmenters); tokens exist only in ``shards``. Domains are the hosts of the
documents' URLs (``www.`` removed), the :data:`TOP_DOMAINS` commonest of each part: a
domain spread thin over many parts can be missing from the merged list.

What it does not do: sample or keep documents, or compute exact quantiles (bins only).
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

# Lower bounds of the bins; the last bin is open. Lengths double per bin; scores in twentieths.
EDGES = {
    "chars": [0] + [2**k for k in range(4, 25)],
    "words": [0] + [2**k for k in range(0, 22)],
    "tokens": [0] + [2**k for k in range(2, 23)],
    "lang_score": [i / 20 for i in range(20)],
    "quality_score": [i / 20 for i in range(20)],
}
TOP_DOMAINS = 200
ALL = "*"


def host_of(url: str) -> str | None:
    """The URL's host name, lowercased (a URL without a scheme read as one); None where it has none."""
    try:
        return urlsplit(url if "://" in url else "//" + url).hostname
    except ValueError:  # an invalid IPv6 literal
        return None


class Stats:
    """Counts of one part job, per source."""

    def __init__(self):
        self.sources: dict[str, dict] = {}

    def source(self, name: str | None) -> dict:
        name = name or ""
        if name not in self.sources:
            self.sources[name] = {"documents": 0, "lang": Counter(), "domains": Counter(), "dropped": Counter()}
        return self.sources[name]

    def add(self, source: str | None, **values) -> None:
        """One kept document: ``chars``, ``words``, ``tokens`` (counts), ``lang_score``,
        ``quality_score`` (None: not scored), ``lang``, ``url`` (None: none)."""
        s = self.source(source)
        s["documents"] += 1
        for name, v in values.items():
            if v is None:
                continue
            if name == "lang":
                s["lang"][v] += 1
            elif name == "url":
                host = host_of(v)
                if host:
                    s["domains"][host.removeprefix("www.")] += 1
            else:
                h = s.setdefault(name, {"total": 0, "counts": [0] * len(EDGES[name])})
                h["total"] += v
                h["counts"][bisect.bisect_right(EDGES[name], v) - 1] += 1

    def add_arrays(self, source: str | None, n: int, values: dict, langs: list, urls: list) -> None:
        """``n`` kept documents at once: ``values`` maps a histogram's name to a NumPy array (NaN:
        not scored); ``langs``, ``urls``: one entry (or None) per document."""
        import numpy as np

        s = self.source(source)
        s["documents"] += n
        for name, v in values.items():
            v = v[~np.isnan(v)] if v.dtype.kind == "f" else v
            if not len(v):
                continue
            h = s.setdefault(name, {"total": 0, "counts": [0] * len(EDGES[name])})
            h["total"] += v.sum().item()
            bins = np.bincount(np.searchsorted(EDGES[name], v, side="right") - 1, minlength=len(EDGES[name]))
            h["counts"] = [a + b for a, b in zip(h["counts"], bins.tolist())]
        s["lang"].update(x for x in langs if x is not None)
        s["domains"].update(h.removeprefix("www.") for h in map(host_of, filter(None, urls)) if h)

    def to_json(self) -> dict:
        out = {}
        for name, s in sorted(self.sources.items()):
            out[name] = {**s, "lang": dict(s["lang"].most_common()), "domains": dict(s["domains"].most_common(TOP_DOMAINS)),
                         "dropped": dict(sorted(s["dropped"].items()))}
        return merge([out])


def merge(parts: list[dict]) -> dict:
    """The sum of parts' statistics (each ``{source: stats}``, a ``"*"`` entry ignored), with the
    ``"*"`` entry of all sources."""
    out: dict[str, dict] = {}
    for part in parts:
        for name, s in part.items():
            if name != ALL:
                _add(out.setdefault(name, _empty()), s)
    total = _empty()
    for s in out.values():
        _add(total, s)
    for s in (*out.values(), total):
        s["lang"] = dict(Counter(s["lang"]).most_common())
        s["domains"] = dict(Counter(s["domains"]).most_common(TOP_DOMAINS))
        s["dropped"] = dict(sorted(s["dropped"].items()))
    return {**dict(sorted(out.items())), ALL: total}


def _empty() -> dict:
    return {"documents": 0, "lang": {}, "domains": {}, "dropped": {}}


def _add(into: dict, s: dict) -> None:
    into["documents"] += s["documents"]
    for key in ("lang", "domains", "dropped"):
        for k, n in s.get(key, {}).items():
            into[key][k] = into[key].get(k, 0) + n
    for name in EDGES:
        if name in s:
            h = into.setdefault(name, {"total": 0, "counts": [0] * len(EDGES[name])})
            h["total"] += s[name]["total"]
            h["counts"] = [a + b for a, b in zip(h["counts"], s[name]["counts"])]


def mean(s: dict, name: str) -> float | None:
    """The mean of a length per document; None where not counted."""
    return s[name]["total"] / s["documents"] if name in s and s["documents"] else None


def cleaned_part(shard: Path, read: Counter, dropped: Counter, url_fields: set[str]) -> dict:
    """The statistics of one cleaned shard: its kept documents read back from ``shard`` (after
    any quality_top_fraction rewrite), the drops per ``(source, reason)``; ``read``: documents
    read per source. Drops not in ``dropped`` (the top-fraction rewrite) are counted as
    ``quality_top_fraction``."""
    # Here: the shards stage imports this module without them.
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    stats = Stats()
    f = pq.ParquetFile(shard)
    scores = [c for c in ("lang_score", "quality_score") if c in f.schema_arrow.names]
    for batch in f.iter_batches(batch_size=4096, columns=["text", "source", "metadata", "lang", *scores]):
        text = batch.column("text")
        # str.split() per document: 2.8x faster here than Arrow's regex count of the same words.
        words = np.fromiter((len(t.split()) for t in text.to_pylist()), np.int64, len(text))
        arrays = {"chars": pc.utf8_length(text).to_numpy(), "words": words,
                  **{c: batch.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in scores}}
        langs, metas = batch.column("lang").to_pylist(), batch.column("metadata").to_pylist()
        rows: dict = {}
        for i, name in enumerate(batch.column("source").to_pylist()):
            rows.setdefault(name, []).append(i)
        for name, idx in rows.items():
            take = np.array(idx)
            stats.add_arrays(name, len(idx), {k: v[take] for k, v in arrays.items()}, [langs[i] for i in idx],
                             [_url(metas[i], url_fields) for i in idx])
    for (source, reason), n in dropped.items():
        stats.source(source)["dropped"][reason] += n
    for source, n in read.items():
        s = stats.source(source)
        rest = n - s["documents"] - sum(s["dropped"].values())
        if rest > 0:
            s["dropped"]["quality_top_fraction"] += rest
    return stats.to_json()


def _url(metadata: str, fields: set[str]) -> str | None:
    """The URL in a document's metadata (JSON parsed only where a field's name occurs)."""
    if not any(f'"{f}"' in metadata for f in fields):
        return None
    meta = json.loads(metadata)
    return next((meta[f] for f in sorted(fields) if isinstance(meta.get(f), str) and meta[f]), None)


def write(out: Path, stats: dict) -> None:
    (Path(out) / "stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
