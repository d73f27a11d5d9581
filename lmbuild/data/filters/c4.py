"""C4's rules (Raffel et al. 2020): line removals and three document rules."""

from __future__ import annotations

import re

from lmbuild.data.filters.base import Filter

# C4 (Raffel et al. 2020, section 2.2 "Colossal Clean Crawled Corpus"), as datatrove's
# C4QualityFilter implements it.
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_POLICY = re.compile("|".join(map(re.escape, C4_POLICY)))
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


class C4Filter(Filter):
    """C4's rules (Raffel et al. 2020, section 2.2). Line rules remove lines and keep the
    document: lines without terminal punctuation (".", "?", "!", a closing quote; not an
    ellipsis), lines with fewer than 3 words, lines with a word over 1,000 characters,
    lines mentioning "javascript", and cookie/terms-of-use lines; Wikipedia citation marks
    ("[1]", "[edit]", "[citation needed]") are deleted. Document rules drop it:
    ``c4_lorem_ipsum`` ("lorem ipsum" anywhere), ``c4_curly_bracket`` (a "{" in a kept line:
    C4 drops pages with code this way) and ``c4_too_few_sentences`` (fewer than 5
    sentences left). Every rule can be turned off (``False`` or ``None``).

    Kept lines are stripped and joined with one "\\n", so blank lines (paragraph breaks) go,
    as in datatrove's ``split_paragraph=True`` mode. Sentences are counted with a regex (a
    ".", "!" or "?" followed by whitespace or the end, at least one per kept line) instead of
    NLTK's Punkt tokenizer: "Mr. Smith" counts two here.

    What it does not do: C4's bad-words list, or its page-level dedup of 3-sentence spans
    (the ``deduplicated`` stage dedups).
    """

    name = "c4"

    def __init__(
        self,
        terminal_punctuation: bool = True,
        min_words_per_line: int | None = 3,
        max_word_length: int | None = 1000,
        min_sentences: int | None = 5,
        lorem_ipsum: bool = True,
        javascript: bool = True,
        curly_bracket: bool = True,
        policy: bool = True,
        citations: bool = True,
    ):
        self.terminal_punctuation = terminal_punctuation
        self.min_words_per_line, self.max_word_length = min_words_per_line, max_word_length
        self.min_sentences = min_sentences
        self.lorem_ipsum, self.javascript, self.curly_bracket = lorem_ipsum, javascript, curly_bracket
        self.policy, self.citations = policy, citations

    @classmethod
    def from_settings(cls, s: dict) -> "C4Filter":
        """From ``data.clean.c4``."""
        keys = ("terminal_punctuation", "min_words_per_line", "max_word_length", "min_sentences",
                "lorem_ipsum", "javascript", "curly_bracket", "policy", "citations")
        return cls(**{k: s[k] for k in keys})

    def check(self, text: str) -> str | None:
        return self.apply(text)[1]

    def apply(self, text: str, words: list[str] | None = None) -> tuple[str, str | None]:
        # Whitespace words only: the language presets of scripts without spaces turn C4 off,
        # as FineWeb-2 does.
        if self.lorem_ipsum and "lorem ipsum" in text.lower():
            return text, "c4_lorem_ipsum"
        kept: list[str] = []
        sentences = 0
        need = self.min_sentences or 0
        max_word, min_words = self.max_word_length, self.min_words_per_line
        for line in text.split("\n"):
            line = line.strip()
            if not line:
                continue
            # A word over max_word characters needs a line that long: split only those.
            if max_word is not None and len(line) > max_word and any(len(w) > max_word for w in line.split()):
                continue
            if min_words is not None and len(line.split(None, min_words - 1)) < min_words:
                continue
            if self.citations and "[" in line:
                line = _CITATION.sub("", line)
            if self.terminal_punctuation and (not line.endswith(C4_END_PUNCTUATION) or line.endswith("...")):
                continue
            low = line.lower()
            if self.javascript and "javascript" in low:
                continue
            if self.policy and _POLICY.search(low):
                continue
            if self.curly_bracket and "{" in line:
                return text, "c4_curly_bracket"
            if sentences < need:  # counting stops once there are enough
                sentences += max(1, len(_SENTENCE_END.findall(line)))
            kept.append(line)
        if self.min_sentences is not None and sentences < self.min_sentences:
            return text, "c4_too_few_sentences"
        return "\n".join(kept), None

