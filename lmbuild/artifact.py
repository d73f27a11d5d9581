"""Atomic artifact directories and their manifests.

An artifact is a directory ``artifacts/<stage>/<key>/``. It is written in a temporary
sibling and renamed into place only when complete, with ``manifest.json`` written last:
an address that exists and holds a manifest is complete. A stage killed halfway leaves
only a ``.tmp-*`` sibling, which the next attempt removes.

This module does not decide keys (see ``lmbuild.plan``) and never deletes a complete
artifact.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

from lmbuild.errors import UserError

MANIFEST = "manifest.json"


def read_manifest(artifact: Path) -> dict:
    """The manifest of a complete artifact."""
    return json.loads((Path(artifact) / MANIFEST).read_text())


def write_json(path: Path, obj) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes ``final`` when the block succeeds.

    On an exception the temporary directory is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            # Snakemake removes an output before rerunning its job; anything still here is
            # an incomplete leftover (it would have a manifest otherwise and not be rebuilt).
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def parquet_shards(folder: Path, stage: str) -> list[Path]:
    """The ``shard-*.parquet`` files of a data artifact, in order; UserError if there are none."""
    paths = sorted(Path(folder).glob("shard-*.parquet"))
    if not paths:
        raise UserError(f"{folder}: no shard-*.parquet files (not a {stage} artifact?)")
    return paths
