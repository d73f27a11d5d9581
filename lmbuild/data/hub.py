"""Hugging Face datasets as ``data.sources`` entries: the stream, and how many data files it has.

Shared by the plan (stage raw fans out over a dataset's data files, counted when the workflow
is parsed: lmbuild.build.locate) and raw's reader (lmbuild.data.sources.read_hf), so both see
the same files. It imports ``datasets`` only when called. What it does not do: read a row.
"""

from __future__ import annotations

from lmbuild.errors import UserError


def hf_stream(src: dict, index: int):
    """A ``data.sources`` hf entry as a streaming ``datasets.IterableDataset`` (no download).

    Any failure to load is the user's to fix (name, split, network): one UserError line
    rather than a traceback from deep inside ``datasets``."""
    split = src.get("split", "train")
    try:
        import datasets

        # The commit the parse resolved (lmbuild.build.graph) when the hub was reachable, else the revision as given.
        revision = src.get("resolved_revision") or src.get("revision")
        return datasets.load_dataset(src["path"], src.get("hf_config"), split=split, streaming=True, revision=revision)
    except Exception as exc:  # noqa: BLE001 (datasets raises many types; all mean "cannot load")
        raise cannot_load(src, index, exc) from None


def hf_data_files(src: dict, index: int) -> int:
    """How many data files (``datasets``' shards of the stream) the dataset has: the units
    stage raw fans out over (``lmbuild.data.groups``)."""
    return hf_stream(src, index).num_shards


def cannot_load(src: dict, index: int, exc: Exception) -> UserError:
    detail = (str(exc).strip().splitlines() or [""])[0][:300]
    return UserError(
        f"data.sources[{index}]: cannot load Hugging Face dataset {src['path']!r} "
        f"(hub unreachable? config={src.get('hf_config')!r}, split={src.get('split', 'train')!r}): {type(exc).__name__}: {detail}"
    )
