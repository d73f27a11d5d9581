"""Vectorised word n-gram hashing, MinHash signatures and LSH band keys (numpy, no per-word Python).

A batch of documents (an Arrow string column) is hashed as one byte buffer:

1. normalise bytes: ASCII lowercase (after ``utf8_lower``), ASCII punctuation either turned into
   spaces (MinHash, as datatrove's ``simplify_text``) or deleted (decontamination, as lm-eval's
   ``Janitor.normalize_string`` and the GPT-3 paper's 13-gram overlap check do), runs of digits
   collapsed to one ``0`` (datatrove's ``norm_numbers``);
2. words = maximal runs of non-whitespace bytes, never crossing a document boundary;
3. a word's hash is a polynomial hash of its bytes computed from prefix sums (one ``cumsum``
   over the buffer, wrapping mod 2^64), finished with the splitmix64 mixer;
4. an n-gram's hash combines its n word hashes with fixed odd multipliers, mixed again.

MinHash (Broder 1997, "On the resemblance and containment of documents") keeps, for each of
``bands * rows`` hash functions, the minimum over a document's shingles; two documents agree on
one value with probability equal to the Jaccard similarity of their shingle sets. LSH splits
the signature into ``bands`` bands of ``rows`` values: two documents become a candidate pair
when a whole band agrees, with probability 1 - (1 - J^rows)^bands (threshold near
(1/bands)^(1/rows) ~= 0.72 for the defaults). The defaults are datatrove's ``MinhashConfig``
(5-gram word shingles, 14 bands x 8 hashes = 112 permutations), the setting used for
FineWeb; Lee et al. 2022 ("Deduplicating Training Data Makes Language Models Better") used
MinHash with 5-grams and 9,000 permutations in 450 bands of 20 for C4.

The permutations are multiply-shift hashes ``(a * x + b) >> 32`` mod 2^64 with random odd
``a`` (Dietzfelbinger et al. 1997): a 2-universal family into 32 bits that numpy evaluates
with wrapping uint64 arithmetic, where datatrove's ``(a * x + b) mod (2^61 - 1)`` would need
128-bit products.

What this module does not do: Unicode punctuation or diacritic folding (only ASCII
punctuation is removed), word segmentation for languages written without spaces, or exact
Jaccard verification of candidate pairs.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from threading import Lock
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

U64 = np.uint64
_P = U64(0x100000001B3)  # FNV prime: odd, so invertible mod 2^64
_P_INV = U64(pow(0x100000001B3, -1, 1 << 64))
_GRAM_MULT = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD,
     0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
    dtype=U64,
)
_BAND_MULT = _GRAM_MULT
_PUNCT = np.zeros(256, bool)
_PUNCT[np.frombuffer(b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", np.uint8)] = True
_SPACE = np.zeros(256, bool)
_SPACE[np.frombuffer(b" \t\n\r\x0b\x0c", np.uint8)] = True
_DIGIT = np.zeros(256, bool)
_DIGIT[np.frombuffer(b"0123456789", np.uint8)] = True
_UPPER_TO_LOWER = np.arange(256, dtype=np.uint8)
_UPPER_TO_LOWER[65:91] += 32
# One lookup instead of three passes over the buffer (MinHash's normalisation): ASCII lowercase,
# punctuation -> space, digit -> "0".
_SPACE_PUNCT_DIGITS = _UPPER_TO_LOWER.copy()
_SPACE_PUNCT_DIGITS[_PUNCT] = 32
_SPACE_PUNCT_DIGITS[_DIGIT] = 48

_pow_cache: dict[str, np.ndarray] = {"p": np.ones(1, U64), "pinv": np.ones(1, U64)}
_pow_lock = Lock()


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """p^k and p^-k mod 2^64 for k < n (cached, grown by doubling; threads share it)."""
    with _pow_lock:
        p, pinv = _pow_cache["p"], _pow_cache["pinv"]
        if len(p) < n:
            size = max(n, 2 * len(p))
            with np.errstate(over="ignore"):
                p = np.cumprod(np.r_[U64(1), np.full(size - 1, _P, U64)], dtype=U64)
                pinv = np.cumprod(np.r_[U64(1), np.full(size - 1, _P_INV, U64)], dtype=U64)
            _pow_cache["p"], _pow_cache["pinv"] = p, pinv
        return p[:n], pinv[:n]


def mix64(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the 64 output bits. ``inplace``
    overwrites ``x`` (one temporary instead of five)."""
    x = x if inplace else x.copy()
    t = x >> U64(30)
    x ^= t
    x *= U64(0xBF58476D1CE4E5B9)
    np.right_shift(x, U64(27), out=t)
    x ^= t
    x *= U64(0x94D049BB133111EB)
    np.right_shift(x, U64(31), out=t)
    x ^= t
    return x


def _buffer(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a lowercased string column and its n+1 offsets (zero copy)."""
    arr = pc.utf8_lower(texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts)
    arr = arr.cast(pa.large_string()) if arr.type == pa.string() else arr
    arr = pc.fill_null(arr, "")
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    buf = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    start = int(offsets[0]) if len(offsets) else 0
    end = int(offsets[-1]) if len(offsets) else 0
    return buf[start:end], offsets - start


def word_hashes(texts: pa.Array, punctuation: str = "space", numbers: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every word, index of its document), in document order.

    punctuation: "space" turns ASCII punctuation into word breaks (datatrove), "delete" removes
    it so that "don't" is one word (lm-eval's Janitor). numbers: collapse digit runs to one "0".
    """
    with np.errstate(over="ignore"):
        buf, offsets = _buffer(texts)
        # Bytes to delete; offsets follow through the cumulative count of kept bytes.
        drop = None
        if punctuation == "delete":
            buf = _UPPER_TO_LOWER[buf]
            drop = _PUNCT[buf]
            if numbers:
                buf = np.where(_DIGIT[buf], np.uint8(48), buf)
        else:
            buf = (_SPACE_PUNCT_DIGITS if numbers else np.where(_PUNCT, np.uint8(32), _UPPER_TO_LOWER).astype(np.uint8))[buf]
        if numbers:
            digit = buf == 48  # after the mapping a "0" is a digit and only a digit is
            # a digit after a digit of the same document: all but the first of a run go
            dup = np.zeros(len(buf), bool)
            np.logical_and(digit[1:], digit[:-1], out=dup[1:])
            dup[offsets[:-1][offsets[:-1] < len(buf)]] = False
            drop = dup if drop is None else drop | dup
        if drop is not None:
            gone = np.flatnonzero(drop)  # few (punctuation, digit runs): no pass over a cumsum
            if len(gone):
                offsets = offsets - np.searchsorted(gone, offsets)
                buf = np.delete(buf, gone)
        n = len(buf)
        # Word bounds from the transitions of is_word; a document boundary inside a run of word
        # bytes (a document that ends and the next that starts with a word) splits it.
        is_word = (~_SPACE[buf]).view(np.int8)
        step = np.diff(is_word, prepend=np.int8(0), append=np.int8(0))
        starts = np.flatnonzero(step == 1)
        ends = np.flatnonzero(step == -1)
        inner = np.unique(offsets[1:-1])  # empty documents repeat an offset
        inner = inner[(inner > 0) & (inner < n)]
        split = inner[(is_word[inner - 1] == 1) & (is_word[inner] == 1)] if len(inner) else inner
        if len(split):  # merged in place of a sort: both sides are sorted, split is small
            starts = np.insert(starts, np.searchsorted(starts, split), split)
            ends = np.insert(ends, np.searchsorted(ends, split), split)
        p, pinv = _powers(n + 1)
        prefix = np.empty(n + 1, U64)
        prefix[0] = 0
        np.multiply(buf, p[:n], out=prefix[1:])
        np.cumsum(prefix[1:], out=prefix[1:])
        h = prefix[ends]
        h -= prefix[starts]
        h *= pinv[starts]
        h += (ends - starts).astype(U64)
        docs = np.searchsorted(offsets, starts, side="right") - 1
        return mix64(h, inplace=True), docs


def ngram_hashes(words: np.ndarray, docs: np.ndarray, n: int, short: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every run of n consecutive words inside one document, with its document.

    short: a document with 1..n-1 words gets one n-gram of all its words (so that short
    copies still match), as opposed to none.
    """
    m = len(words)
    with np.errstate(over="ignore"):
        if m >= n:
            k = m - n + 1
            acc = np.full(k, U64(n * (n - 1) // 2))  # the "+ j" of every position, added once
            tmp = np.empty(k, U64)
            for j in range(n):  # n is 5 or 13: a loop over positions in the n-gram, not over words
                np.multiply(words[j : j + k], _GRAM_MULT[j % len(_GRAM_MULT)], out=tmp)
                acc += tmp
            valid = docs[: k] == docs[n - 1 :]
            grams, gdocs = mix64(acc[valid], inplace=True), docs[:k][valid]
        else:
            grams, gdocs = np.zeros(0, U64), np.zeros(0, np.int64)
        if short:
            counts = np.bincount(docs, minlength=int(docs.max()) + 1 if m else 0)
            few = np.flatnonzero((counts > 0) & (counts < n))
            if len(few):
                sel = np.isin(docs, few)
                d = docs[sel]
                acc = np.zeros(len(few), U64)
                pos = np.arange(len(d)) - np.searchsorted(d, d)  # position of the word in its document
                np.add.at(acc, np.searchsorted(few, d), words[sel] * _GRAM_MULT[pos % len(_GRAM_MULT)] + pos.astype(U64))
                grams = np.r_[grams, mix64(acc)]
                gdocs = np.r_[gdocs, few]
                order = np.argsort(gdocs, kind="stable")
                grams, gdocs = grams[order], gdocs[order]
        return grams, gdocs


class MinHasher:
    """MinHash signatures and LSH band keys for batches of documents.

    Does not: decide duplicates (the band keys go to a DuckDB query, see ``lmbuild.data.deduplicated``).
    """

    CHUNK = 1 << 15  # shingles per (CHUNK x permutations) block: ~29 MB of uint64 at 112

    def __init__(self, ngram: int = 5, bands: int = 14, rows: int = 8, seed: int = 1):
        self.ngram, self.bands, self.rows = ngram, bands, rows
        rng = np.random.default_rng(seed)
        k = bands * rows
        self.a = rng.integers(0, 1 << 63, size=k, dtype=np.uint64) * U64(2) + U64(1)  # odd
        self.b = rng.integers(0, 1 << 63, size=k, dtype=np.uint64)

    def signatures(self, texts: pa.Array) -> np.ndarray:
        """(documents, bands * rows) uint32 signatures; an empty document gets all 2^32 - 1."""
        words, docs = word_hashes(texts, punctuation="space", numbers=True)
        sh, sdocs = ngram_hashes(words, docs, self.ngram)
        sig = np.full((len(texts), len(self.a)), np.iinfo(np.uint32).max, np.uint32)
        # One block reused for every chunk: a fresh 29 MB array per chunk cost page faults.
        block = np.empty((len(self.a), min(self.CHUNK, len(sh))), U64)
        with np.errstate(over="ignore"):
            for lo in range(0, len(sh), self.CHUNK):
                x, d = sh[lo : lo + self.CHUNK], sdocs[lo : lo + self.CHUNK]
                # (permutations, shingles): each reduceat segment is contiguous in memory, 4x
                # faster than the transposed layout. The shift comes after the min: x >> 32 is
                # monotone, so min(h) >> 32 == min(h >> 32) at 1/len(first) of the cost.
                vals = block[:, : len(x)]
                np.multiply(self.a[:, None], x[None, :], out=vals)
                vals += self.b[:, None]
                first = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
                mins = (np.minimum.reduceat(vals, first, axis=1) >> U64(32)).astype(np.uint32).T
                rows = d[first]
                # A document split across two chunks: combine with what the last chunk found.
                sig[rows] = np.minimum(sig[rows], mins)
        return sig

    def keyed(self, batches: Iterable[pa.RecordBatch], threads: int = 1) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        """(batch, its band keys) for every batch of ``batches``, in order, hashed by ``threads``
        threads (numpy and pyarrow release the GIL on whole arrays); at most 2 x threads
        batches are in flight, so memory stays that of a few batches."""
        work = lambda b: (b, self.band_keys(self.signatures(b.column("text"))))  # noqa: E731
        if threads <= 1:
            yield from map(work, batches)
            return
        with ThreadPoolExecutor(threads) as pool:
            pending: deque = deque()
            for batch in batches:
                pending.append(pool.submit(work, batch))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(documents, bands) uint64: one hash per band of ``rows`` signature values."""
        s = sig.reshape(len(sig), self.bands, self.rows).astype(U64)
        acc = np.zeros(s.shape[:2], U64)
        with np.errstate(over="ignore"):
            for j in range(self.rows):
                acc += (s[:, :, j] + U64(1)) * _BAND_MULT[j % len(_BAND_MULT)]
            return mix64(acc)


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2.4's hash-based np.unique took 10x longer on 1M uint64."""
    x = np.sort(x)
    return x[np.r_[True, x[1:] != x[:-1]]] if len(x) else x
