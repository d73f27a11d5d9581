"""Stage ``quality_model``: a fastText quality classifier trained from configured sources,
DCLM's recipe (Li et al. 2024, "DataComp-LM", section 4.4: a fastText bigram classifier
with high-quality reference text as positives and raw crawl text as negatives); and the
scoring that the ``cleaned`` stage runs with it (``data.clean.quality``).

Layout of the artifact::

    model.bin          the fastText supervised model (fastText's own binary format)
    classifier.json    how to prepare a text for it (max_chars, lowercase) and its labels
    manifest.json      counts: documents per class and split, validation precision/recall

Each document becomes one line: its first ``max_chars`` characters, whitespace collapsed to
single spaces (fastText reads a line per example), lowercased by default. Documents are held
out for validation by a hash of their id (``valid_fraction``), so adding documents does not
move others between splits. Training runs on one thread: fastText's multi-threaded SGD
(Hogwild) gives a different model every run, and one thread is fast at this size. The
validation figures are for the positive class at a probability of 0.5.

What it does not do: balance the classes (the counts are in the manifest), pick
hyper-parameters, stream (the prepared lines are held in memory, to shuffle them), or read
a pretrained classifier (DCLM's own is hub-only). Training diverges (fastText's "Encountered
NaN", reported as a config error) on tiny or near-duplicate data and with very small
``bucket`` values: seen on 120 near-identical lines with ``bucket`` 1,000, not 20,000.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from lmbuild.data.sources import iter_source
from lmbuild.errors import UserError
from lmbuild.runner import StageContext

log = logging.getLogger(__name__)

POSITIVE, NEGATIVE = "__label__hq", "__label__lq"
MODEL, META = "model.bin", "classifier.json"


def prepare(text: str, max_chars: int, lowercase: bool) -> str:
    """The one line fastText sees for ``text``."""
    line = " ".join(text[:max_chars].split())
    return line.lower() if lowercase else line


def _held_out(doc_id: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def _examples(sources: list[dict], label: str, what: str, s: dict, lines: dict, counts: dict) -> None:
    if not sources:
        raise UserError(f"data.quality_model.{what}: no sources (the classifier needs {what})")
    for i, src in enumerate(sources):
        try:
            docs = list(iter_source(src, i))
        except UserError as exc:
            raise UserError(str(exc).replace(f"data.sources[{i}]", f"data.quality_model.{what}[{i}]")) from None
        for doc_id, text, _meta in docs:
            line = prepare(text, s["max_chars"], s["lowercase"])
            if not line:
                continue
            split = "valid" if _held_out(f"{what}:{doc_id}", s["valid_fraction"]) else "train"
            lines[split].append(f"{label} {line}\n")
            counts[split][label.removeprefix("__label__")] += 1


@lru_cache(maxsize=4)
def load_classifier(path: str):
    """``(fastText model, classifier.json)`` of a quality_model artifact, cached per process."""
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # its load_model warning about WordVectorModel
    folder = Path(path)
    return fasttext.load_model(str(folder / MODEL)), json.loads((folder / META).read_text())


def _positive(model, lines: list[str]) -> list[float]:
    if not lines:
        return []
    # A list: the official fasttext's single-string predict fails under numpy 2.
    labels, probs = model.predict(lines, k=2)
    # fastText's softmax probabilities carry a 1e-5 floor: clip to [0, 1].
    return [min(1.0, max(0.0, float(dict(zip(labs, ps)).get(POSITIVE, 0.0)))) for labs, ps in zip(labels, probs)]


def score(path: str, texts: Sequence[str]) -> list[float]:
    """Probability of the positive label for each text, by the classifier at ``path``."""
    model, meta = load_classifier(path)
    return _positive(model, [prepare(t, meta["max_chars"], meta["lowercase"]) for t in texts])


def _metrics(model, valid: list[tuple[str, str]]) -> dict:
    """Precision, recall and F1 of the positive class, accuracy, at a probability of 0.5."""
    scores = _positive(model, [t for _, t in valid])
    tp = sum(1 for (lab, _), p in zip(valid, scores) if lab == POSITIVE and p >= 0.5)
    fp = sum(1 for (lab, _), p in zip(valid, scores) if lab != POSITIVE and p >= 0.5)
    fn = sum(1 for (lab, _), p in zip(valid, scores) if lab == POSITIVE and p < 0.5)
    tn = len(valid) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "accuracy": round((tp + tn) / len(valid), 4) if valid else 0.0,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


# Run by a fresh interpreter: argv[1] the train_supervised arguments (JSON), argv[2] the model path.
_TRAIN = """
import json, sys
import fasttext
fasttext.train_supervised(**json.loads(sys.argv[1])).save_model(sys.argv[2])
"""


def build(ctx: StageContext) -> dict:
    """Train the classifier on the configured sources; validate it on the held-out share."""
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # its load_model warning about WordVectorModel
    s = ctx.settings
    counts = {split: {"hq": 0, "lq": 0} for split in ("train", "valid")}
    lines: dict[str, list[str]] = {"train": [], "valid": []}
    _examples(s["positives"], POSITIVE, "positives", s, lines, counts)
    _examples(s["negatives"], NEGATIVE, "negatives", s, lines, counts)
    for split in ("train", "valid"):
        for cls in ("hq", "lq"):
            if not counts[split][cls]:
                raise UserError(
                    f"data.quality_model: no {'positive' if cls == 'hq' else 'negative'} document in the {split} split "
                    f"(too few documents, or valid_fraction {s['valid_fraction']})"
                )
    # Shuffled (seeded): SGD over all positives then all negatives diverges (fastText: NaN).
    random.Random(s["seed"]).shuffle(lines["train"])
    ctx.work.mkdir(parents=True, exist_ok=True)
    train = ctx.work / "train.txt"
    train.write_text("".join(lines["train"]))
    args = dict(
        input=str(train), epoch=s["epoch"], lr=s["lr"], wordNgrams=s["word_ngrams"], dim=s["dim"],
        bucket=s["bucket"], minCount=s["min_count"], seed=s["seed"], thread=1, verbose=0,
    )
    # A fresh interpreter: a second train_supervised in one process (fasttext 0.9.2 and
    # 0.9.3 alike) gave other weights, often NaN, than the same call in a new process.
    proc = subprocess.run([sys.executable, "-c", _TRAIN, json.dumps(args), str(ctx.out / MODEL)], capture_output=True, text=True)
    if proc.returncode:
        error = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"data.quality_model: fastText training failed ({error}); a lower lr or a larger bucket usually helps")
    model = fasttext.load_model(str(ctx.out / MODEL))
    (ctx.out / META).write_text(json.dumps({"max_chars": s["max_chars"], "lowercase": s["lowercase"], "positive": POSITIVE, "negative": NEGATIVE}))
    valid = [tuple(line.rstrip("\n").split(" ", 1)) for line in lines["valid"]]
    metrics = _metrics(model, valid)  # the lines are prepared already
    log.info("quality_model: %s, validation %s", counts, metrics)
    return {"documents": counts, "valid": metrics, "labels": len(model.get_labels()), "words": len(model.words)}
