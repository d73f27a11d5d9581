"""Stage ``quality_model``: the fastText classifiers that cleaning scores with, each trained from
configured sources by DCLM's recipe (Li et al. 2024, "DataComp-LM", section 4.4: a fastText
bigram classifier with high-quality reference text as positives and raw crawl text as
negatives), each refused under a floor of validation F1 (``min_f1``): data.quality_model's
(folder ``quality``, when data.clean.quality.enabled) and every one of data.classifiers
(folder ``<name>``, their keep rules applied by cleaning, lmbuild.data.classifiers).

Layout of the artifact::

    <name>/model.bin        the fastText supervised model (fastText's own binary format)
    <name>/classifier.json  how to prepare a text for it (max_chars, lowercase), its labels, its
                            validation figures and held-out scores (sorted)
    manifest.json           counts.classifiers.<name>: documents per class and split,
                            validation precision/recall/F1

Each document becomes one line: its first ``max_chars`` characters, whitespace collapsed to
single spaces (fastText reads a line per example), lowercased by default. Documents are held
out for validation by a hash of their id (``valid_fraction``), so adding documents does not
move others between splits. Training runs on one thread: fastText's multi-threaded SGD
(Hogwild) gives a different model every run, and one thread is fast at this size. The
validation figures are for the positive class at a probability of 0.5.

A classifier whose validation F1 (positive class, probability 0.5) is under the floor fails the
stage with its figures, and the runner writes no artifact. The default floor (``min_f1: null``)
is the F1 of labelling every held-out document positive, 2p/(1+p) with p the held-out share of
positives: the baseline an F1 must beat (Flach and Kull 2015, "Precision-Recall-Gain Curves: PR
Analysis Done Right", NeurIPS). A classifier trained on the same text as positives and negatives
scores under it. A number sets the floor instead; 0 accepts any classifier.

Kept apart from :mod:`lmbuild.data.quality`, the scoring the ``cleaned`` stage runs: this module
is in the classifier's code set only, so editing it re-keys the classifier and not the cleaning
of a build that uses none. One artifact holds every classifier; editing one trains only it, the
others are copied from an earlier artifact of the store (:func:`train_one`). What it does not do: balance the classes (the counts are in the manifest), pick
hyper-parameters, stream (the prepared lines are held in memory, to shuffle them), or read
a pretrained classifier (DCLM's own is hub-only). Training diverges (fastText's "Encountered
NaN", reported as a config error) on tiny or near-duplicate data and with very small
``bucket`` values: seen on 120 near-identical lines with ``bucket`` 1,000, not 20,000. Nor does it
test significance: on a small validation split, chance can lift a classifier of no skill a
little above the default floor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import subprocess
import sys
from pathlib import Path

from lmbuild.data.quality import LEGACY, META, MODEL, NEGATIVE, POSITIVE, positive, prepare
from lmbuild.data.sources import iter_source
from lmbuild.errors import UserError
from lmbuild.store.artifact import read_manifest
from lmbuild.store.runner import StageContext

log = logging.getLogger(__name__)


def _held_out(doc_id: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def _examples(sources: list[dict], label: str, what: str, where: str, s: dict, lines: dict, counts: dict) -> None:
    if not sources:
        raise UserError(f"{where}.{what}: no sources (the classifier needs {what})")
    for i, src in enumerate(sources):
        try:
            docs = list(iter_source(src, i))
        except UserError as exc:
            raise UserError(str(exc).replace(f"data.sources[{i}]", f"{where}.{what}[{i}]")) from None
        n = 0
        for doc_id, text, _meta in docs:
            line = prepare(text, s["max_chars"], s["lowercase"])
            if not line:
                continue
            n += 1
            split = "valid" if _held_out(f"{what}:{doc_id}", s["valid_fraction"]) else "train"
            lines[split].append(f"{label} {line}\n")
            counts[split][label.removeprefix("__label__")] += 1
        if not n:
            raise UserError(f"{where}.{what}[{i}]: no documents with text (the classifier needs {what})")


def _metrics(valid: list[tuple[str, str]], scores: list[float]) -> dict:
    """Precision, recall and F1 of the positive class, accuracy, at a probability of 0.5."""
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


def _identity(args: dict, train: str, valid: list[str], code: str | None) -> str:
    """What a classifier is trained from: the fastText arguments, the prepared lines (so the sources'
    content, whatever their paths) and the stage's code hash."""
    h = hashlib.sha256(json.dumps({"args": {k: v for k, v in args.items() if k != "input"}, "code": code}, sort_keys=True).encode())
    for text in (train, "".join(valid)):
        h.update(b"\0" + text.encode())
    return h.hexdigest()[:32]


def _trained_before(store: Path | None, identity: str) -> tuple[str, Path] | None:
    """``(key/name, model.bin)`` of a classifier of this identity in a complete quality_model artifact
    of the store, its bytes checked against that artifact's manifest; None if there is none."""
    if store is None:
        return None
    for artifact in sorted((Path(store) / "quality_model").glob("[!.]*")):
        try:
            manifest = read_manifest(artifact)
            for name, c in manifest["counts"]["classifiers"].items():
                path = artifact / name / MODEL
                if c.get("identity") == identity and _sha256(path) == manifest["files"][f"{name}/{MODEL}"]["sha256"]:
                    return f"{artifact.name}/{name}", path
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # incomplete, removed meanwhile, or older
            continue
    return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def train_one(s: dict, where: str, out: Path, work: Path, store: Path | None = None, code: str | None = None) -> dict:
    """Train one classifier (settings ``s``, config key ``where``) into the folder ``out``;
    validate it on the held-out share. ``classifier.json`` keeps the held-out scores, sorted, from
    which cleaning fixes a top or bottom fraction's threshold (lmbuild.data.classifiers).

    A classifier of the same identity (:func:`_identity`: arguments, data, code) in a complete
    artifact of ``store`` is copied instead of trained again: one-thread training is
    deterministic (the same bytes, checked), so editing one classifier retrains only it."""
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # its load_model warning about WordVectorModel
    counts = {split: {"hq": 0, "lq": 0} for split in ("train", "valid")}
    lines: dict[str, list[str]] = {"train": [], "valid": []}
    _examples(s["positives"], POSITIVE, "positives", where, s, lines, counts)
    _examples(s["negatives"], NEGATIVE, "negatives", where, s, lines, counts)
    for split in ("train", "valid"):
        for cls in ("hq", "lq"):
            if not counts[split][cls]:
                raise UserError(
                    f"{where}: no {'positive' if cls == 'hq' else 'negative'} document in the {split} split "
                    f"(too few documents, or valid_fraction {s['valid_fraction']})"
                )
    # Shuffled (seeded): SGD over all positives then all negatives diverges (fastText: NaN).
    random.Random(s["seed"]).shuffle(lines["train"])
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    train = work / "train.txt"
    train_text = "".join(lines["train"])
    train.write_text(train_text)
    args = dict(
        input=str(train), epoch=s["epoch"], lr=s["lr"], wordNgrams=s["word_ngrams"], dim=s["dim"],
        bucket=s["bucket"], minCount=s["min_count"], seed=s["seed"], thread=1, verbose=0,
    )
    identity = _identity(args, train_text, lines["valid"], code)
    before = _trained_before(store, identity)
    if before is not None:
        shutil.copyfile(before[1], out / MODEL)
        log.info("%s: the classifier of %s, the same training", where, before[0])
    else:
        # A fresh interpreter: a second train_supervised in one process (fasttext 0.9.2 and
        # 0.9.3 alike) gave other weights, often NaN, than the same call in a new process.
        proc = subprocess.run([sys.executable, "-c", _TRAIN, json.dumps(args), str(out / MODEL)], capture_output=True, text=True)
        if proc.returncode:
            error = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"{where}: fastText training failed ({error}); a lower lr or a larger bucket usually helps")
    model = fasttext.load_model(str(out / MODEL))
    valid = [tuple(line.rstrip("\n").split(" ", 1)) for line in lines["valid"]]
    scores = positive(model, [t for _, t in valid])  # the lines are prepared already
    metrics = _metrics(valid, scores)
    meta = {"max_chars": s["max_chars"], "lowercase": s["lowercase"], "positive": POSITIVE, "negative": NEGATIVE,
            "valid": metrics, "valid_scores": sorted(scores)}
    (out / META).write_text(json.dumps(meta))
    log.info("%s: %s, validation %s", where, counts, metrics)
    return {"documents": counts, "valid": metrics, "labels": len(model.get_labels()), "words": len(model.words), "identity": identity,
            "copied_from": None if before is None else before[0]}


def always_positive_f1(positives: int, negatives: int) -> float:
    """F1 of the classifier that labels every document positive: precision p (the share of
    positives), recall 1, so 2p/(1+p)."""
    p = positives / (positives + negatives)
    return 2 * p / (1 + p)


def check_floor(metrics: dict, valid: dict, min_f1: float | None, where: str = "data.quality_model") -> None:
    """UserError (one line, with the figures) when the validation F1 is under ``min_f1``, or, with
    ``min_f1`` None, no better than :func:`always_positive_f1` of the held-out documents
    (``valid``: {"hq": positives, "lq": negatives}). ``where``: the classifier's config key."""
    f1 = metrics["f1"]
    figures = (f"validation F1 {f1:.4f} (precision {metrics['precision']:.4f}, recall {metrics['recall']:.4f}; "
               f"{valid['hq']} positive and {valid['lq']} negative documents held out)")
    if min_f1 is None:
        baseline = always_positive_f1(valid["hq"], valid["lq"])
        if f1 <= round(baseline, 4):  # the metrics are rounded to 4 digits
            raise UserError(
                f"{where}.min_f1: the classifier's {figures} is no better than labelling every document "
                f"positive (F1 {baseline:.4f}): do the positives and negatives differ? Set min_f1 lower to use it anyway"
            )
    elif f1 < min_f1:
        raise UserError(f"{where}.min_f1: the classifier's {figures} is under the floor {min_f1:g}")


def classifiers(settings: dict) -> dict[str, tuple[str, dict]]:
    """{folder name: (config key, settings)} of every classifier the stage trains: data.quality_model
    as ``quality`` (lmbuild.data.quality.LEGACY) when cleaning uses it, then data.classifiers."""
    out = {LEGACY: ("data.quality_model", settings["quality_model"])} if "quality_model" in settings else {}
    out.update({n: (f"data.classifiers.{n}", s) for n, s in sorted(settings.get("classifiers", {}).items())})
    return out


def build(ctx: StageContext) -> dict:
    """Train and validate every classifier (:func:`train_one`) into ``<name>/``; refuse one under its floor."""
    counts = {}
    for name, (where, s) in classifiers(ctx.settings).items():
        c = counts[name] = train_one(s, where, ctx.out / name, ctx.work / name, ctx.store, ctx.lineage.get("code_hash"))
        check_floor(c["valid"], c["documents"]["valid"], s.get("min_f1"), where)
    if not counts:
        raise UserError("quality_model: no classifier to train (data.clean.quality.enabled is off and data.classifiers is empty)")
    return {"classifiers": counts}
