"""The vendored real-text excerpts of tests/fixtures (provenance and licences in its README.md).

Tests read these instead of ../shared/data, so a fresh clone runs every test. What this does not
do: fetch anything, or hold the full data sets (the benchmarks read those).
"""

from __future__ import annotations

import gzip
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def path(name: str) -> Path:
    return FIXTURES / name


def text(name: str) -> str:
    """The excerpt's text, decompressed where its name ends in .gz."""
    data = path(name).read_bytes()
    return (gzip.decompress(data) if name.endswith(".gz") else data).decode("utf-8")


def unpack(name: str, folder: Path) -> Path:
    """The excerpt as a plain file in ``folder`` (for code that takes a path), named without .gz."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / name.removesuffix(".gz")
    out.write_text(text(name), encoding="utf-8")
    return out
