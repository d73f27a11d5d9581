"""Bad input files built for the tests that show how it is reported."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def corrupt_parquet(path: Path, bad_group: int) -> None:
    """Three row groups of 1,000 rows; row group ``bad_group``'s pages overwritten with noise
    (the footer stays valid, so the file opens)."""
    table = pa.table({"text": [f"document number {i} " * 20 for i in range(3000)], "n": list(range(3000))})
    pq.write_table(table, path, row_group_size=1000, compression="snappy")
    col = pq.ParquetFile(path).metadata.row_group(bad_group).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    raw = bytearray(path.read_bytes())
    mid = start + col.total_compressed_size // 2
    raw[mid : mid + 256] = bytes(b ^ 0x5A for b in raw[mid : mid + 256])
    path.write_bytes(bytes(raw))
