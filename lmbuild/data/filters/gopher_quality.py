"""Gopher's quality rules (Rae et al. 2021): word counts and lengths, symbols, bullet and
ellipsis lines, letters and stop words."""

from __future__ import annotations

import re
from typing import Sequence

from lmbuild.data.filters.base import Filter

# Gopher quality rules, Rae et al. 2021, Appendix A ("quality filtering"); the same defaults
# as datatrove's GopherQualityFilter.
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
_ALPHA = re.compile(r"[^\W\d_]")  # a letter of any script
_ALNUM = re.compile(r"[^\W_]")  # a letter or digit of any script: not a punctuation or symbol token
# A whitespace-separated word without a letter, found in one C-level scan of the text.
_NO_LETTER_WORD = re.compile(r"(?<!\S)(?:[^\w\s]|[\d_])+(?!\S)")


class GopherQualityFilter(Filter):
    """Gopher's quality rules (Rae et al. 2021, Appendix A), checked in this order; a
    threshold of ``None`` turns its rule off:

    * ``gopher_too_few_words`` / ``gopher_too_many_words``: fewer than 50 or more than
      100,000 words;
    * ``gopher_mean_word_length``: mean word length outside [3, 10] characters;
    * ``gopher_symbol_ratio``: more than 0.1 "#" symbols, or 0.1 ellipses ("..." or "…"),
      per word;
    * ``gopher_bullet_lines``: more than 90% of lines start with a bullet ("•", "-", "*");
    * ``gopher_ellipsis_lines``: more than 30% of lines end with an ellipsis;
    * ``gopher_alpha_words``: fewer than 80% of words contain a letter;
    * ``gopher_stop_words``: fewer than 2 occurrences of the stop words (any case); by
      default Gopher's English "the, be, to, of, and, that, have, with" (the language
      presets of lmbuild.data.lang give FineWeb-2's list of each language).

    Words are whitespace-separated tokens (``str.split()``), so "word," is one word of five
    characters; datatrove splits punctuation off with a spaCy tokenizer first, which makes
    its mean word lengths a little shorter. Lines are the non-blank lines. Given a
    segmenter's ``words`` (Japanese, Chinese, Thai, Korean: see lmbuild.data.lang), the
    rules count those instead, as datatrove does.

    What it does not do: judge fluency, topic or toxicity.
    """

    name = "gopher_quality"

    def __init__(
        self,
        min_words: int | None = 50,
        max_words: int | None = 100_000,
        min_mean_word_length: float | None = 3,
        max_mean_word_length: float | None = 10,
        max_symbol_word_ratio: float | None = 0.1,
        max_bullet_lines_frac: float | None = 0.9,
        max_ellipsis_lines_frac: float | None = 0.3,
        min_alpha_words_frac: float | None = 0.8,
        min_stop_words: int | None = 2,
        stop_words: Sequence[str] = GOPHER_STOP_WORDS,
    ):
        self.min_words, self.max_words = min_words, max_words
        self.min_mean, self.max_mean = min_mean_word_length, max_mean_word_length
        self.max_symbol = max_symbol_word_ratio
        self.max_bullet, self.max_ellipsis = max_bullet_lines_frac, max_ellipsis_lines_frac
        self.min_alpha = min_alpha_words_frac
        self.min_stop = min_stop_words
        self.stop_words = frozenset(w.lower() for w in stop_words)

    @classmethod
    def from_settings(cls, s: dict) -> "GopherQualityFilter":
        """From ``data.clean.gopher_quality``."""
        keys = ("min_words", "max_words", "min_mean_word_length", "max_mean_word_length", "max_symbol_word_ratio",
                "max_bullet_lines_frac", "max_ellipsis_lines_frac", "min_alpha_words_frac", "min_stop_words", "stop_words")
        return cls(**{k: s[k] for k in keys})

    def apply(self, text: str, words: list[str] | None = None) -> tuple[str, str | None]:
        return text, self.check(text, words)

    def check(self, text: str, words: list[str] | None = None) -> str | None:
        if words is not None:
            return self._check_segmented(text, words)
        words = text.split()
        n = len(words)
        if self.min_words is not None and n < self.min_words:
            return "gopher_too_few_words"
        if self.max_words is not None and n > self.max_words:
            return "gopher_too_many_words"
        if not n:
            return None
        mean = sum(map(len, words)) / n
        if (self.min_mean is not None and mean < self.min_mean) or (self.max_mean is not None and mean > self.max_mean):
            return "gopher_mean_word_length"
        reason = self._symbol_and_line_rules(text, n)
        if reason:
            return reason
        if self.min_alpha is not None and (n - len(_NO_LETTER_WORD.findall(text))) / n < self.min_alpha:
            return "gopher_alpha_words"
        if self.min_stop is not None and self.min_stop > 0:
            stop, seen = self.stop_words, 0
            for w in words:
                if w.lower() in stop:
                    seen += 1
                    if seen >= self.min_stop:
                        break
            else:
                return "gopher_stop_words"
        return None

    def _symbol_and_line_rules(self, text: str, n: int) -> str | None:
        """Gopher's "#" and ellipses per word (n words) and its bullet and ellipsis line rules."""
        if self.max_symbol is not None:
            hashes, ellipses = text.count("#"), text.count("...") + text.count("\u2026")
            if hashes / n > self.max_symbol or ellipses / n > self.max_symbol:
                return "gopher_symbol_ratio"
        if self.max_bullet is not None or self.max_ellipsis is not None:
            lines = [s for s in (line.strip() for line in text.split("\n")) if s]
            if lines:
                if self.max_bullet is not None and sum(s.startswith(("\u2022", "-", "*")) for s in lines) / len(lines) > self.max_bullet:
                    return "gopher_bullet_lines"
                if self.max_ellipsis is not None and sum(s.endswith(("...", "\u2026")) for s in lines) / len(lines) > self.max_ellipsis:
                    return "gopher_ellipsis_lines"
        return None

    def _check_segmented(self, text: str, words: list[str]) -> str | None:
        """The same rules on a segmenter's words, counted as datatrove counts them: punctuation
        and symbol tokens (a segmenter's "。" or "、") are words for the letter and stop-word
        rules but not for the word count and mean word length."""
        n = len(words)
        real = [w for w in words if _ALNUM.search(w)]
        if self.min_words is not None and len(real) < self.min_words:
            return "gopher_too_few_words"
        if self.max_words is not None and len(real) > self.max_words:
            return "gopher_too_many_words"
        if not n:
            return None
        mean = sum(map(len, real)) / max(len(real), 1)
        if (self.min_mean is not None and mean < self.min_mean) or (self.max_mean is not None and mean > self.max_mean):
            return "gopher_mean_word_length"
        reason = self._symbol_and_line_rules(text, n)
        if reason:
            return reason
        if self.min_alpha is not None and sum(1 for w in words if _ALPHA.search(w)) / n < self.min_alpha:
            return "gopher_alpha_words"
        if self.min_stop is not None and self.min_stop > 0:
            if sum(1 for w in words if w.lower() in self.stop_words) < self.min_stop:
                return "gopher_stop_words"
        return None

