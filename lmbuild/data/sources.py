"""Readers that stream documents ``(id, text, metadata)`` out of one ``data.sources`` entry.

Every reader is a generator: nothing holds more than one file line, one Parquet record batch
or one Hugging Face row at a time, so ingest's memory does not grow with the corpus.

Ids are stable and unique per source: the ``id_field`` value when one is configured, else the
position (``file:line``, ``file:row``, ``file``, ``split:file:row``); either way prefixed with the
source's name, so two sources cannot collide unless they share a name and a position.

Bad input (a malformed JSON line, invalid UTF-8, a record without its text field, a null
text) is handled as the entry's ``on_error`` says: ``fail`` (the default) raises
:class:`UserError` with one line that names the file and line, or the config key (users fix
data, they should not have to read a traceback to find where); ``skip`` skips that record
or file and counts it under its reason (``invalid_json``, ``invalid_utf8``, ...), which
ingest writes to the raw manifest. Empty files are skipped and counted (``empty_file``) in
both modes: they hold nothing to fix, and a glob over a crawl output often meets a few.

Files are matched by :func:`lmbuild.data.files.match_files` (symlinks followed, each folder walked
and each real file read once) and opened by their content: a gzip, bz2 or xz file is
decompressed whatever its name (a gzip file named ``.jsonl`` is read, not reported as bad
UTF-8), and so is zstd (``.jsonl.zst``, as Dolma and RedPajama ship). A Parquet row group that cannot be decoded (corrupt
pages under a valid footer) is bad input like a bad line: ``skip`` skips the rest of that row
group and counts it (``corrupt_row_group``), its earlier rows being kept.

What this module does not do: recurse into JSON for nested text fields, or
check that ids are unique across files (ingest checks that once, on disk).
"""

from __future__ import annotations

import gzip
import json
import logging
import lzma
import os
from collections import Counter
from typing import Iterator

from lmbuild.data.files import match_files, open_binary, source_name
from lmbuild.data.hub import cannot_load, hf_stream
from lmbuild.errors import UserError

log = logging.getLogger(__name__)

Doc = tuple[str, str, dict]  # (id, text, metadata)


class Problems:
    """Bad input of one source: raised as one line (``on_error: fail``) or counted (``skip``)."""

    def __init__(self, src: dict, index: int, counts: Counter | None = None):
        self.skip = src.get("on_error", "fail") == "skip"
        self.index = index
        self.counts = Counter() if counts is None else counts

    def __call__(self, reason: str, message: str) -> None:
        """Count ``reason``, or raise ``message`` as a UserError when not skipping."""
        if not self.skip:
            raise UserError(message)
        self.counts[reason] += 1
        log.warning("skipped (%s): %s", reason, message)

    def empty(self, path: str) -> None:
        self.counts["empty_file"] += 1


def iter_source(src: dict, index: int, skipped: Counter | None = None, units: range | None = None) -> Iterator[Doc]:
    """All documents of ``data.sources[index]``, in a stable order, capped at ``max_docs``.
    What was skipped is counted into ``skipped`` (reason -> count). ``units``: only these
    files of the source (``lmbuild.data.groups``: local files in name order, a hub dataset's
    data files); a unit's documents and their ids are the same whichever job reads it.

    Raises UserError when the whole source (``units`` None) yields no document at all: an
    empty source is almost always a wrong path or field, and silently training on less is
    worse than stopping. (For a part, ingest checks the sum over parts.)
    """
    reader = _READERS[src["type"]]
    cap = src.get("max_docs")
    n = 0
    for doc in reader(src, index, source_name(src), Problems(src, index, skipped), units):
        if cap is not None and n >= cap:
            break
        n += 1
        yield doc
    if n == 0 and units is None:
        raise UserError(f"data.sources[{index}] ({src.get('path') or source_name(src)}): no documents")


def _files(src: dict, index: int, units: range | None = None) -> list[tuple[str, str]]:
    """``(path, name)`` of the files matching the entry's path (a file or a glob relative to
    the working directory), only those numbered in ``units`` when given; ``name`` is relative
    to the glob's folder and goes into ids."""
    found = match_files(src["path"], f"data.sources[{index}].path")
    if units is None:
        return found
    if units.stop > len(found):
        raise UserError(f"data.sources[{index}].path: {len(found)} files match {src['path']!r} now, fewer than when the plan was made: run snakemake again")
    return found[units.start : units.stop]


def _read_bytes(path: str, bad: Problems) -> bytes | None:
    """A whole file, decompressed by its content; None where it cannot be read (counted)."""
    try:
        with open_binary(path) as fh:
            return fh.read()
    except _CORRUPT as exc:
        return bad("unreadable_file", f"{path}: cannot read: {exc}")


# What a truncated or corrupt compressed file raises (corrupt zstd: an OSError).
_CORRUPT = (OSError, EOFError, gzip.BadGzipFile, lzma.LZMAError)


def _text_of(record: dict, field: str, where: str, index: int, bad: Problems) -> str | None:
    """The record's text, or None where it has none (after ``bad`` counted or raised)."""
    if field not in record:
        return bad("no_text_field", f"{where}: no field {field!r} (data.sources[{index}].text_field)")
    text = record[field]
    if not isinstance(text, str):
        return bad("text_not_a_string", f"{where}: field {field!r} is {type(text).__name__}, not a string")
    return text


def _id_of(record: dict, field: str | None, name: str, fallback: str, where: str, index: int, bad: Problems) -> str | None:
    if field is None:
        return f"{name}:{fallback}"
    value = record.get(field)
    if value is None:
        return bad("no_id", f"{where}: no id in field {field!r} (data.sources[{index}].id_field)")
    return f"{name}:{value}"


def _rest(record: dict, *fields: str | None) -> dict:
    """The record's other fields become the document's metadata (as datatrove's readers do)."""
    return {k: v for k, v in record.items() if k not in fields}


def read_jsonl(src: dict, index: int, name: str, bad: Problems, units: range | None = None) -> Iterator[Doc]:
    """One JSON object per line; blank lines are skipped. gzip, bz2 and xz files are
    decompressed (recognised by their first bytes, not their name).

    Lines are read one at a time, so memory holds one line (one document) however big the
    file; a 50 MB document is one 50 MB line.
    """
    text_field, id_field = src.get("text_field", "text"), src.get("id_field")
    for path, rel in _files(src, index, units):
        if os.path.getsize(path) == 0:
            bad.empty(path)
            continue
        try:
            with open_binary(path) as fh:
                for lineno, raw in enumerate(fh, 1):
                    where = f"{path}:{lineno}"
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        bad("invalid_utf8", f"{where}: invalid UTF-8 at byte {exc.start} of the line")
                        continue
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        bad("invalid_json", f"{where}: invalid JSON: {exc.msg} (column {exc.colno})")
                        continue
                    if not isinstance(record, dict):
                        bad("not_an_object", f"{where}: expected a JSON object, got {type(record).__name__}")
                        continue
                    text = _text_of(record, text_field, where, index, bad)
                    doc_id = _id_of(record, id_field, name, f"{rel}:{lineno}", where, index, bad)
                    if text is None or doc_id is None:
                        continue
                    yield doc_id, text, _rest(record, text_field, id_field)
        except _CORRUPT as exc:  # a truncated or corrupt compressed file
            bad("unreadable_file", f"{path}: cannot read: {exc}")


def read_parquet(src: dict, index: int, name: str, bad: Problems, units: range | None = None) -> Iterator[Doc]:
    """Parquet files read one record batch at a time; other columns become metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text_field, id_field = src.get("text_field", "text"), src.get("id_field")
    for path, rel in _files(src, index, units):
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            bad("unreadable_file", f"{path}: not a readable Parquet file: {_first_line(exc)}")
            continue
        names = pf.schema_arrow.names
        for field, key in ((text_field, "text_field"), (id_field, "id_field")):
            if field is not None and field not in names:
                raise UserError(f"{path}: no column {field!r} (data.sources[{index}].{key}); columns: {', '.join(names)}")
        ttype = pf.schema_arrow.field(text_field).type
        if not (pa.types.is_string(ttype) or pa.types.is_large_string(ttype) or pa.types.is_string_view(ttype)):
            raise UserError(f"{path}: column {text_field!r} has type {ttype}, not a string")
        start = 0  # row numbers (and so ids) follow the file, whatever was skipped
        for group in range(pf.num_row_groups):
            row, start = start, start + pf.metadata.row_group(group).num_rows
            batches = pf.iter_batches(batch_size=1024, row_groups=[group])
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as exc:  # corrupt pages under a valid footer
                    bad("corrupt_row_group", f"{path}: row group {group} (rows {row}-{start - 1}): cannot decode: {_first_line(exc)}")
                    break
                for record in batch.to_pylist():
                    where = f"{path}:row {row}"
                    row += 1
                    if record[text_field] is None:
                        bad("null_text", f"{where}: field {text_field!r} is null")
                        continue
                    doc_id = _id_of(record, id_field, name, f"{rel}:{row - 1}", where, index, bad)
                    if doc_id is not None:
                        yield doc_id, record[text_field], _rest(record, text_field, id_field)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def read_text(src: dict, index: int, name: str, bad: Problems, units: range | None = None) -> Iterator[Doc]:
    """Each file is one document, read whole (text files are documents, not corpora); a
    compressed file is decompressed as :func:`read_jsonl` does."""
    for path, rel in _files(src, index, units):
        raw = _read_bytes(path, bad)
        if raw is None:
            continue
        if not raw:
            bad.empty(path)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad("invalid_utf8", f"{path}: invalid UTF-8 at byte {exc.start}")
            continue
        yield f"{name}:{rel}", text, {}


def read_html(src: dict, index: int, name: str, bad: Problems, units: range | None = None) -> Iterator[Doc]:
    """Each HTML file is one document: its main text, extracted with Resiliparse.

    Resiliparse (``extract_plain_text(main_content=True)``) drops navigation, headers,
    footers, scripts and styles and keeps the text's paragraphs; it reads the charset
    from the page (falling back to detection), so a page need not be UTF-8. Metadata keeps
    the page's ``<title>``. A page with no main text is skipped and counted (``no_main_text``)
    in both ``on_error`` modes: a redirect stub or an index page is not bad input.

    What it does not do: fetch URLs, read WARC files, or keep tables and code blocks as
    markup (their text is kept).
    """
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree

    for path, rel in _files(src, index, units):
        raw = _read_bytes(path, bad)
        if raw is None:
            continue
        if not raw:
            bad.empty(path)
            continue
        tree = HTMLTree.parse(bytes_to_str(raw, detect_encoding(raw)))
        text = extract_plain_text(tree, main_content=True, alt_texts=False, links=False)
        if not text.strip():
            bad.counts["no_main_text"] += 1
            continue
        title = tree.title.strip() if tree.title else ""
        yield f"{name}:{rel}", text.strip() + "\n", {"title": title}


def read_hf(src: dict, index: int, name: str, bad: Problems, units: range | None = None) -> Iterator[Doc]:
    """A Hugging Face dataset, streamed (no full download), ``path`` being its name or folder;
    ``units``: only these of its data files, each read as ``datasets``' own shard of the stream.

    A row's id (without ``id_field``) is ``split:file:row``, the data file's number and the row
    within it, so it does not depend on which job reads the file.
    """
    text_field, id_field, split = src.get("text_field", "text"), src.get("id_field"), src.get("split", "train")
    hf_name = src["path"]
    ds = hf_stream(src, index)
    n = ds.num_shards
    planned = src.get("data_files")
    if planned is not None and n != planned:
        raise UserError(f"data.sources[{index}] ({hf_name}): {n} data files now, {planned} when the plan was made: run snakemake again")
    for f in range(n) if units is None or planned is None else units:
        rows = iter(ds.shard(num_shards=n, index=f, contiguous=True) if n > 1 else ds)
        row = 0
        while True:
            try:
                record = next(rows)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001
                raise cannot_load(src, index, exc) from None
            where = f"data.sources[{index}] ({hf_name}, split {split}): data file {f}, row {row}"
            row += 1
            doc_id = _id_of(record, id_field, name, f"{split}:{f}:{row - 1}", where, index, bad)
            text = _text_of(record, text_field, where, index, bad)
            if doc_id is not None and text is not None:
                yield doc_id, text, _rest(record, text_field, id_field)


def read_embedded(src: dict, index: int, name: str, bad: Problems, units: range | None = None) -> Iterator[Doc]:
    from lmbuild.data.embedded import iter_embedded

    for rel, text, meta in iter_embedded(src.get("parts")):
        yield f"{name}:{rel}", text, meta


_READERS = {
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "text": read_text,
    "html": read_html,
    "hf": read_hf,
    "embedded": read_embedded,
}
