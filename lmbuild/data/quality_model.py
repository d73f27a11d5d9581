"""Stage ``quality_model``'s entry: train the classifier (:func:`lmbuild.data.quality.build`),
then refuse one that separates nothing (``data.quality_model.min_f1``).

A classifier whose validation F1 (positive class, probability 0.5) is under the floor fails the
stage with its figures, and the runner writes no artifact. The default floor (``min_f1: null``)
is the F1 of labelling every held-out document positive, 2p/(1+p) with p the held-out share of
positives: the baseline an F1 must beat (Flach and Kull 2015, "Precision-Recall-Gain Curves: PR
Analysis Done Right", NeurIPS). A classifier trained on the same text as positives and negatives
scores under it. A number sets the floor instead; 0 accepts any classifier.

Kept apart from :mod:`lmbuild.data.quality`, whose scoring the ``cleaned`` stage runs: this
module is in the classifier's code set only, so editing it re-keys the classifier and not the
cleaning of a build that uses none. It does NOT test significance: on a small validation split,
chance can lift a classifier of no skill a little above the default floor.
"""

from __future__ import annotations

from lmbuild.data.quality import build as train_classifier
from lmbuild.errors import UserError
from lmbuild.runner import StageContext


def always_positive_f1(positives: int, negatives: int) -> float:
    """F1 of the classifier that labels every document positive: precision p (the share of
    positives), recall 1, so 2p/(1+p)."""
    p = positives / (positives + negatives)
    return 2 * p / (1 + p)


def check_floor(metrics: dict, valid: dict, min_f1: float | None) -> None:
    """UserError (one line, with the figures) when the validation F1 is under ``min_f1``, or, with
    ``min_f1`` None, no better than :func:`always_positive_f1` of the held-out documents
    (``valid``: {"hq": positives, "lq": negatives})."""
    f1 = metrics["f1"]
    figures = (f"validation F1 {f1:.4f} (precision {metrics['precision']:.4f}, recall {metrics['recall']:.4f}; "
               f"{valid['hq']} positive and {valid['lq']} negative documents held out)")
    if min_f1 is None:
        baseline = always_positive_f1(valid["hq"], valid["lq"])
        if f1 <= round(baseline, 4):  # the metrics are rounded to 4 digits
            raise UserError(
                f"data.quality_model.min_f1: the classifier's {figures} is no better than labelling every document "
                f"positive (F1 {baseline:.4f}): do the positives and negatives differ? Set min_f1 lower to use it anyway"
            )
    elif f1 < min_f1:
        raise UserError(f"data.quality_model.min_f1: the classifier's {figures} is under the floor {min_f1:g}")


def build(ctx: StageContext) -> dict:
    """Train and validate the classifier (lmbuild.data.quality.build); refuse it under the floor."""
    counts = train_classifier(ctx)
    check_floor(counts["valid"], counts["documents"]["valid"], ctx.settings.get("min_f1"))
    return counts
