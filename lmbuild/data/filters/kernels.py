"""NumPy and Arrow kernels of the Gopher repetition statistics (lmbuild.data.filters.gopher_repetition):
duplicate lines and paragraphs, and the top and repeated word n-grams, for a batch of documents
at once. Integer work on ids from Arrow's hash encoding: no n-gram strings, no sort, no Python
loop over words. They do not apply thresholds: the filter does.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Keys counted per hash table in :func:`_count`: bigger tables cost memory (Arrow's hash
# table takes ~30-60 bytes a distinct key) and miss the CPU caches, for no gain.
COUNT_CHUNK = 1 << 20


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


def duplicate_pieces(pieces: pa.Array, n_docs: int, doc_chars: np.ndarray, what: str) -> dict[str, np.ndarray]:
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


def ngram_stats(arr: pa.Array, n_docs: int, doc_chars: np.ndarray, sizes: list[int], dup_sizes: list[int]) -> dict[str, np.ndarray]:
    """``top_{n}_gram`` for n in ``sizes`` and ``dup_{n}_gram`` for n in ``dup_sizes`` of the
    documents in ``arr`` (words: whitespace-separated), each over ``doc_chars``."""
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

