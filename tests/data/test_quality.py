"""Stage quality_model (a trained fastText classifier) and cleaning by its scores.

Positives are real prose; negatives are machine-made from real text: the same kind of prose
with its words shuffled, web boilerplate assembled from navigation and legal phrases, and
lines of real Python source. CI's test uses the embedded corpus (Shakespeare, the stdlib);
test_separates_real_prose_from_machine_text uses the WikiText-2 and KJV excerpts of tests/fixtures.
"""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import vendored

from lmbuild.build.config import validate
from lmbuild.data import cleaned as clean, cleaner, quality, quality_model
from lmbuild.data.embedded import iter_python_stdlib, iter_shakespeare
from lmbuild.errors import UserError
from lmbuild.store.runner import StageContext

from clean_runs import jsonl_source, make_raw, passages, rows, stage

BOILERPLATE = [
    "Home", "About us", "Contact", "Privacy Policy", "Terms of Use", "Cookie settings", "Sign in", "Register",
    "Subscribe to our newsletter", "Follow us on Twitter", "Share on Facebook", "All rights reserved.",
    "Click here for more", "Read more", "Related posts", "Skip to content", "Search", "Menu", "Next page",
    "Previous page", "Back to top", "Accept all cookies", "Log out", "My account", "Shopping cart (0)",
]


def salad(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def boilerplate(rng: random.Random) -> str:
    lines = [" | ".join(rng.sample(BOILERPLATE, rng.randint(3, 7))) for _ in range(rng.randint(6, 20))]
    lines.append(f"Copyright © {rng.randint(1998, 2026)} Example Media Ltd. All rights reserved.")
    return "\n".join(lines)


def negatives(prose: list[str], code: list[str], rng: random.Random) -> list[str]:
    """Shuffled ``prose``, as many boilerplate pages, and ``code`` passages, in equal thirds."""
    n = len(prose)
    return [salad(t, rng) for t in prose] + [boilerplate(rng) for _ in range(n)] + code[:n]


def train(tmp_path: Path, positives: list[str], negative: list[str], **settings) -> tuple[dict, Path]:
    cfg = validate({"data": {"quality_model": {
        "positives": [jsonl_source(tmp_path / "pos.jsonl", positives)],
        "negatives": [jsonl_source(tmp_path / "neg.jsonl", negative)],
        **settings,
    }}})["data"]["quality_model"]
    out, work = stage(tmp_path, "quality_model")
    return quality_model.train_one(cfg, "data.quality_model", out / quality.LEGACY, work), out


def code_passages(limit: int) -> list[str]:
    out = []
    for _, text, _ in iter_python_stdlib():
        out += passages(text)
        if len(out) >= limit:
            return out[:limit]
    return out


def test_classifier_separates_shakespeare_from_machine_text_and_cleaning_uses_it(tmp_path):
    rng = random.Random(0)
    acts = [p for _, text, _ in iter_shakespeare() for p in passages(text)]
    rng.shuffle(acts)
    train_prose, held_prose = acts[:1500], acts[1500:1700]
    code = code_passages(1700)
    counts, model = train(tmp_path, train_prose, negatives(train_prose[:500], code[:500], rng), dim=16, bucket=20000)
    assert counts["documents"]["train"]["hq"] + counts["documents"]["valid"]["hq"] == 1500
    assert counts["documents"]["valid"]["lq"] > 100
    # Measured 0.959 / 1.0: shuffled Shakespeare keeps its words, only its bigrams change.
    assert counts["valid"]["precision"] >= 0.9 and counts["valid"]["recall"] >= 0.95, counts
    assert sorted(p.name for p in (model / "quality").iterdir()) == ["classifier.json", "model.bin"]
    meta = json.loads((model / "quality" / "classifier.json").read_text())
    assert meta["valid"] == counts["valid"] and len(meta["valid_scores"]) == sum(counts["documents"]["valid"].values())
    # Unseen passages of each kind.
    held_neg = negatives(held_prose[:60], code[1500:1560], rng)
    pos_scores, neg_scores = quality.score(str(model / "quality"), held_prose), quality.score(str(model / "quality"), held_neg)
    print(f"Shakespeare: validation {counts['valid']}; held out: {sum(s < 0.5 for s in pos_scores)} of {len(pos_scores)} prose "
          f"under 0.5, over 0.5: {[sum(s >= 0.5 for s in neg_scores[i:i + 60]) for i in (0, 60, 120)]} of 60 salads, boilerplate, code")
    assert sum(s >= 0.5 for s in pos_scores) >= 0.95 * len(pos_scores)
    assert sum(s < 0.5 for s in neg_scores) >= 0.9 * len(neg_scores)

    # The cleaned stage on a mixed corpus: prose kept with its score, machine text dropped.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    raw = make_raw(mixed, [jsonl_source(mixed / "prose.jsonl", held_prose[:60]), jsonl_source(mixed / "neg.jsonl", held_neg[:120])], shards=1)
    settings = validate({"data": {"clean": {"quality": {"enabled": True}, "min_chars": 100}}})["data"]["clean"]
    for group in ("gopher_quality", "gopher_repetition", "c4", "fineweb"):
        settings[group]["enabled"] = False  # this test is about the classifier alone
    out, work = stage(mixed, "cleaned")
    counts = clean.build(StageContext("cleaned", "t", settings, {"raw": raw, "quality_model": model}, out, work, 1))
    kept = rows(out)
    assert pq.read_schema(out / "shard-00000.parquet") == clean.QUALITY_SCHEMA
    assert all(r["quality_score"] >= 0.5 for r in kept)
    prose_kept = sum(r["source"].endswith("prose.jsonl") for r in kept)
    assert prose_kept >= 57 and len(kept) - prose_kept <= 6, counts
    assert counts["dropped"]["quality_score"] == counts["documents_in"] - counts["documents_out"] - sum(
        v for k, v in counts["dropped"].items() if k != "quality_score"
    )
    assert counts["dropped_by_lang"]["en"]["quality_score"] >= 100

    # top_fraction: the best 30% of each shard's scored documents, whatever the threshold. A raw
    # part is one source (lmbuild.data.groups): each shard ranks one source's documents.
    settings["quality"].update(threshold=None, top_fraction=0.3)
    out, work = stage(mixed, "cleaned-top")
    counts = clean.build(StageContext("cleaned", "t", settings, {"raw": raw, "quality_model": model}, out, work, 1))
    scored = counts["documents_in"] - sum(v for k, v in counts["dropped"].items() if k != "quality_top_fraction")
    assert 0.3 * scored <= counts["documents_out"] <= 0.3 * scored + 2  # rounded up in each of 2 shards
    kept = rows(out)
    assert len(kept) == counts["documents_out"]
    assert [len({r["source"] for r in pq.read_table(p).to_pylist()}) for p in sorted(out.glob("shard-*.parquet"))] == [1, 1]
    dropped = [r for p in (out / "dropped").glob("*.parquet") for r in pq.read_table(p).to_pylist()]
    assert sum(r["reason"] == "quality_top_fraction" for r in dropped) == counts["dropped"]["quality_top_fraction"]


def test_cleaning_without_its_classifier_input_is_an_error(tmp_path):
    settings = validate({"data": {"clean": {"quality": {"enabled": True}}}})["data"]["clean"]
    with pytest.raises(UserError, match="quality_model"):
        cleaner.Cleaner(settings)


def test_a_class_with_no_documents_is_an_error(tmp_path):
    with pytest.raises(UserError, match=r"data.quality_model.negatives\[0\] \(.*neg.jsonl\): no documents"):
        train(tmp_path, ["some prose " * 20] * 5, [])
    cfg = validate({"data": {"quality_model": {"positives": [{"type": "jsonl", "path": str(tmp_path / "pos.jsonl")}]}}})
    with pytest.raises(UserError, match="data.quality_model.negatives: no sources"):
        quality_model.train_one(cfg["data"]["quality_model"], "data.quality_model", *stage(tmp_path, "q2"))


def test_separates_real_prose_from_machine_text(tmp_path):
    rng = random.Random(1)
    wiki = vendored.text("wikitext2_valid_head.txt.gz")
    articles = [a for a in re.split(r"\n (?== [^=])", wiki) if len(a) > 1000]
    wiki_passages = [p for a in articles for p in passages(a)]
    kjv = passages(vendored.text("kjv_head.txt.gz"))
    rng.shuffle(wiki_passages)
    rng.shuffle(kjv)
    assert len(wiki_passages) >= 200 and len(kjv) >= 200  # what the excerpts hold
    prose = wiki_passages[:160] + kjv[:160]
    held = wiki_passages[160:200] + kjv[160:200]
    code = code_passages(2400)
    counts, model = train(tmp_path, prose, negatives(prose[::2], code[:1000], rng))
    print("quality_model on WikiText-2 + KJV:", json.dumps(counts))
    assert counts["valid"]["precision"] >= 0.95 and counts["valid"]["recall"] >= 0.95, counts
    held_neg = negatives(held[::4], code[2000:2100], rng)
    pos, neg = quality.score(str(model / "quality"), held), quality.score(str(model / "quality"), held_neg)
    tp, fn = sum(s >= 0.5 for s in pos), sum(s < 0.5 for s in pos)
    fp = sum(s >= 0.5 for s in neg)
    print(f"held out: {len(pos)} prose, {len(neg)} machine-made: precision {tp / max(tp + fp, 1):.4f} recall {tp / len(pos):.4f}")
    assert tp / (tp + fp) >= 0.95 and tp / len(pos) >= 0.95
