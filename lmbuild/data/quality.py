"""The quality classifier's scoring, which the ``cleaned`` stage runs (``data.clean.quality``):
the probability of the positive label for a text, by a ``quality_model`` artifact.

A text becomes the one line fastText sees (:func:`prepare`): its first ``max_chars``
characters, whitespace collapsed to single spaces, lowercased by default, as the classifier
was trained on (lmbuild.data.quality_model, which writes those choices to ``classifier.json``).
What it does not do: train (lmbuild.data.quality_model) or pick a threshold (cleaning does).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Sequence

POSITIVE, NEGATIVE = "__label__hq", "__label__lq"
MODEL, META = "model.bin", "classifier.json"
# The folder of data.quality_model's classifier in the quality_model artifact (each classifier has its own).
LEGACY = "quality"


def prepare(text: str, max_chars: int, lowercase: bool) -> str:
    """The one line fastText sees for ``text``."""
    line = " ".join(text[:max_chars].split())
    return line.lower() if lowercase else line


@lru_cache(maxsize=4)
def load_classifier(path: str):
    """``(fastText model, classifier.json)`` of a quality_model artifact, cached per process."""
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # its load_model warning about WordVectorModel
    folder = Path(path)
    return fasttext.load_model(str(folder / MODEL)), json.loads((folder / META).read_text())


def positive(model, lines: list[str]) -> list[float]:
    """The positive label's probability for each prepared line."""
    if not lines:
        return []
    # A list: the official fasttext's single-string predict fails under numpy 2.
    labels, probs = model.predict(lines, k=2)
    # fastText's softmax probabilities carry a 1e-5 floor: clip to [0, 1].
    return [min(1.0, max(0.0, float(dict(zip(labs, ps)).get(POSITIVE, 0.0)))) for labs, ps in zip(labels, probs)]


def score(path: str, texts: Sequence[str]) -> list[float]:
    """Probability of the positive label for each text, by the classifier at ``path``."""
    model, meta = load_classifier(path)
    return positive(model, [prepare(t, meta["max_chars"], meta["lowercase"]) for t in texts])
