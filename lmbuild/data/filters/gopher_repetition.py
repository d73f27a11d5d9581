"""Gopher's repetition rules (Rae et al. 2021), computed for a record batch at once with Arrow
and NumPy (lmbuild.data.filters.kernels): datatrove spends most of its filtering time here."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmbuild.data.filters.base import Filter
from lmbuild.data.filters.kernels import duplicate_pieces, ngram_stats

# Gopher's repetition thresholds, Rae et al. 2021 ("Scaling Language Models: Methods,
# Analysis & Insights from Training Gopher"), Appendix A, Table A1.
GOPHER_DUP_LINE_FRAC = 0.30
GOPHER_DUP_LINE_CHAR_FRAC = 0.20
GOPHER_DUP_PARA_FRAC = 0.30
GOPHER_DUP_PARA_CHAR_FRAC = 0.20
GOPHER_TOP_NGRAM_CHAR_FRAC = {2: 0.20, 3: 0.18, 4: 0.16}
GOPHER_DUP_NGRAM_CHAR_FRAC = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


class GopherRepetitionFilter(Filter):
    """Gopher's repetition rules (Rae et al. 2021, Appendix A, Table A1), in this order
    (a threshold of ``None`` turns its rule off):

    * ``dup_line_frac`` / ``dup_para_frac``: share of lines / paragraphs that repeat an
      earlier one of the document > 0.30 / 0.30;
    * ``dup_line_char_frac`` / ``dup_para_char_frac``: share of the document's characters in
      such repeated lines / paragraphs > 0.20 / 0.20;
    * ``top_{n}_gram`` for n = 2, 3, 4: characters covered by the most frequent word n-gram
      (its length, words joined by one space, times its count, as datatrove counts it) over
      the document's characters > 0.20, 0.18, 0.16;
    * ``dup_{n}_gram`` for n = 5..10: characters of the words covered by n-grams that repeat
      an earlier n-gram of the document (each word counted once however many repeated
      n-grams cover it, as the paper asks) over the document's characters > 0.15, 0.14,
      0.13, 0.12, 0.11, 0.10.

    Lines are split on "\\n", paragraphs on two or more "\\n"; both are stripped and blank
    ones ignored (blank lines would otherwise count as duplicates in any text with
    paragraphs); the first occurrence is not a duplicate. Words are whitespace-separated
    tokens (``str.split()``); datatrove uses a word tokenizer that also splits punctuation,
    so its n-grams differ slightly, and its duplicate n-gram count skips ahead n words after
    each repeat (a greedy, order-dependent cover) where this counts the exact union. Ties
    for the most frequent n-gram go to the one that occurs first, as ``Counter.most_common``
    does. An n-gram that occurs only once scores 0: datatrove scores it too, which drops
    short texts with no repetition at all (a 100-character quote whose first 4-gram has 17
    characters is "17% repeated"): on 400 real English fortunes it raised the drops from
    23 to 124.

    What it does not do: any quality heuristic (see :class:`GopherQualityFilter`). The rules
    were designed for web prose: source code and verse repeat lines by nature.

    Implementation: a batch is split into lines and words once with Arrow; n-grams are
    numbered exactly by extending (document, (n-1)-gram) ids one word at a time with Arrow's
    hash encoding of integers, so counting is O(words) integer work per n, with no n-gram
    strings built and no sort. On the embedded corpus (16 MB) the line and top n-gram rules
    ran at ~13-15 MB/s on one core here, against ~4 MB/s for the same rules as Python loops
    over joined n-gram strings (datatrove's way); batches of ~256 kB of text were fastest
    (64 kB: 13, 4 MB: 5 MB/s).

    Memory: linear in the batch's text, about 12x its size at peak (int32 positions and ids,
    int64 keys, each hash table at most ``kernels.COUNT_CHUNK`` keys); one 200 MB
    document adds 2.3 GB (4.4 GB, 23x its size, when every n-gram went into one hash table;
    ``bench/gopher_memory.py``). ``data.clean.max_chars`` (500k characters by default) is
    what bounds it: this rule does not stream a document.
    """

    name = "gopher_repetition"

    def __init__(
        self,
        dup_line_frac: float | None = GOPHER_DUP_LINE_FRAC,
        dup_line_char_frac: float | None = GOPHER_DUP_LINE_CHAR_FRAC,
        top_ngram_char_frac: dict | None = None,
        dup_para_frac: float | None = GOPHER_DUP_PARA_FRAC,
        dup_para_char_frac: float | None = GOPHER_DUP_PARA_CHAR_FRAC,
        dup_ngram_char_frac: dict | None = None,
    ):
        self.dup_line_frac = dup_line_frac
        self.dup_line_char_frac = dup_line_char_frac
        self.dup_para_frac = dup_para_frac
        self.dup_para_char_frac = dup_para_char_frac
        top = GOPHER_TOP_NGRAM_CHAR_FRAC if top_ngram_char_frac is None else top_ngram_char_frac
        dup = GOPHER_DUP_NGRAM_CHAR_FRAC if dup_ngram_char_frac is None else dup_ngram_char_frac
        self.top_ngram = {int(n): float(f) for n, f in top.items() if f is not None}
        self.dup_ngram = {int(n): float(f) for n, f in dup.items() if f is not None}

    @classmethod
    def from_settings(cls, s: dict) -> "GopherRepetitionFilter":
        """From ``data.clean.gopher_repetition``."""
        return cls(
            s["dup_line_frac"], s["dup_line_char_frac"], s["top_ngram_char_frac"],
            s["dup_para_frac"], s["dup_para_char_frac"], s["dup_ngram_char_frac"],
        )

    def rules(self) -> list[tuple[str, float]]:
        out = [
            ("dup_line_frac", self.dup_line_frac),
            ("dup_para_frac", self.dup_para_frac),
            ("dup_line_char_frac", self.dup_line_char_frac),
            ("dup_para_char_frac", self.dup_para_char_frac),
        ]
        out += [(f"top_{n}_gram", self.top_ngram[n]) for n in sorted(self.top_ngram)]
        out += [(f"dup_{n}_gram", self.dup_ngram[n]) for n in sorted(self.dup_ngram)]
        return [(name, t) for name, t in out if t is not None]

    def check(self, text: str) -> str | None:
        return self.check_batch([text])[0]

    def stats(self, texts: Sequence[str], words: Sequence[list[str] | None] | None = None) -> dict[str, np.ndarray]:
        """Per-document fractions: ``dup_{line,para}_frac``, ``dup_{line,para}_char_frac``,
        ``top_{n}_gram``, ``dup_{n}_gram``. ``words[i]``: document i's words from its
        segmenter (None: whitespace-separated), for the n-gram rules; an n-gram's characters
        are its words joined by one space, as datatrove counts them for any tokenizer."""
        arr = pa.array(texts, pa.large_string())
        n_docs = len(arr)
        doc_chars = np.maximum(pc.utf8_length(arr).to_numpy(zero_copy_only=False), 1).astype(np.float64)
        out = duplicate_pieces(pc.split_pattern(arr, "\n"), n_docs, doc_chars, "line")
        # Split on "\n\n": the empty pieces between longer runs are dropped as blank anyway.
        out.update(duplicate_pieces(pc.split_pattern(arr, "\n\n"), n_docs, doc_chars, "para"))
        if self.top_ngram or self.dup_ngram:
            if words is not None and any(w is not None for w in words):
                arr = pa.array([t if w is None else " ".join(w) for t, w in zip(texts, words)], pa.large_string())
            out.update(ngram_stats(arr, n_docs, doc_chars, sorted(self.top_ngram), sorted(self.dup_ngram)))
        return out

    def check_batch(self, texts: Sequence[str], words: Sequence[list[str] | None] | None = None) -> list[str | None]:
        if not len(texts):
            return []
        stats = self.stats(texts, words)
        reasons: list[str | None] = [None] * len(texts)
        undecided = np.ones(len(texts), dtype=bool)
        for name, threshold in self.rules():
            hit = undecided & (stats[name] > threshold)
            for i in np.flatnonzero(hit):
                reasons[i] = name
            undecided &= ~hit
        return reasons

