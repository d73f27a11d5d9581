"""The length rule: a document's size in characters, the cheap rule run first."""

from __future__ import annotations

from lmbuild.data.filters.base import Filter


class LengthFilter(Filter):
    """Drops documents shorter than ``min_chars`` ("too_short") or longer than ``max_chars``
    ("too_long"), counted in Unicode code points after normalisation.

    Does not look at words, lines or bytes: a 200-character run of one letter passes.
    """

    name = "length"

    def __init__(self, min_chars: int = 0, max_chars: int | None = None):
        self.min_chars, self.max_chars = min_chars, max_chars

    def check(self, text: str) -> str | None:
        n = len(text)
        if n < self.min_chars:
            return "too_short"
        if self.max_chars is not None and n > self.max_chars:
            return "too_long"
        return None
