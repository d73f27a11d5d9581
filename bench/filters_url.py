"""The URL and bad-words sides of bench/filters_bench.py, and the statistics' cost: made-up URLs
for the bench corpus, the settings with both rule families on or off, each filter timed alone,
and lmbuild.data.statistics on a cleaned shard of every document. Not run on its own."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

BLOCKED = [f"blocked{i}.example" for i in range(10_000)]


def made_up_urls(texts: list[str], dirty: bool = True) -> list[str]:
    """One URL per document: a host of 2,000 (``dirty``: 1 in 50 a blocked one's subdomain), a
    slug of its first words (``dirty``: 1 in 50 with a RefinedWeb banned word)."""
    from lmbuild.data.filters.url import word_list

    banned = sorted(word_list("banned_words.txt"))
    out = []
    for i, t in enumerate(texts):
        slug = "-".join(re.findall(r"[a-z0-9]+", t[:80].lower())[:6]) or "page"
        host = f"www.{BLOCKED[i % len(BLOCKED)]}" if dirty and i % 50 == 7 else f"site{i % 2000}.org"
        if dirty and i % 50 == 13:
            slug += f"-{banned[i % len(banned)]}"
        out.append(f"https://{host}/{i % 97}/{slug}.html")
    return out


def url_settings(s: dict, on: bool, blocklist: str) -> dict:
    """The bench's cleaning settings ``s`` with both rule families on or off (edited in place)."""
    s["url"].update(enabled=on, blocklist=[blocklist] if on else [])
    s["badwords"]["enabled"] = on
    return s


def run_statistics(texts: list[str], urls: list[str], folder: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmbuild.data import statistics as stats

    shard = folder / "shard-00000.parquet"
    if not shard.exists():  # written once, not timed: a cleaned shard of every document
        n = len(texts)
        pq.write_table(pa.table({"id": [str(i) for i in range(n)], "text": texts, "source": ["bench"] * n,
                                 "metadata": [json.dumps({"kind": "prose", "url": u}) for u in urls],
                                 "lang": ["en"] * n, "lang_score": pa.array([0.9] * n, pa.float32())}), shard, compression="zstd")
    t0 = time.perf_counter()
    out = stats.cleaned_part(shard, Counter({"bench": len(texts)}), Counter(), {"url"})
    return {"seconds": time.perf_counter() - t0, "reasons": {"kept": out["bench"]["documents"]}}


def run_alone(texts: list[str], urls: list[str], which: str, blocklist: str) -> dict:
    from lmbuild.data.filters import BadWordsFilter, URLFilter

    if which == "url":
        f = URLFilter.from_settings({"blocklist": [blocklist], "banned_words": True, "soft_banned_words": 2, "banned_subwords": True})
        t0 = time.perf_counter()
        reasons = Counter(f.check(u) or "kept" for u in urls)
    else:
        f = BadWordsFilter()
        t0 = time.perf_counter()
        reasons = Counter(f.check(t, "en") or "kept" for t in texts)
    return {"seconds": time.perf_counter() - t0, "reasons": dict(reasons)}
