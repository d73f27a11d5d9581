"""The two kinds of document step of the ``cleaned`` stage: a :class:`Filter` keeps or drops a
document and says why (the stage counts drops per reason); a :class:`Formatter` edits the text
of a kept document and counts its edits. Neither reads files or settings.

``check_batch`` exists because the Gopher repetition statistics are much cheaper computed for
a record batch at once with Arrow and NumPy than document by document in Python (datatrove
spends most of its filtering time there).
"""

from __future__ import annotations

from typing import Sequence


class Filter:
    """One filter: ``check(text)`` returns the drop reason, or ``None`` to keep the document.

    Subclasses implement ``check``; ``check_batch`` may be overridden where a batch can be
    computed faster at once, and must give the same answers as ``check`` on each text.
    A filter that also edits the text it keeps (C4's line rules) overrides ``apply``.
    """

    name = "filter"  # prefix of the stats this filter's edits are counted under

    def check(self, text: str) -> str | None:
        raise NotImplementedError

    def check_batch(self, texts: Sequence[str]) -> list[str | None]:
        return [self.check(t) for t in texts]

    def apply(self, text: str, words: list[str] | None = None) -> tuple[str, str | None]:
        """``(text to keep, drop reason or None)``; the text is unchanged unless overridden.

        ``words``: the document's words from its language's segmenter (lmbuild.data.lang), or
        None for whitespace-separated words; filters without word rules ignore it.
        """
        return text, self.check(text)


class Formatter:
    """One text edit that never drops a document: ``format(text)`` returns the new text and
    how many edits of each kind it made (counted in the stage's stats)."""

    def format(self, text: str) -> tuple[str, dict[str, int]]:
        raise NotImplementedError

