"""FineWeb's own line rules (Penedo et al. 2024)."""

from __future__ import annotations

from lmbuild.data.filters.base import Filter

# Unicode sentence-final punctuation: Latin, CJK, Arabic, Devanagari and others.
TERMINAL_PUNCTUATION = tuple(".!?\"'\u2026\u3002\uff01\uff1f\uff0e\u061f\u06d4\u0964\u0965\u00bb\u201d\u2019")


class FineWebFilter(Filter):
    """FineWeb's own rules (Penedo et al. 2024, "The FineWeb Datasets", section 3.3.4), over
    the non-blank lines, in this order; a threshold of ``None`` turns its rule off:

    * ``fineweb_line_punct``: fewer than 12% of lines end in terminal punctuation;
    * ``fineweb_short_lines``: more than 67% of lines are 30 characters or shorter;
    * ``fineweb_dup_chars``: more than 10% of the characters (newlines not counted) are in
      lines that repeat an earlier line. The paper says 0.1; datatrove's
      FineWebQualityFilter defaults to 0.01;
    * ``fineweb_list_ratio``: more than 0.3 newlines per word (datatrove's rule for lists;
      not in the paper).

    Lines are compared as they are (not stripped) for duplicates, as datatrove does, but
    trailing spaces are ignored for the punctuation rule (tokenised text such as WikiText
    ends its lines with " . "). What it does not do:
    the URL and Gopher/C4 filters that FineWeb also ran (see the other filters here).
    """

    name = "fineweb"

    def __init__(
        self,
        min_line_punct_frac: float | None = 0.12,
        max_short_lines_frac: float | None = 0.67,
        short_line_chars: int = 30,
        max_dup_line_char_frac: float | None = 0.1,
        max_newline_word_ratio: float | None = 0.3,
    ):
        self.min_punct, self.max_short, self.short_chars = min_line_punct_frac, max_short_lines_frac, short_line_chars
        self.max_dup_chars, self.max_newlines = max_dup_line_char_frac, max_newline_word_ratio

    @classmethod
    def from_settings(cls, s: dict) -> "FineWebFilter":
        """From ``data.clean.fineweb``."""
        keys = ("min_line_punct_frac", "max_short_lines_frac", "short_line_chars", "max_dup_line_char_frac", "max_newline_word_ratio")
        return cls(**{k: s[k] for k in keys})

    def apply(self, text: str, words: list[str] | None = None) -> tuple[str, str | None]:
        return text, self.check(text, words)

    def check(self, text: str, words: list[str] | None = None) -> str | None:
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return None
        n = len(lines)
        if self.min_punct is not None and sum(line.rstrip().endswith(TERMINAL_PUNCTUATION) for line in lines) / n < self.min_punct:
            return "fineweb_line_punct"
        if self.max_short is not None and sum(len(line) <= self.short_chars for line in lines) / n > self.max_short:
            return "fineweb_short_lines"
        if self.max_dup_chars is not None:
            seen: set[str] = set()
            dup = 0
            for line in lines:
                if line in seen:
                    dup += len(line)
                else:
                    seen.add(line)
            if dup / max(len(text) - text.count("\n"), 1) > self.max_dup_chars:
                return "fineweb_dup_chars"
        n_words = len(text.split()) if words is None else len(words)
        if self.max_newlines is not None and text.count("\n") / max(n_words, 1) > self.max_newlines:
            return "fineweb_list_ratio"
        return None

