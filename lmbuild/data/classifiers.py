"""Cleaning by the named classifiers of ``data.classifiers``: each scores the prose that passed the
rules (column ``<name>_score``, the positive label's probability, by the classifier in the
``quality_model`` artifact's ``<name>/`` folder) and applies its keep rule, reason
``classifier:<name>``.

Keep rules (``data.classifiers.<name>.keep``, one of): ``min_score`` x drops scores under x;
``max_score`` x drops scores over x (a toxicity classifier whose positives are toxic);
``top_fraction`` / ``bottom_fraction`` f keep the scores in the highest / lowest f *of the
classifier's held-out documents* (``valid_scores`` in its ``classifier.json``, written at
training time). A fraction thus becomes one threshold, the same in every shard and every part
job, so the result does not depend on how the corpus is split into shards; it is a share of the
labelled held-out documents, not of the corpus (with balanced classes, ``top_fraction`` 0.5 sits
near the classes' boundary). ``{}`` scores and drops nothing. Classifiers run in name order and
every one scores every document; the first rule that drops a document names the reason.

What it does not do: train (lmbuild.data.quality_model), or the data.clean.quality classifier's
per-shard ``top_fraction`` (lmbuild.data.cleaned keeps that as it was).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lmbuild.data.quality import META, load_classifier, score
from lmbuild.errors import UserError


def columns(settings: dict) -> list[str]:
    """The score columns cleaning adds for ``settings`` (validated data.clean with the stage's
    ``classifiers`` keep rules): ``quality_score`` for data.clean.quality, then ``<name>_score``."""
    legacy = ["quality_score"] if settings["quality"]["enabled"] else []
    return legacy + [f"{n}_score" for n in sorted(settings.get("classifiers") or {})]


def threshold(keep: dict, valid_scores: list[float]) -> tuple[str, float] | None:
    """``("min" | "max", x)``: keep scores >= x, or <= x; None: keep every document."""
    if not keep:
        return None
    (rule, value), = keep.items()
    if rule in ("min_score", "max_score"):
        return rule[:3], value
    ranked = sorted(valid_scores, reverse=rule == "top_fraction")
    if not ranked:
        raise ValueError("no held-out scores to fix a fraction's threshold")
    return ("min" if rule == "top_fraction" else "max"), ranked[max(0, math.ceil(value * len(ranked)) - 1)]


class Classifiers:
    """The named classifiers of one cleaning job; ``artifact``: the quality_model artifact's path."""

    def __init__(self, settings: dict, artifact: str | None):
        named = settings.get("classifiers") or {}
        if named and artifact is None:
            raise UserError("data.classifiers needs the quality_model artifact as an input")
        self.rules: list[tuple[str, str, tuple[str, float] | None]] = []
        for name in sorted(named):
            folder = Path(artifact) / name
            try:
                meta = json.loads((folder / META).read_text())
            except (OSError, ValueError):
                raise UserError(f"{folder}: no classifier {name} in the quality_model artifact (rebuild it)") from None
            self.rules.append((name, str(folder), threshold(named[name]["keep"], meta.get("valid_scores", []))))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def load(self) -> None:
        """Load every model once (before forking workers)."""
        for _, folder, _ in self.rules:
            load_classifier(folder)

    def describe(self) -> dict:
        """{name: column, keep rule as applied} for the cleaned manifest."""
        return {
            name: {"column": f"{name}_score", "keep": None if rule is None else {"score": f">= {rule[1]:.6g}" if rule[0] == "min" else f"<= {rule[1]:.6g}"}}
            for name, _, rule in self.rules
        }

    def apply(self, texts: list[str]) -> tuple[dict[str, list[float]], list[str | None]]:
        """``({column: score per text}, drop reason per text)``."""
        scores: dict[str, list[float]] = {}
        reasons: list[str | None] = [None] * len(texts)
        for name, folder, rule in self.rules:
            col = scores[f"{name}_score"] = score(folder, texts) if texts else []
            if rule is None:
                continue
            op, x = rule
            for i, s in enumerate(col):
                if reasons[i] is None and (s < x if op == "min" else s > x):
                    reasons[i] = f"classifier:{name}"
        return scores, reasons
