"""Stage cleaned: real documents through normalisation, length, repetition and language ID."""

import copy
import json
import unicodedata
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lmbuild.config import validate
from lmbuild.data import clean, ingest
from lmbuild.errors import UserError
from lmbuild.runner import StageContext

DEFAULTS = validate({})["data"]["clean"]
PROSE = (
    "The harbour town woke slowly. Fishermen hauled their nets onto the quay while gulls argued "
    "over scraps, and the baker on the corner opened his shutters to let the smell of bread drift "
    "down towards the water, where a ferry waited with its engine idling."
)


def stage(tmp_path: Path, name: str) -> tuple[Path, Path]:
    out, work = tmp_path / name, tmp_path / f"{name}-work"
    out.mkdir()
    work.mkdir()
    return out, work


def make_raw(tmp_path: Path, sources, shards=2) -> Path:
    out, work = stage(tmp_path, "raw")
    ingest.build(StageContext("raw", "t", {"sources": sources, "shards": shards}, {}, out, work, 1))
    return out


def run_clean(tmp_path: Path, raw: Path, settings=None, threads=1, name="cleaned"):
    out, work = stage(tmp_path, name)
    ctx = StageContext("cleaned", "t", settings or DEFAULTS, {"raw": raw}, out, work, threads)
    return clean.build(ctx), out


def rows(out: Path) -> list[dict]:
    return [r for p in sorted(out.glob("shard-*.parquet")) for r in pq.read_table(p).to_pylist()]


def write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_real_mix(tmp_path, shared_data):
    spam = write_jsonl(tmp_path / "spam.jsonl", [{"text": "click here to win a prize now\n" * 20}])
    sources = [
        {"type": "embedded", "name": "plays", "parts": ["shakespeare"], "max_docs": 3},
        {"type": "embedded", "name": "code", "parts": ["python_stdlib"], "max_docs": 40},
        {"type": "jsonl", "name": "en", "path": str(shared_data / "langid" / "fortunes_en.jsonl"), "max_docs": 100},
        {"type": "jsonl", "name": "de", "path": str(shared_data / "langid" / "fortunes_de.jsonl"), "max_docs": 100},
        {"type": "jsonl", "name": "spam", "path": spam},
    ]
    raw = make_raw(tmp_path, sources, shards=3)
    settings = {**DEFAULTS, "min_chars": 100}  # fortunes are >= 100 characters
    counts, out = run_clean(tmp_path, raw, settings)
    kept = rows(out)
    assert pq.read_schema(out / "shard-00000.parquet") == clean.SCHEMA
    assert sorted(p.name for p in out.glob("*.parquet")) == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert counts["documents_in"] == 244
    assert counts["documents_out"] == len(kept) == 244 - sum(counts["dropped"].values())
    assert counts["bytes_out"] == sum(len(r["text"].encode()) for r in kept) < counts["bytes_in"]
    by_source = {s: [r for r in kept if r["source"] == s] for s in ("plays", "code", "en", "de", "spam")}
    assert len(by_source["plays"]) == 3 and all(r["lang"] == "en" and r["lang_score"] > 0.5 for r in by_source["plays"])
    assert all(r["lang"] is None and r["lang_score"] is None for r in by_source["code"])
    assert len(by_source["en"]) >= 90 and len(by_source["de"]) <= 3
    assert by_source["spam"] == []
    assert counts["dropped"]["lang"] >= 97
    assert counts["dropped"]["dup_line_frac"] >= 1  # the spam
    assert counts["dropped"]["too_short"] == 40 - len(by_source["code"])  # stdlib files under 100 chars


def test_normalises_and_skips_code_for_language_and_repetition(tmp_path):
    nfd = unicodedata.normalize("NFD", "Café crème, naïve résumé. " + PROSE)
    repetitive = "x = 1\n" * 60  # code: repeated lines are not spam
    sources = [
        {"type": "jsonl", "name": "prose", "path": write_jsonl(tmp_path / "p.jsonl", [{"text": nfd}, {"text": repetitive}])},
        {"type": "jsonl", "name": "code", "kind": "code", "path": write_jsonl(tmp_path / "c.jsonl", [{"text": repetitive}])},
    ]
    counts, out = run_clean(tmp_path, make_raw(tmp_path, sources), {**DEFAULTS, "min_chars": 50})
    kept = {r["id"]: r for r in rows(out)}
    assert set(kept) == {"prose:" + str(tmp_path / "p.jsonl") + ":1", "code:" + str(tmp_path / "c.jsonl") + ":1"}
    prose = kept["prose:" + str(tmp_path / "p.jsonl") + ":1"]
    assert prose["text"] == unicodedata.normalize("NFC", nfd) != nfd
    assert prose["lang"] == "en"
    assert counts["dropped"] == {"dup_line_frac": 1}


def test_threads_give_the_same_shards(tmp_path):
    raw = make_raw(tmp_path, [{"type": "embedded", "max_docs": 60}, {"type": "embedded", "name": "c", "parts": ["python_stdlib"], "max_docs": 40}], shards=4)
    one, out1 = run_clean(tmp_path, raw, threads=1, name="one")
    two, out2 = run_clean(tmp_path, raw, threads=2, name="two")
    assert one == two
    for p in sorted(out1.glob("*.parquet")):
        assert pq.read_table(p).equals(pq.read_table(out2 / p.name))


def test_every_document_dropped_is_an_error(tmp_path):
    raw = make_raw(tmp_path, [{"type": "jsonl", "path": write_jsonl(tmp_path / "s.jsonl", [{"text": "tiny"}, {"text": PROSE}])}])
    settings = copy.deepcopy(DEFAULTS)
    settings["lang"]["keep"] = ["fr"]
    with pytest.raises(UserError, match=r"^every document was dropped by cleaning \((too_short: 1, lang: 1|lang: 1, too_short: 1)\); loosen data\.clean settings$"):
        run_clean(tmp_path, raw, settings)
