"""Per-source statistics (lmbuild.data.statistics): bins and totals, parts merged, the cleaned
stage's stats on a small corpus against its own shards, the shards data card."""

import json
from collections import Counter
from types import SimpleNamespace

from lmbuild.build.config import validate
from lmbuild.data import data_card, statistics
from lmbuild.data.statistics import ALL, EDGES, Stats, merge

from clean_runs import make_raw, rows, run_clean
from test_clean import kjv_chapters


def test_bins_totals_and_domains():
    s = Stats()
    s.add("web", chars=100, words=20, lang="en", lang_score=0.97, url="https://www.Example.com/a")
    s.add("web", chars=16, words=1, lang="en", lang_score=0.5, url="http://news.example.com/b")
    s.add("books", chars=5000, words=900, lang="fr", lang_score=0.0, url=None)
    s.source("web")["dropped"]["url_banned_word"] += 2
    out = s.to_json()
    web = out["web"]
    assert web["documents"] == 2 and web["chars"]["total"] == 116 and web["words"]["total"] == 21
    assert web["chars"]["counts"][EDGES["chars"].index(64)] == 1 and web["chars"]["counts"][EDGES["chars"].index(16)] == 1
    assert web["lang_score"]["counts"][19] == 1 and web["lang_score"]["counts"][10] == 1
    assert web["domains"] == {"example.com": 1, "news.example.com": 1}
    assert web["dropped"] == {"url_banned_word": 2} and "tokens" not in web and "quality_score" not in web
    assert out[ALL]["documents"] == 3 and out[ALL]["lang"] == {"en": 2, "fr": 1}
    assert out["books"]["lang_score"]["counts"][0] == 1 and out["books"]["chars"]["counts"][EDGES["chars"].index(4096)] == 1


def test_merge_adds_parts_and_ignores_their_totals():
    a, b = Stats(), Stats()
    a.add("x", chars=10, tokens=3)
    b.add("x", chars=30, tokens=9)
    b.add("y", chars=1000, tokens=250)
    merged = merge([a.to_json(), b.to_json()])
    assert merged["x"]["documents"] == 2 and merged["x"]["tokens"]["total"] == 12
    assert merged[ALL]["documents"] == 3 and merged[ALL]["chars"]["total"] == 1040
    assert sum(merged[ALL]["tokens"]["counts"]) == 3
    assert statistics.mean(merged["x"], "chars") == 20 and statistics.mean(merged["x"], "words") is None


def test_cleaned_stats_describe_the_kept_shards(tmp_path):
    chapters = kjv_chapters(10)
    path = tmp_path / "kjv.jsonl"
    path.write_text("".join(json.dumps({"text": t, "url": f"https://bible{i % 2}.org/{i}"}) + "\n" for i, t in enumerate(chapters)))
    src = {"type": "jsonl", "name": "kjv", "path": str(path)}
    raw = make_raw(tmp_path, [src], shards=2)
    counts, out = run_clean(tmp_path, raw, validate({"data": {"sources": [src], "clean": {"min_chars": 3000}}})["data"]["clean"])
    kept = rows(out)
    stats = counts["stats"]
    assert json.loads((out / "stats.json").read_text()) == stats
    kjv = stats["kjv"]
    assert kjv["documents"] == len(kept) == counts["documents_out"] > 0
    assert kjv["chars"]["total"] == sum(len(r["text"]) for r in kept)
    assert kjv["words"]["total"] == sum(len(r["text"].split()) for r in kept)
    assert kjv["lang"] == {"en": len(kept)} and sum(kjv["lang_score"]["counts"]) == len(kept)
    assert kjv["dropped"] == counts["dropped"] and sum(kjv["dropped"].values()) + len(kept) == 10
    assert sum(kjv["domains"].values()) == len(kept) and set(kjv["domains"]) <= {"bible0.org", "bible1.org"}


def test_quality_top_fraction_drops_are_counted_from_what_was_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = tmp_path / "shard-00000.parquet"
    pq.write_table(pa.table({"text": ["a b c"], "source": ["s"], "metadata": ["{}"], "lang": ["en"], "lang_score": [0.9], "quality_score": [0.8]}), shard)
    got = statistics.cleaned_part(shard, Counter({"s": 4}), Counter({("s", "too_short"): 1}), {"url"})
    assert got["s"]["dropped"] == {"quality_top_fraction": 2, "too_short": 1}
    assert got["s"]["quality_score"]["counts"][16] == 1


def test_data_card_names_sources_sizes_and_upstream():
    s = Stats()
    s.add("web", chars=400, words=80, tokens=100)
    s.add("books", chars=4000, words=700, tokens=900)
    stats = s.to_json()
    cleaned_stats = Stats()
    cleaned_stats.add("web", chars=400, lang="en", url="https://example.com/")
    up = {
        "deduplicated": {"key": "d1", "settings": {"method": "minhash"}, "counts": {"documents_in": 3, "documents_out": 2}},
        "cleaned": {"key": "c1", "settings": {"url": {"enabled": True}, "badwords": {"enabled": False}, "lang": {"keep": ["en"]}},
                    "counts": {"documents_in": 9, "documents_out": 3, "dropped": {"url_banned_word": 4, "too_short": 2}, "stats": cleaned_stats.to_json()}},
        "raw": {"key": "r1", "counts": {"documents": 9, "sources": [{"name": "web", "type": "jsonl", "documents": 9, "bytes": 4400}]}},
    }
    card = data_card.render("s1", {"train_tokens": 512, "val_tokens": 128, "seq_len": 64, "tokenizer": "t1", "vocab_size": 300}, stats, up)
    assert card.startswith("# Data card: shards s1")
    assert "| books | 1 | 900 | 90.0% | 4,000.0 | 700.0 | 900.0 |" in card
    assert "- **cleaned** `c1`: 9 documents in, 3 out." in card and "- **raw** `r1`: 9 documents read." in card
    assert "  - source `web` (jsonl): 9 documents, 4,400 bytes" in card and "Deduplication: minhash" in card
    assert "Cleaning rules on: url; languages kept: en." in card
    assert card.index("url_banned_word") < card.index("too_short") and "| example.com | 1 |" in card
    assert "Licences" in card
    ctx = SimpleNamespace(inputs={"deduplicated": "/nonexistent"})
    assert data_card.upstream(ctx) == {}
