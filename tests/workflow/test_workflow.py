"""The Snakemake workflow end to end on tests/smoke.yaml: every artifact, reruns, bad input.

These run `snakemake` as a user would (a subprocess, a fresh working directory).
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from bad_files import corrupt_parquet
from conftest import ROOT, SMOKE_STAGES as STAGES, SNAKEMAKE, artifact_dirs, copy_built, copy_checkout, jobs_of_dry_run, reordered, smoke_config, snakemake

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def built(smoke_built, tmp_path_factory) -> Path:
    """This module's copy of the session's smoke build (conftest.smoke_built), which it changes."""
    return copy_built(smoke_built, tmp_path_factory.mktemp("smoke"))


def only(workdir: Path, stage: str) -> Path:
    dirs = artifact_dirs(workdir, stage)
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_every_artifact_is_complete_with_lineage(built):
    for stage in STAGES:
        art = only(built, stage)
        m = json.loads((art / "manifest.json").read_text())
        assert m["stage"] == stage and m["key"] == art.name
        assert m["code_hash"] and m["code_files"]
        assert m["peak_rss_mb"]["self"] > 0 and m["cpu_seconds"]["self"] > 0  # the job's own (lmbuild.store.runner)
        for name, inp in m["inputs"].items():
            assert (built / inp["path"] / "manifest.json").is_file(), (stage, name)
            assert Path(inp["path"]).name == inp["key"]
    assert not list((built / "artifacts").glob("*/.tmp-*"))


def test_raw_and_cleaned_shards(built):
    raw = only(built, "raw")
    shards = sorted(raw.glob("shard-*.parquet"))
    assert len(shards) == 2
    assert set(pq.read_schema(shards[0]).names) >= {"id", "text", "source", "metadata"}
    m = json.loads((only(built, "cleaned") / "manifest.json").read_text())
    c = m["counts"]
    assert c["documents_out"] > 0
    assert c["documents_in"] == c["documents_out"] + sum(c["dropped"].values())
    assert [s["shard"] for s in c["shards"]] == ["shard-00000.parquet", "shard-00001.parquet"]
    cleaned = only(built, "cleaned")
    assert sorted(p.name for p in (cleaned / "dropped").glob("*.parquet")) == ["shard-00000.parquet", "shard-00001.parquet"]
    assert {"lang", "lang_score"} <= set(pq.read_schema(cleaned / "shard-00000.parquet").names)
    # The fan-out parts are temporary: gone once the gather has linked them in.
    assert not list((built / "artifacts" / "_parts" / "cleaned").glob("*/[0-9]*"))
    assert not list((built / "artifacts" / "_parts" / "raw").glob("*/[0-9]*"))
    assert json.loads((raw / "manifest.json").read_text())["parts_peak_rss_mb"]["self"] > 0  # the part jobs' peak


def test_deduplicated_ran_as_map_reduce_jobs(built):
    """smoke.yaml asks for 2 buckets: a map per cleaned part (2, keyed parts that stay, listed in
    part_keys with the 2 output shards' addresses) + 2 bucket jobs, whose temp outputs are gone."""
    art = only(built, "deduplicated")
    c = json.loads((art / "manifest.json").read_text())["counts"]
    assert c["buckets"] == 2 and c["documents_in"] == c["documents_out"] + sum(c["dropped"].values())
    assert [p.name for p in sorted(art.glob("shard-*.parquet"))] == [p.name for p in sorted(only(built, "cleaned").glob("shard-*.parquet"))]
    assert (art / "dropped.parquet").is_file()
    parts = {k: json.loads((built / "artifacts" / "_parts" / "deduplicated" / k / "manifest.json").read_text()) for k in c["part_keys"]}
    maps = [k for k, m in parts.items() if m["stage"] != "deduplicated_shard"]
    assert len(parts) == 4 and len(maps) == 2  # + the 2 output shards' addresses (lmbuild.data.survivors)
    assert not list((built / "artifacts" / "_parts" / "deduplicated").glob("*/bucket-*"))
    assert len(list((built / "logs" / "deduplicated" / art.name).glob("*.log"))) == 2
    assert all((built / "logs" / "deduplicated" / "maps" / f"{k}.log").is_file() for k in maps)


def test_tokenizer_round_trips(built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(only(built, "tokenizer"))
    text = "def main():\n    print('Héllo, wörld!')  # ok\n\nROMEO: But soft!"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.eos_token_id is not None


def test_shards_have_the_right_shape(built):
    art = only(built, "shards")
    meta = json.loads((art / "meta.json").read_text())
    assert meta["seq_len"] == 64
    index = json.loads((art / "index.json").read_text())
    # One pack job per deduplicated shard (smoke: 2), each source packed apart.
    assert [s["shard"] for s in index["shards"]] == ["shard-00000.parquet", "shard-00001.parquet"]
    assert set(index["sources"]) == {"shakespeare", "stdlib"} and index["tokenizer"] == only(built, "tokenizer").name
    for split in ("train", "val"):
        files = [np.memmap(art / e["path"], dtype=meta["dtype"], mode="r") for e in index["files"] if e["split"] == split and e["blocks"]]
        blocks = np.concatenate(files).reshape(-1, 64)
        assert blocks.shape[0] == meta[f"{split}_blocks"] > 0
        assert blocks.max() < meta["vocab_size"]
        if split == "train":
            assert (blocks == meta["eos_token_id"]).any()
    docs = (art / "val_docs.jsonl").read_text().splitlines()
    assert len(docs) == meta["val_documents"] > 0


def test_trained_model_loads_generates_and_learned(built):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    art = only(built, "trained_checkpoint")
    model = AutoModelForCausalLM.from_pretrained(art)
    tok = AutoTokenizer.from_pretrained(art)
    ids = tok("def ", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 8
    counts = json.loads((art / "manifest.json").read_text())["counts"]
    assert counts["final_val_loss"] < counts["initial_val_loss"]
    with open(art / "loss_curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"step", "tokens", "train_loss", "val_loss", "learning_rate"} <= set(rows[0])
    init = json.loads((only(built, "init_checkpoint") / "manifest.json").read_text())["counts"]
    assert init["parameters"] == sum(p.numel() for p in model.parameters())


def test_report_holds_the_metrics(built):
    from lmbuild.evaluation.report import load

    art = only(built, "eval_report")
    report = load(art / "report.json")  # in lmbuild/schemas/report.schema.json
    text = json.dumps(report)
    assert "perplexity" in text
    trained = report["checkpoints"][1]
    assert len(trained["generations"]) == 3
    html = (only(built, "report") / "report.html").read_text()
    assert "<svg" in html and 'id="lineage"' in html and "Against tokens seen" in html
    # The Data section: the cleaned and shards statistics; the data card beside the shards.
    assert 'id="data-statistics"' in html and "chars per document (cleaned)" in html and "tokens per document (shards)" in html
    card = (only(built, "shards") / "data_card.md").read_text()
    assert card.startswith("# Data card: shards ") and "- **cleaned** `" in card
    assert json.loads((only(built, "report") / "manifest.json").read_text())["inputs"]["eval_report"]["key"] == art.name
    assert [c["label"] for c in report["checkpoints"]] == ["init_checkpoint", "trained_checkpoint"]
    # Every number in the report is a real, finite measurement.
    def numbers(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from numbers(v)
        elif isinstance(x, list):
            for v in x:
                yield from numbers(v)
        elif isinstance(x, float):
            yield x

    assert all(math.isfinite(v) for v in numbers(trained["metrics"]))


def test_snakemake_report_bundles_the_page(built, tmp_path):
    """`snakemake --report x.zip` includes the report artifact with report.html as its index."""
    import zipfile

    out = tmp_path / "snakemake-report.zip"
    proc = snakemake(built, smoke_config(), "--report", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    names = zipfile.ZipFile(out).namelist()
    pages = [n for n in names if n.endswith("/report.html") and "/data/" in n]  # not Snakemake's own index
    assert pages, names[:50]
    assert zipfile.ZipFile(out).read(pages[0]) == (only(built, "report") / "report.html").read_bytes()


# Settings and the stages whose keys they change. The plan says so in process for each;
# `snakemake -n` is asked for two of them (an evaluation and a cleaning setting): it plans a job
# where an output's key is not on disk, whatever the setting that changed it.
TRAINING_ON = {"trained_checkpoint", "eval_report", "report"}
KEYED = [
    ({"train.learning_rate": 0.001}, TRAINING_ON),
    ({"train.kernels": "torch"}, TRAINING_ON),  # auto resolves to torch here, but the key follows the setting
    ({"train.compile_mode": "max-autotune"}, TRAINING_ON),
    ({"train.lr_scheduler": "wsd", "train.decay_steps": 5}, TRAINING_ON),
    # smoke.yaml trains with the cosine schedule: decay_steps and decay_fraction shape only wsd's
    # decay, so they key nothing (they used to retrain to identical weights).
    ({"train.decay_steps": 5, "train.decay_fraction": 0.3}, set()),
    # data.mixture is applied when training samples blocks: nothing is re-cleaned or re-tokenized.
    ({"data.mixture": {"shakespeare": {"weight": 2}, "stdlib": {"weight": 1}}}, TRAINING_ON),
    ({"eval.dtype": "bfloat16"}, {"eval_report", "report"}),
    ({"pack.val_fraction": 0.1}, {"shards"} | TRAINING_ON),
    ({"data.clean.min_chars": 150}, set(STAGES) - {"raw"}),
    ({"data.dedup.paragraphs": True}, set(STAGES) - {"raw", "cleaned"}),
    # Paragraph dedup off: its threshold keys nothing; nor does opting out a task not evaluated.
    ({"data.dedup.edited_min_words": 10, "data.dedup.decontaminate.skip_tasks": ["piqa"]}, set()),
]
# A rule's jobs -> the stage whose artifact they make.
RULE_STAGE = {"build_raw_part": "raw", "build_synthetic_part": "raw", "build_cleaned_part": "cleaned", "dedup_map": "deduplicated", "dedup_bucket": "deduplicated", "build_shards_part": "shards"}


def chain_keys(cfg: dict) -> dict:
    from lmbuild.build.config import validate
    from lmbuild.build.graph import Plan

    return {s: a.key for s, a in Plan(validate(cfg)).artifacts.items() if s in STAGES}


def planned_stages(jobs: dict) -> set[str]:
    return {RULE_STAGE.get(rule, rule.removeprefix("build_")) for rule in jobs if rule != "all"}


def renotated(text: str) -> str:
    """Numbers in other notations: 0.003 -> 3.0e-03, 40 -> 4e1 (a string to YAML), 0.05 -> 5.0e-02, 64 -> 6.4e+1."""
    for pattern, new in [(r"learning_rate: 0\.003\b", "learning_rate: 3.0e-03"), (r"max_steps: 40\b", "max_steps: 4e1"),
                         (r"val_fraction: 0\.05\b", "val_fraction: 5.0e-02"), (r"seq_len: 64\b", "seq_len: 6.4e+1")]:
        text, n = re.subn(pattern, new, text)
        assert n == 1, (pattern, text)
    return text


def test_snakemake_n_agrees_with_the_keys(built):
    """The plan's keys are the built artifacts' folders; each setting of KEYED changes exactly its
    stages' keys; and `snakemake -n` plans exactly the jobs of the stages whose keys changed:
    nothing for the same config, nothing for the same settings written otherwise (every mapping
    reversed, numbers renotated, wsd-only settings on a cosine run), the evaluation and page for
    an evaluation setting, and cleaning onward (a job per raw shard, not raw) for a cleaning one.
    tests/build/test_plan.py states more keys in process; tests/workflow/test_reruns.py attacks Snakemake's own
    rerun triggers (touched, moved, copied files)."""
    base = chain_keys(smoke_config())
    assert base == {s: only(built, s).name for s in STAGES}
    for overrides, stages in KEYED:
        keys = chain_keys(smoke_config(**overrides))
        assert {s for s in STAGES if keys[s] != base[s]} == stages, overrides
    assert jobs_of_dry_run(snakemake(built, smoke_config(), "-n")) == {}

    # The same settings written otherwise: its text differs, not its keys.
    same = smoke_config(**{"train.decay_steps": 5, "train.decay_fraction": 0.3})
    text = renotated(yaml.safe_dump(reordered(same), sort_keys=False))
    assert chain_keys(yaml.safe_load(text)) == base
    cfg_path = built / "reordered.yaml"
    cfg_path.write_text(text)
    cmd = [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(built), "--cores", "2", "-n", "--configfile", str(cfg_path)]
    assert jobs_of_dry_run(subprocess.run(cmd, capture_output=True, text=True, timeout=300)) == {}

    # smoke.yaml: 2 raw shards, so 2 cleaning jobs and a gather; 2 dedup maps and buckets; 2 pack jobs.
    cleaning = {f"build_{s}": 1 for s in STAGES if s != "raw"} | {"build_cleaned_part": 2, "dedup_map": 2, "dedup_bucket": 2, "build_shards_part": 2, "all": 1}
    # A URL blocklist enters cleaning's key by its content (tests/build/test_plan.py states more).
    (built / "blocklist.txt").write_text("spam.example\n")
    blocklist = {"data.clean.url.blocklist": [str(built / "blocklist.txt")]}
    dedup = {k: v for k, v in cleaning.items() if k not in ("build_cleaned", "build_cleaned_part")}
    for overrides, expected in [({"eval.dtype": "bfloat16"}, {"build_eval_report": 1, "build_report": 1, "all": 1}), ({"data.clean.min_chars": 150}, cleaning),
                                (blocklist, cleaning), ({"data.dedup.paragraphs": True}, dedup)]:
        jobs = jobs_of_dry_run(snakemake(built, smoke_config(**overrides), "-n"))
        assert jobs == expected, overrides
        assert planned_stages(jobs) == {s for s, k in chain_keys(smoke_config(**overrides)).items() if k != base[s]}


def test_a_deleted_model_is_planned_and_nothing_after_it(built, tmp_path):
    """`rm -rf` of the trained checkpoint (as verify advises for a damaged one): the default
    target holds the model itself, so plain `snakemake` plans its training again, and not the
    evaluation and page built from it. (A rebuilt artifact is the same bytes at the same key:
    tests/workflow/test_faults.py; what was built after it stays: tests/workflow/test_reruns.py.)"""
    ckpt = only(built, "trained_checkpoint")
    shutil.move(ckpt, tmp_path / "aside")  # put back below, as it was: this module's other tests read it
    try:
        assert jobs_of_dry_run(snakemake(built, smoke_config(), "-n")) == {"build_trained_checkpoint": 1, "all": 1}
    finally:
        shutil.move(tmp_path / "aside", ckpt)
    assert jobs_of_dry_run(snakemake(built, smoke_config(), "-n")) == {}


def test_an_edit_of_the_page_re_renders_and_evaluates_nothing(built, tmp_path):
    """The checkout copied and its page template (CSS) edited: `snakemake -n` over the same
    artifacts plans the report alone; the copy unedited plans nothing. Then the edited page is
    built, beside the first (another key), and the evaluation is the same artifact."""
    clone = copy_checkout(tmp_path / "clone")
    cfg = smoke_config()
    run = lambda *args: snakemake(built, cfg, *args, snakefile=clone / "Snakefile")  # noqa: E731
    assert jobs_of_dry_run(run("-n")) == {}
    template = clone / "lmbuild" / "evaluation" / "templates" / "report.html.j2"
    template.write_text(template.read_text().replace("h1{font-size:1.6rem;", "h1{font-size:1.8rem;"))
    assert jobs_of_dry_run(run("-n")) == {"build_report": 1, "all": 1}
    proc = run()
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    pages = artifact_dirs(built, "report")
    assert len(pages) == 2 and len(artifact_dirs(built, "eval_report")) == 1
    assert sum("h1{font-size:1.8rem;" in (p / "report.html").read_text() for p in pages) == 1
    assert jobs_of_dry_run(snakemake(built, cfg, "-n")) == {}  # the original checkout: its page is still there


def test_cleaning_fans_out_one_job_per_shard(tmp_path):
    # data.shards per raw part: smoke.yaml's 2 sources are 2 parts of 500 shards each.
    jobs = jobs_of_dry_run(snakemake(tmp_path, smoke_config(**{"data.shards": 500}), "-n", "cleaned"))
    assert jobs == {"build_raw_part": 2, "build_raw": 1, "build_cleaned_part": 1000, "build_cleaned": 1, "cleaned": 1}


# --- bad input: a clear one-line error, a non-zero exit, and no artifact -----------------


def bad_source_run(tmp_path: Path, content: bytes, target: str = "raw", **overrides):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "docs.jsonl").write_bytes(content)
    cfg = smoke_config(**{"data.sources": [{"type": "jsonl", "path": "data/*.jsonl"}], **overrides})
    return snakemake(tmp_path, cfg, target)


def assert_failed_cleanly(proc, tmp_path: Path, stage: str, pattern: str):
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    lines = [l for l in out.splitlines() if l.startswith("error: ")]
    assert lines and re.search(pattern, lines[0]), out[-3000:]
    assert not artifact_dirs(tmp_path, stage)
    assert not list(tmp_path.glob(f"artifacts/{stage}/.tmp-*"))  # no half-written folder left behind


GOOD_LINE = json.dumps({"text": "A reasonably long English sentence about nothing in particular. " * 8})


def test_malformed_jsonl_line(tmp_path):
    content = f"{GOOD_LINE}\n{GOOD_LINE}\n{{not json\n".encode()
    proc = bad_source_run(tmp_path, content)
    assert_failed_cleanly(proc, tmp_path, "raw", r"docs\.jsonl:3: invalid JSON")


def test_invalid_utf8(tmp_path):
    content = f"{GOOD_LINE}\n".encode() + b'{"text": "caf\xe9 au lait"}\n'
    proc = bad_source_run(tmp_path, content)
    assert_failed_cleanly(proc, tmp_path, "raw", r"docs\.jsonl:2: invalid UTF-8")


def test_empty_source(tmp_path):
    proc = bad_source_run(tmp_path, b"")
    assert_failed_cleanly(proc, tmp_path, "raw", r"data\.sources\[0\].*no documents")


def test_every_document_filtered_out(tmp_path):
    proc = bad_source_run(tmp_path, f"{GOOD_LINE}\n{GOOD_LINE}\n".encode(), "cleaned", **{"data.clean.min_chars": 100000})
    assert_failed_cleanly(proc, tmp_path, "cleaned", r"every document was dropped")
    assert len(artifact_dirs(tmp_path, "raw")) == 1  # what was complete is kept


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.learning_rate": float("nan")}, "error: config: train.learning_rate: nan is not a finite number"),
        ({"artifacts": ""}, "error: config: artifacts: must be a folder name"),
    ],
)
def test_nonsense_config_values(tmp_path, overrides, message):
    """YAML's .nan ended in a JSON traceback; artifacts: "" planned outputs at /."""
    proc = snakemake(tmp_path, smoke_config(**overrides), "raw")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in out, out[-3000:]
    assert not (tmp_path / "artifacts").exists()


def test_corrupt_parquet_pages(tmp_path):
    (tmp_path / "data").mkdir()
    corrupt_parquet(tmp_path / "data" / "c.parquet", 2)
    cfg = smoke_config(**{"data.sources": [{"type": "parquet", "path": "data/*.parquet"}]})
    proc = snakemake(tmp_path, cfg, "raw")
    assert_failed_cleanly(proc, tmp_path, "raw", r"error: raw: data/c\.parquet: row group 2 \(rows 2000-2999\): cannot decode")


def test_unknown_config_key(tmp_path):
    proc = snakemake(tmp_path, smoke_config(**{"train.learning_rat": 0.1}), "raw")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "error: config: train.learning_rat: unknown key" in out
    assert not (tmp_path / "artifacts").exists()
