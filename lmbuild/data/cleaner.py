"""The per-document work of stage ``cleaned`` (lmbuild.data.cleaned) on one record batch of a raw
shard: normalise, filter (lmbuild.data.filters), score with the quality classifier and the named
ones (lmbuild.data.classifiers), redact PII;
per source where ``data.clean.per_source`` says so (lmbuild.data.overrides).

Each document goes through, in order, stopping at the first drop:

* every document with a URL (metadata ``url``, or the field ``data.clean.url.field`` names):
  RefinedWeb's URL rules (:class:`filters.URLFilter`) first, as FineWeb runs them before
  extraction; a document without one is counted (``url_missing``) and not checked.
* prose (metadata ``kind`` != ``"code"``): length, language ID, Gopher repetition, Gopher
  quality, C4 (may remove lines), FineWeb; the order FineWeb's pipeline uses, with the
  cheap length rule first; then C4's bad words when on (:class:`filters.BadWordsFilter`, by
  the document's language). Language ID runs before the expensive rules so that every
  prose document, dropped or not, carries its label.
* code: length, then StarCoder's file rules (:class:`filters.CodeFilter`). Language ID
  labels code by its comments, and the prose rules read ``pass``/``else:`` lines and
  short lines as spam: on CPython 3.11's standard library Gopher's repetition rules alone
  would drop 25 files that pass the length limits, among them ``contextlib.py``.

The word rules (Gopher, FineWeb's newline ratio) split a document into words with the
segmenter of its language (``data.clean.word_segmenters``, lmbuild.data.lang: Japanese,
Chinese, Thai and Korean have dictionary segmenters; other languages split on whitespace).

What this module does not do: read or write shards, keep dropped documents or count drops
(the stage does, from the reasons returned here), or rank by ``top_fraction`` (per shard, once
it is written).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa

from lmbuild.data.filters import (
    BadWordsFilter,
    C4Filter,
    CodeFilter,
    FineWebFilter,
    Filter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageFilter,
    LengthFilter,
    PIIFormatter,
    URLFilter,
    normalize,
)
from lmbuild.data.lang import segmenter
from lmbuild.data.overrides import for_source
from lmbuild.data.classifiers import Classifiers, columns
from lmbuild.data.quality import LEGACY, score
from lmbuild.errors import UserError

# The kept rows: the raw schema + fastText's label (null for code) (+ the classifier's score).
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("metadata", pa.string()),
        ("lang", pa.string()),
        ("lang_score", pa.float32()),
    ]
)
QUALITY_SCHEMA = SCHEMA.append(pa.field("quality_score", pa.float32()))
REPETITION_CHARS = 256 << 10  # text per vectorised repetition call: fastest measured (64k-4M)


def schema(settings: dict) -> pa.Schema:
    """The kept rows' schema: :data:`SCHEMA` and a float32 column per classifier score (lmbuild.data.classifiers)."""
    out = SCHEMA
    for name in columns(settings):
        out = out.append(pa.field(name, pa.float32()))
    return out


class Cleaner:
    """The configured filters for one process, applied to record batches."""

    def __init__(self, settings: dict, classifier: str | None = None, where: str = "data.clean"):
        """``classifier``: the quality_model artifact's path, when cleaning scores with it."""
        self.form = settings["normalization"]
        url = settings["url"]
        self.url = URLFilter.from_settings(url, f"{where}.url") if url["enabled"] else None
        self.url_field = url["field"]
        bad = settings["badwords"]
        self.badwords = BadWordsFilter(bad["keep_fraction"]) if bad["enabled"] else None
        self.segmenters = {lang: name for lang, name in settings["word_segmenters"].items() if name != "whitespace"}
        q = settings["quality"]
        if q["enabled"] and classifier is None:
            raise UserError("data.clean.quality.enabled needs the quality_model artifact as an input")
        self.classifier = str(Path(classifier) / LEGACY) if q["enabled"] else None
        self.named = Classifiers(settings, classifier)
        self.schema = schema(settings)
        self.quality_threshold = q["threshold"]
        self.length = LengthFilter(settings["min_chars"], settings["max_chars"])
        lang = settings["lang"]
        self.lang = LanguageFilter(lang["keep"], lang["threshold"])
        rep = settings["gopher_repetition"]
        self.repetition = GopherRepetitionFilter.from_settings(rep) if rep["enabled"] else None
        # Per-document prose filters after repetition, in FineWeb's order.
        self.prose: list[Filter] = [
            cls.from_settings(settings[name])
            for name, cls in (("gopher_quality", GopherQualityFilter), ("c4", C4Filter), ("fineweb", FineWebFilter))
            if settings[name]["enabled"]
        ]
        self.code = CodeFilter.from_settings(settings["code"]) if settings["code"]["enabled"] else None
        self.pii = PIIFormatter.from_settings(settings["pii"]) if settings["pii"]["enabled"] else None

    def _repetition(self, texts: list[str], words: list[list[str] | None]) -> list[str | None]:
        out: list[str | None] = []
        start = size = 0
        for i, t in enumerate(texts):
            size += len(t)
            if size >= REPETITION_CHARS or i == len(texts) - 1:
                out += self.repetition.check_batch(texts[start : i + 1], words[start : i + 1])
                start, size = i + 1, 0
        return out

    def words(self, text: str, lang: str | None) -> list[str] | None:
        """The document's words by its language's segmenter; None: whitespace-separated."""
        name = self.segmenters.get(lang)
        return None if name is None else segmenter(name)(text)

    def batch(self, batch: pa.RecordBatch, edits: Counter) -> tuple[pa.RecordBatch, list[str | None], list, list, list[str]]:
        """``(kept rows, reason per row, lang per row, score per row, edited text per row)``.

        ``edits`` also counts the documents split by each segmenter (``words_<segmenter>``)."""
        texts = [normalize(t, self.form) for t in batch.column("text").to_pylist()]
        n = len(texts)
        metas = [json.loads(m) for m in batch.column("metadata").to_pylist()]
        kinds = [m.get("kind") for m in metas]
        reasons = [self.length.check(t) for t in texts]
        if self.url is not None:
            for i, m in enumerate(metas):
                url = m.get(self.url_field)
                if isinstance(url, str) and url:
                    reasons[i] = self.url.check(url) or reasons[i]
                else:
                    edits["url_missing"] += 1
        langs: list[str | None] = [None] * n
        scores: list[float | None] = [None] * n
        prose = [i for i in range(n) if reasons[i] is None and kinds[i] != "code"]
        for i in prose:
            langs[i], scores[i] = self.lang.identify(texts[i])
            reasons[i] = self.lang.decide(langs[i], scores[i])
        prose = [i for i in prose if reasons[i] is None]
        words: list[list[str] | None] = [None] * n
        for i in prose:
            words[i] = self.words(texts[i], langs[i])
            if words[i] is not None:
                edits[f"words_{self.segmenters[langs[i]]}"] += 1
        if self.repetition is not None and prose:
            for i, r in zip(prose, self._repetition([texts[i] for i in prose], [words[i] for i in prose])):
                reasons[i] = r
            prose = [i for i in prose if reasons[i] is None]
        for f in self.prose:
            for i in prose:
                text, reasons[i] = f.apply(texts[i], words[i])
                if reasons[i] is None and len(text) != len(texts[i]):
                    edits[f"{f.name}_chars_removed"] += len(texts[i]) - len(text)
                    texts[i] = text
                    if words[i] is not None:  # the next filters count the edited text's words
                        words[i] = self.words(text, langs[i])
            prose = [i for i in prose if reasons[i] is None]
        if self.badwords is not None:
            for i in prose:
                flagged = self.badwords.flagged(texts[i], langs[i])
                if flagged is None:
                    edits["badwords_no_list"] += 1
                elif flagged and self.badwords.kept_anyway(texts[i]):
                    edits["badwords_kept"] += 1
                elif flagged:
                    reasons[i] = "badwords"
            prose = [i for i in prose if reasons[i] is None]
        quality: list[float | None] = [None] * n
        if self.classifier is not None and prose:
            for i, q in zip(prose, score(self.classifier, [texts[i] for i in prose])):
                quality[i] = q
                if self.quality_threshold is not None and q < self.quality_threshold:
                    reasons[i] = "quality_score"
            prose = [i for i in prose if reasons[i] is None]
        named: dict[str, list[float | None]] = {}
        if self.named:
            by_column, drops = self.named.apply([texts[i] for i in prose])
            for col, values in by_column.items():
                named[col] = [None] * n
                for i, v in zip(prose, values):
                    named[col][i] = v
            for i, r in zip(prose, drops):
                reasons[i] = r
        if self.code is not None:
            for i in range(n):
                if reasons[i] is None and kinds[i] == "code":
                    reasons[i] = self.code.check(texts[i])
        keep = [i for i, r in enumerate(reasons) if r is None]
        if self.pii is not None:
            for i in keep:
                texts[i], counts = self.pii.format(texts[i])
                edits.update(counts)
        idx = pa.array(keep, pa.int64())
        columns = [
            batch.column("id").take(idx),
            pa.array([texts[i] for i in keep], pa.string()),
            batch.column("source").take(idx),
            batch.column("metadata").take(idx),
            pa.array([langs[i] for i in keep], pa.string()),
            pa.array([scores[i] for i in keep], pa.float32()),
        ]
        if self.classifier is not None:
            columns.append(pa.array([quality[i] for i in keep], pa.float32()))
        columns += [pa.array([values[i] for i in keep], pa.float32()) for values in named.values()]
        kept = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        return kept, reasons, langs, scores, texts


class SourceCleaners:
    """The stage's :class:`Cleaner`, and one per ``data.clean.per_source`` entry
    (lmbuild.data.overrides): each batch is split by its ``source`` column, each part cleaned with
    its source's settings, and the results put back in the batch's order. Same interface as
    :class:`Cleaner`; without per-source settings it is the stage's Cleaner alone."""

    def __init__(self, settings: dict, classifier: str | None = None):
        self.stage = Cleaner(settings, classifier)
        self.classifier = self.stage.classifier
        self.by_source = {name: Cleaner(for_source(settings, name), classifier, f"data.clean.per_source.{name}") for name in settings["per_source"]}

    def batch(self, batch: pa.RecordBatch, edits: Counter):
        if not self.by_source:
            return self.stage.batch(batch, edits)
        groups: dict[str | None, list[int]] = {}
        for i, name in enumerate(batch.column("source").to_pylist()):
            groups.setdefault(name if name in self.by_source else None, []).append(i)
        if len(groups) == 1:
            (name,) = groups
            return self.by_source.get(name, self.stage).batch(batch, edits)
        n = batch.num_rows
        reasons: list = [None] * n
        langs: list = [None] * n
        scores: list = [None] * n
        texts: list = [None] * n
        parts, kept_rows = [], []
        for name, rows in groups.items():
            kept, r, lg, sc, tx = self.by_source.get(name, self.stage).batch(batch.take(pa.array(rows, pa.int64())), edits)
            for j, i in enumerate(rows):
                reasons[i], langs[i], scores[i], texts[i] = r[j], lg[j], sc[j], tx[j]
            parts.append(kept)
            kept_rows += [i for j, i in enumerate(rows) if r[j] is None]
        order = sorted(range(len(kept_rows)), key=kept_rows.__getitem__)
        table = pa.Table.from_batches(parts, schema=parts[0].schema).take(pa.array(order, pa.int64()))
        kept = pa.RecordBatch.from_arrays([c.combine_chunks() for c in table.columns], schema=table.schema)
        return kept, reasons, langs, scores, texts

