"""Exact-substring dedup (lmbuild.data.substrings) through stage deduplicated's build."""

import random
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lmbuild.data import substrings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dedup import by_id, read, run, settings, write_cleaned  # noqa: E402

SPAN = "This page is part of the Example Archive; reproduction in whole or in part is prohibited!!"  # 90 bytes
assert len(SPAN.encode()) == 90


def prose(seed: int, words: int = 80) -> str:
    rng = random.Random(seed)
    return " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(words))


def test_marked_windows_against_brute_force():
    """Every byte in a k-window seen earlier, and no other, on random small texts."""
    rng = random.Random(0)
    docs = [bytes(rng.choice(b"ab") for _ in range(rng.randint(0, 30))) for _ in range(12)]
    k = 6
    got = substrings.marked(docs, k)
    seen: set = set()
    for d, m in zip(docs, got):
        want = set()
        for i in range(len(d) - k + 1):
            if d[i : i + k] in seen:
                want |= set(range(i, i + k))
            seen.add(d[i : i + k])  # after the check: a window repeated inside one document counts too
        assert m.tolist() == sorted(want)


def test_planted_span_removed_from_all_but_the_first(tmp_path):
    span = SPAN + " 0123456789"  # 101 bytes: over the 100-byte default
    docs = [[(f"a:{i}", f"{prose(i)} {span} {prose(100 + i)}") for i in range(3)], [("b:0", f"{span} {prose(7)}"), ("b:1", prose(8))]]
    cleaned = write_cleaned(tmp_path / "cleaned", docs)
    counts, out = run(tmp_path, cleaned, settings=settings(substrings=True))
    got = {r["id"]: r["text"] for r in by_id(read(out))}
    assert got["a:0"] == f"{prose(0)} {span} {prose(100)}"  # the first copy stays
    for i in (1, 2):
        assert span not in got[f"a:{i}"] and got[f"a:{i}"].startswith(prose(i)) and got[f"a:{i}"].endswith(prose(100 + i))
    assert got["b:0"].strip() == prose(7) and got["b:1"] == prose(8)  # the span and a neighbouring space
    assert counts["substrings"] == {"bytes": counts["substrings"]["bytes"], "edited": 3, "too_short": 0}
    assert 3 * 101 <= counts["substrings"]["bytes"] < 3 * 110  # the span, give or take a neighbouring space
    # A 90-byte span is under the threshold: nothing cut.
    docs = [[(f"a:{i}", f"{prose(i)} {SPAN} {prose(100 + i)}") for i in range(3)]]
    counts, out = run(tmp_path, write_cleaned(tmp_path / "c2", docs), name="short-span", settings=settings(substrings=True))
    assert counts["substrings"]["edited"] == 0


def test_too_short_dropped_and_deterministic(tmp_path):
    span = SPAN + " " + prose(50, 30)
    docs = [[("a:0", f"{prose(1)} {span}")], [("b:0", f"tiny {span}"), ("b:1", prose(2))], [("c:0", f"{prose(3)} {span}")]]
    cleaned = write_cleaned(tmp_path / "cleaned", docs)
    outs = []
    for name, buckets in (("one", 1), ("three", 3)):
        counts, out = run(tmp_path, cleaned, name=name, settings=settings(substrings=True, paragraphs=True, buckets=buckets))
        assert counts["dropped"] == {"substrings:too_short": 1} and counts["documents_out"] == 3
        assert pq.read_table(out / "dropped.parquet").to_pylist() == [{"id": "b:0", "reason": "substrings:too_short", "detail": None}]
        outs.append([(p.name, pq.read_table(p).to_pylist()) for p in sorted(out.glob("shard-*.parquet"))])
    assert outs[0] == outs[1]


def test_cut_drops_split_characters():
    text = "héllo wörld"
    raw = text.encode()
    assert substrings.cut(text, np.array([raw.index("é".encode())])) == "hllo wörld"
    assert substrings.cut(text, np.zeros(0, np.int64)) == text
