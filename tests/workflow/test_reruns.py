"""Snakemake's own rerun triggers agree with the keys, attacked as a user would.

A corpus of local JSON Lines files is built up to ``shards`` once; then the source files are
touched, moved and copied, and the project itself is copied to another folder: each time
`snakemake -n` must say "Nothing to be done". An edited file, an appended one or a new source
plans its own parts and the global steps after them (tests the parts' keys). Settings written in another key order and number notation, and which settings
plan which stages, are tests/workflow/test_workflow.py's test_snakemake_n_agrees_with_the_keys.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SNAKEMAKE, copy_checkout, jobs_of_dry_run, smoke_config

pytestmark = pytest.mark.e2e

LMBUILD = Path(sys.executable).parent / "lmbuild"
TARGET = "shards"  # every data stage and the tokenizer; training is covered by test_workflow


def write_corpus(folder: Path) -> None:
    """Real text, a few files: the standard library's modules as JSON Lines."""
    import json as _json  # noqa: F401 (its source is one of the documents)

    stdlib = Path(os.__file__).parent
    files = sorted(stdlib.glob("*.py"))[:60]
    folder.mkdir(parents=True)
    for i in range(3):
        with open(folder / f"part-{i}.jsonl", "w") as f:
            for p in files[i::3]:
                f.write(json.dumps({"body": p.read_text(errors="replace"), "uid": p.name}) + "\n")


def config(source_glob: str, artifacts: str = "artifacts") -> dict:
    cfg = smoke_config()
    cfg["artifacts"] = artifacts
    cfg["data"]["sources"] = [{"type": "jsonl", "path": source_glob, "text_field": "body", "id_field": "uid", "kind": "code"}]
    cfg["data"]["files_per_job"] = 1  # raw fanned out: a job per file, and so 3 shards and 3 cleaning jobs
    return cfg


def run(workdir: Path, cfg_text: str, *args: str, snakefile: Path = ROOT / "Snakefile") -> subprocess.CompletedProcess:
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(cfg_text)
    cmd = [str(SNAKEMAKE), "--snakefile", str(snakefile), "--directory", str(workdir), "--cores", "2", *args, "--configfile", str(cfg_path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("reruns")
    write_corpus(work / "corpus")
    proc = run(work, yaml.safe_dump(config("corpus/*.jsonl")), TARGET)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return work


def nothing_to_do(proc: subprocess.CompletedProcess) -> None:
    assert jobs_of_dry_run(proc) == {}, (proc.stdout + proc.stderr)[-3000:]


def test_touched_and_moved_sources_plan_nothing(built):
    for f in (built / "corpus").iterdir():
        os.utime(f, (1, 1))  # as cp or rsync without -t would leave them
    nothing_to_do(run(built, yaml.safe_dump(config("corpus/*.jsonl")), TARGET, "-n"))
    shutil.move(built / "corpus", built / "moved")
    try:
        nothing_to_do(run(built, yaml.safe_dump(config(str(built / "moved" / "*.jsonl"))), TARGET, "-n"))
        shutil.copytree(built / "moved", built / "copied")  # new inodes, new mtimes: hashed again
        nothing_to_do(run(built, yaml.safe_dump(config("copied/*.jsonl")), TARGET, "-n"))
    finally:
        shutil.rmtree(built / "copied", ignore_errors=True)
        shutil.move(built / "moved", built / "corpus")


def test_a_copy_of_the_project_elsewhere_reuses_the_store(built, tmp_path):
    """The checkout copied to another folder, run from a new working directory whose config
    points at the first one's artifacts (a lab's shared store): nothing to build."""
    clone = copy_checkout(tmp_path / "clone")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(built / "corpus", work / "corpus")
    cfg = config("corpus/*.jsonl", artifacts=str(built / "artifacts"))
    nothing_to_do(run(work, yaml.safe_dump(cfg), TARGET, "-n", snakefile=clone / "Snakefile"))


def test_an_edited_source_file_rebuilds_its_part_and_what_reads_the_whole(built):
    """Only the edited file's raw part, its cleaning part and its dedup map run again; the
    global steps after (dedup's buckets and gather, the BPE tokenizer trained on the corpus,
    and so every shards part) rerun as they must."""
    f = built / "corpus" / "part-0.jsonl"
    original = f.read_bytes()
    try:
        f.write_bytes(original.replace(b'"uid": "', b'"uid": "x', 1))
        jobs = jobs_of_dry_run(run(built, yaml.safe_dump(config("corpus/*.jsonl")), TARGET, "-n"))
        assert jobs == ONE_PART
    finally:
        f.write_bytes(original)
    nothing_to_do(run(built, yaml.safe_dump(config("corpus/*.jsonl")), TARGET, "-n"))


# One raw part changed: its raw, cleaning and dedup map parts; the gathers and what reads the whole.
ONE_PART = {
    "build_raw_part": 1, "build_raw": 1, "build_cleaned_part": 1, "build_cleaned": 1, "dedup_map": 1, "dedup_bucket": 2,
    "build_deduplicated": 1, "build_tokenizer": 1, "build_shards_part": 3, "build_shards": 1, "shards": 1,
}  # fmt: skip


def test_an_appended_file_and_a_new_source_run_only_their_parts(built):
    """A file that sorts last joins the open group (files_per_job 1: a group of its own); a
    second source is groups of its own: the first source's parts are all reused."""
    extra = built / "corpus" / "part-3.jsonl"
    extra.write_text(json.dumps({"body": "def appended():\n    return 'one more file'\n", "uid": "appended.py"}) + "\n")
    try:
        jobs = jobs_of_dry_run(run(built, yaml.safe_dump(config("corpus/*.jsonl")), TARGET, "-n"))
        assert jobs == {**ONE_PART, "build_shards_part": 4}
    finally:
        extra.unlink()
    cfg = config("corpus/*.jsonl")
    cfg["data"]["sources"].append({"type": "embedded", "name": "plays", "parts": ["shakespeare"], "max_docs": 4})
    assert jobs_of_dry_run(run(built, yaml.safe_dump(cfg), TARGET, "-n")) == {**ONE_PART, "build_shards_part": 4}
    nothing_to_do(run(built, yaml.safe_dump(config("corpus/*.jsonl")), TARGET, "-n"))


def test_the_fan_out_follows_the_files(built):
    """files_per_job 1 over 3 files: 3 raw parts of data.shards (1) shard each, 3 cleaning jobs.
    files_per_job is part of raw's key, not of a part's: 2 files per job makes one new part
    (part-0 and part-1) and keeps part-2's, which has the same files."""
    raw = json.loads(next((built / "artifacts" / "raw").glob("*/manifest.json")).read_text())
    assert raw["counts"]["jobs"] == 3 and len(raw["counts"]["shards"]) == 3 and raw["parts_peak_rss_mb"]["self"] > 0
    assert len(raw["counts"]["part_keys"]) == 3 and all((built / "artifacts" / "_parts" / "raw" / k / "manifest.json").is_file() for k in raw["counts"]["part_keys"])
    cleaned = json.loads(next((built / "artifacts" / "cleaned").glob("*/manifest.json")).read_text())
    assert [s["shard"] for s in cleaned["counts"]["shards"]] == [f"shard-{i:05d}.parquet" for i in range(3)]
    cfg = config("corpus/*.jsonl")
    cfg["data"]["files_per_job"] = 2
    jobs = jobs_of_dry_run(run(built, yaml.safe_dump(cfg), TARGET, "-n"))
    assert jobs == {**ONE_PART, "build_shards_part": 2}


def test_the_job_reads_where_the_files_are_now_and_names_them_by_content(built):
    """The raw manifest: the key's settings name files by content; `located` says where they were read."""
    raw = next(p for p in (built / "artifacts" / "raw").iterdir() if not p.name.startswith("."))
    manifest = json.loads((raw / "manifest.json").read_text())
    src = manifest["key_settings"]["sources"][0]
    assert src["path"]["pattern"] == "*.jsonl"
    assert [name for name, _ in src["path"]["files"]] == ["part-0.jsonl", "part-1.jsonl", "part-2.jsonl"]
    assert manifest["located"] == [[["sources", 0], "path", "corpus/*.jsonl"]]
    assert manifest["settings"]["sources"][0]["path"] == "corpus/*.jsonl"


# ----------------------------------------------------------------- copies stay built, and why


def manifests(workdir: Path, stages) -> dict[Path, tuple[int, int]]:
    """Each artifact's manifest -> (inode, mtime): what a rebuild would change."""
    out = {}
    for stage in stages:
        for m in (workdir / "artifacts" / stage).glob("*/manifest.json"):
            out[m] = (m.stat().st_ino, m.stat().st_mtime_ns)
    return out


def upstream_newest(workdir: Path) -> None:
    """The worst order a copy can leave: every raw file newer than everything downstream."""
    later = time.time() + 60
    for p in (workdir / "artifacts" / "raw").rglob("*"):
        os.utime(p, (later, later))


@pytest.mark.parametrize("how", ["cp", "rsync"])
def test_a_copy_of_a_built_project_plans_nothing(built, tmp_path, how):
    """`cp -r` (a backup restore) or `rsync -r` without -t of the whole working directory, its
    artifacts and .snakemake included: new modification times everywhere, nothing planned."""
    copy = tmp_path / "copy"
    if how == "cp":
        subprocess.run(["cp", "-r", str(built), str(copy)], check=True)
    else:
        if shutil.which("rsync") is None:
            pytest.skip("rsync is not installed (Debian package rsync; .ci/run installs it)")
        subprocess.run(["rsync", "-r", f"{built}/", str(copy)], check=True)
    upstream_newest(copy)
    cfg = yaml.safe_dump(config("corpus/*.jsonl"))
    nothing_to_do(run(copy, cfg, TARGET, "-n"))
    assert why(copy, TARGET).startswith(f"nothing to do: {TARGET} is built")


def test_a_clone_with_the_artifacts_copied_beside_it_plans_nothing(built, tmp_path):
    """A fresh checkout (no .snakemake of its own) with the built artifacts and the corpus copied
    into it, as a colleague would take over a project: nothing planned."""
    clone = copy_checkout(tmp_path / "clone")
    subprocess.run(["cp", "-r", str(built / "artifacts"), str(built / "corpus"), str(clone)], check=True)
    upstream_newest(clone)
    nothing_to_do(run(clone, yaml.safe_dump(config("corpus/*.jsonl")), TARGET, "-n", snakefile=clone / "Snakefile"))


def test_a_rebuilt_upstream_artifact_replaces_nothing_downstream(built):
    """raw deleted and rebuilt (new files, new mtimes): every complete artifact after it stays
    as it is; Snakemake plans raw alone, and nothing afterwards."""
    raw = next(p for p in (built / "artifacts" / "raw").iterdir() if not p.name.startswith("."))
    before = json.loads((raw / "manifest.json").read_text())["files"]
    downstream = manifests(built, ("cleaned", "deduplicated", "tokenizer", "shards"))
    shutil.rmtree(raw)
    cfg = yaml.safe_dump(config("corpus/*.jsonl"))
    # Its parts are store entries of their own: the gather alone, linking them again.
    assert jobs_of_dry_run(run(built, cfg, "raw", TARGET, "-n")) == {"build_raw": 1, "raw": 1}
    proc = run(built, cfg, "raw", TARGET)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert json.loads((raw / "manifest.json").read_text())["files"] == before  # the same bytes, at the same key
    assert manifests(built, ("cleaned", "deduplicated", "tokenizer", "shards")) == downstream
    nothing_to_do(run(built, cfg, TARGET, "-n"))


def why(workdir: Path, *targets: str) -> str:
    proc = subprocess.run([str(LMBUILD), "why", *targets, "--configfile", str(workdir / "config.yaml"), "--directory", str(workdir)], capture_output=True, text=True, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# A rule's jobs -> the stage whose artifact they make.
RULE_STAGE = {"build_raw_part": "raw", "build_synthetic_part": "raw", "build_cleaned_part": "cleaned", "dedup_map": "deduplicated", "dedup_bucket": "deduplicated", "build_shards_part": "shards"}


def planned_stages(jobs: dict) -> set[str]:
    return {RULE_STAGE.get(rule, rule.removeprefix("build_")) for rule in jobs if rule.startswith(("build_", "dedup_"))}


def test_why_names_what_snakemake_plans_and_why(built):
    cfg = config("corpus/*.jsonl")
    cfg["data"]["dedup"]["method"] = "minhash"
    cfg["pack"]["seq_len"] = 32
    jobs = jobs_of_dry_run(run(built, yaml.safe_dump(cfg), TARGET, "-n"))
    text = why(built, TARGET)
    said = {line.split()[0] for line in text.splitlines() if line and not line.startswith((" ", "nothing")) and "would be built" not in line}
    assert said == planned_stages(jobs) == {"deduplicated", "tokenizer", "shards"}
    assert "setting data.dedup.method: exact -> minhash" in text
    assert "setting pack.seq_len: 64 -> 32" in text
    assert re.search(r"input deduplicated: [0-9a-f]{16} -> [0-9a-f]{16}", text)
    # A source file edited: raw's settings name it.
    f = built / "corpus" / "part-1.jsonl"
    original = f.read_bytes()
    try:
        f.write_bytes(original + b'{"body": "one more document", "uid": "new"}\n')
        run(built, yaml.safe_dump(config("corpus/*.jsonl")), TARGET, "-n")  # the config why reads
        text = why(built, TARGET)
        assert "setting data.sources[0].path: file changed: part-1.jsonl" in text, text
    finally:
        f.write_bytes(original)


# ----------------------------------------------------------------- appends: reuse and the same bytes


def data_files(workdir: Path) -> dict[str, dict]:
    """stage/key -> each file's sha256, for every data artifact (timings are in manifests only)."""
    out = {}
    for stage in ("raw", "cleaned", "deduplicated", "shards"):
        for m in (workdir / "artifacts" / stage).glob("*/manifest.json"):
            out[f"{stage}/{m.parent.name}"] = {f: e["sha256"] for f, e in json.loads(m.read_text())["files"].items()}
    return out


def test_an_appended_build_reuses_its_parts_and_equals_one_from_scratch(built, tmp_path):
    """With a tokenizer that the corpus does not train (a pretrained folder), a file appended to
    the first of two sources runs its own raw, cleaning and map parts and tokenizes only the new
    shard: the second source's shard moves up one number and is reused under its new name, by
    dedup (its survivors) and by the shards stage (its token files). Every file of raw, cleaned,
    deduplicated and shards equals a build from scratch of the same files, at the same keys."""
    tok = built / "tok"
    shutil.copytree(next(p for p in (built / "artifacts" / "tokenizer").iterdir() if not p.name.startswith(".")), tok)
    cfg = config("corpus/*.jsonl")
    cfg["data"]["sources"].append({"type": "jsonl", "path": "second/*.jsonl", "text_field": "body", "id_field": "uid", "kind": "code", "name": "second"})
    cfg["tokenizer"] = {"type": "pretrained", "path": "tok"}
    extra = built / "corpus" / "part-3.jsonl"
    stdlib = sorted(Path(os.__file__).parent.glob("*.py"))
    (built / "second").mkdir()
    (built / "second" / "b.jsonl").write_text("".join(json.dumps({"body": p.read_text(errors="replace"), "uid": p.name}) + "\n" for p in stdlib[80:90]))
    try:
        assert run(built, yaml.safe_dump(cfg), TARGET).returncode == 0
        extra.write_text("".join(json.dumps({"body": p.read_text(errors="replace"), "uid": p.name}) + "\n" for p in stdlib[60:72]))
        jobs = jobs_of_dry_run(run(built, yaml.safe_dump(cfg), TARGET, "-n"))
        assert jobs == {"build_raw_part": 1, "build_raw": 1, "build_cleaned_part": 1, "build_cleaned": 1, "dedup_map": 1, "dedup_bucket": 2,
                        "build_deduplicated": 1, "build_shards_part": 5, "build_shards": 1, "shards": 1}  # fmt: skip
        proc = run(built, yaml.safe_dump(cfg), TARGET)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        for folder in ("corpus", "second", "tok"):
            shutil.copytree(built / folder, fresh / folder)
        proc = run(fresh, yaml.safe_dump(cfg), TARGET)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        ours, theirs = data_files(built), data_files(fresh)
        assert theirs and all(ours[k] == v for k, v in theirs.items()), [k for k, v in theirs.items() if ours.get(k) != v]
        # The appended build: 4 of its 5 output shards and shards parts reused, the second
        # source's under a new name (shard-00003 -> shard-00004); only the new file's are new.
        key = {k.split("/")[0]: k.split("/")[1] for k in theirs}
        dedup = json.loads((built / "artifacts" / "deduplicated" / key["deduplicated"] / "manifest.json").read_text())["counts"]
        assert (dedup["shards"], dedup["shards_reused"]) == (5, 4)
        counts = json.loads((built / "artifacts" / "shards" / key["shards"] / "manifest.json").read_text())["counts"]
        assert (counts["parts"], counts["parts_reused"]) == (5, 4)
        index = json.loads((built / "artifacts" / "shards" / key["shards"] / "index.json").read_text())
        assert {e["path"].split(".")[0] for e in index["files"] if e["source"] == "second"} == {"tokens/shard-00004"}
    finally:
        extra.unlink(missing_ok=True)
        shutil.rmtree(built / "second")
    nothing_to_do(run(built, yaml.safe_dump(config("corpus/*.jsonl")), TARGET, "-n"))
