"""The artifact graph: every artifact's address, and what its job needs to know.

An artifact's key is a hash of four things, canonically serialised (``lmbuild.build.keys``):
  1. the stage's own settings (its part of the validated config: defaults filled in, numbers
     coerced to one type, so key order and number notation never matter),
  2. the hash of the code that builds it (its code set: lmbuild.build.codeset),
  3. the keys of its inputs,
  4. the content of the local files it reads (source files, a pretrained tokenizer or model
     folder, evaluation data), by sha256 (``lmbuild.build.filestate``; which settings are paths:
     each stage's ``locate`` hook, lmbuild.build.locate).
Keys chain: a change anywhere changes every key downstream and no key upstream, and going
back to an earlier config finds the earlier artifacts at their addresses.

Local paths are not part of a key: in the settings that are hashed, each path is replaced by
the content it names (``located`` patches put the path back for the job), so a corpus that is
copied, touched or moved keeps its keys. A job learns its settings from the *job spec* that
the parse writes (:meth:`Plan.write_specs`); the rules pass Snakemake only the spec's path,
which changes exactly when the key does, so Snakemake's params trigger cannot disagree with
the keys.

Every row of the stage table (lmbuild.build.stages) is planned the same way; what is particular
to a stage comes from its row's hooks. What this module does not do: run anything, look inside
artifacts, or name a stage.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import lru_cache
from pathlib import Path

from lmbuild.build.codeset import code_files as _code_files, file_digest, files_hash
from lmbuild.build.filestate import StateCache
from lmbuild.build.keys import KEY_LEN, apply_patches, canonical, digest  # noqa: F401 (re-exported)
from lmbuild.build.locate import locate
from lmbuild.build.stages import ENCODER_ONLY, ROOT, STAGES, is_encoder  # noqa: F401 (re-exported)
from lmbuild.build.sweep import expand
from lmbuild.build.variants import variant_configs
from lmbuild.errors import UserError


@lru_cache(maxsize=None)
def code_files(stage_name: str, entry: str | None = None) -> tuple[str, ...]:
    """The stage's code set (lmbuild.build.codeset): its scripts (``entry``: an encoder's own
    entry script instead, ``Stage.entry``), every module they reach, its data files."""
    stage = STAGES[stage_name]
    return _code_files(tuple(stage.entry_paths(entry)), stage.files)


@lru_cache(maxsize=None)
def code_hash(stage_name: str, entry: str | None = None) -> str:
    return files_hash(code_files(stage_name, entry))


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
    parts: list["Part"] = dataclasses.field(default_factory=list)  # its fan-out parts (Stage.parts), in order

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


@dataclasses.dataclass
class Part:
    """A fan-out part: a store entry of its own at ``<store>/_parts/<stage>/<key>``, keyed by what it
    reads (its settings, its inputs' keys: other parts or artifacts), its stage's code, never by its
    position in the stage, so that the artifacts of many builds share it (Stage.parts)."""

    stage: str
    key: str
    path: str
    settings: dict
    inputs: dict  # name -> Part or Artifact
    code_hash: str
    code_files: tuple[str, ...] = ()
    located: list = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)  # what the gather needs, outside the key

    def spec(self) -> dict:
        # The code by its hash only: the gather's manifest names the files (a build of 10,000
        # parts would write their digests 10,000 times).
        lineage = {"code_hash": self.code_hash, "inputs": {n: {"stage": a.stage, "key": a.key, "path": a.path} for n, a in sorted(self.inputs.items())}}
        return {"stage": f"{self.stage}_part", "key": self.key, "settings": self.settings, "located": self.located, "lineage": lineage}


PARTS = "_parts"  # <store>/_parts/<stage>/<part key> (lmbuild.store.gc keeps what complete artifacts list)


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

    ``variants``: name -> the Plan of each of ``config['variants']`` and of the sweep's runs
    (lmbuild.build.variants, lmbuild.build.sweep); a stage's ``more_inputs`` hook takes artifacts
    from them (a ``model.source: {variant: ...}``). ``get`` finds the artifacts of the base and of
    every variant. ``state``: the file-hash cache (in memory when None; the workflow keeps one on
    disk). A ``build_scope`` stage (the sweep report) is planned for the base only.
    """

    def __init__(self, config: dict, name: str | None = None, _shared: tuple | None = None, state: StateCache | None = None):
        self.config = config
        self.name = name
        self.root = config["artifacts"]
        self.artifacts: dict[str, Artifact] = {}
        # The sweep's runs (lmbuild.build.sweep): variants that the sweep report compares, not the base's.
        self.sweep_runs = expand(config) if _shared is None else {}
        # (variant configs, variant plans built so far, file-hash cache), shared with the variants.
        self._configs, self.variants, self.state = _shared or (variant_configs(config, sweep_runs=self.sweep_runs), {}, state or StateCache())
        if _shared is None:  # the base: variants first, since its evaluation compares their checkpoints
            for v in self._configs:
                self.variant(v)
        for stage in STAGES.values():
            if stage.build_scope:
                settings = stage.settings(self) if _shared is None else None
                if settings is not None:
                    self._add(stage, settings, stage.more_inputs(self), None)
                continue
            ins = {i: self.artifacts[i] for i in stage.input_names(config)}
            if stage.more_inputs is not None:
                ins.update(stage.more_inputs(self))
            # An encoder (model.objective masked), or an evaluation of one: its own settings and entry.
            encoder = config["model"]["objective"] == "masked" or (stage.encoder_from_inputs and any(is_encoder(a.settings) for a in ins.values()))
            self._add(stage, stage.settings_of(encoder)(config), ins, stage.entry(encoder))
        if _shared is None:  # the base: index every artifact of the build
            plans = [self, *self.variants.values()]
            self._by_key = {(a.stage, a.key): a for p in plans for a in p.artifacts.values()}
            self._parts = {(part.stage, part.key): part for a in self._by_key.values() for part in a.parts}

    def _add(self, stage, settings: dict, ins: dict, entry: str | None) -> None:
        """Key one artifact of ``stage``: its settings with local files located, its code, its inputs."""
        loc = locate(stage.locate, settings, self.state)
        code = code_hash(stage.name, entry) if entry else code_hash(stage.name)
        environment = stage.environment(loc.key_settings) if stage.environment else None
        material = {
            "stage": stage.name,
            "settings": loc.key_settings,
            "code": code,
            "inputs": {i: a.key for i, a in ins.items()},
            "environment": environment,
        }
        key = digest(material)[:KEY_LEN]
        a = self.artifacts[stage.name] = Artifact(
            stage.name, key, f"{self.root}/{stage.name}/{key}", loc.key_settings, ins, code, code_files(stage.name, entry), loc.patches, entry or stage.name,
        )
        if stage.parts is not None:
            a.parts = [self._part(a, p) for p in stage.parts(a)]

    def _part(self, a: Artifact, p: dict) -> Part:
        """Key one part of ``a`` from its hook's entry: ``settings`` (key settings), ``located``
        (patches that put its paths back), ``inputs`` (Parts or Artifacts), ``info``."""
        ins = p.get("inputs", {})
        material = {"part": a.stage, "settings": p["settings"], "code": a.code_hash, "inputs": {n: i.key for n, i in ins.items()}}
        key = digest(material)[:KEY_LEN]
        return Part(a.stage, key, f"{self.root}/{PARTS}/{a.stage}/{key}", p["settings"], ins, a.code_hash, a.code_files, p.get("located", []), p.get("info", {}))

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

    def part(self, stage: str, key: str) -> Part:
        try:
            return self._parts[(stage, key)]
        except KeyError:
            raise UserError(f"{self.root}/{PARTS}/{stage}/{key}: not a part of the current config") from None

    def parts_of(self, stage: str) -> list[Part]:
        """Every keyed part of ``stage`` in the build (the base's and every variant's)."""
        return [p for (st, _), p in self._parts.items() if st == stage]

    def all_artifacts(self) -> list[Artifact]:
        return list(self._by_key.values())

    def write_specs(self, folder: str | os.PathLike, tracking: dict | None = None) -> None:
        """One job spec per artifact of the build (the base's and every variant's); a tracked
        stage's spec also carries ``tracking`` (lmbuild.store.tracking.settings), which no key covers."""
        for a in self.all_artifacts():
            spec = a.spec()
            if tracking and STAGES[a.stage].tracked:
                spec["tracking"] = tracking
            write_spec(folder, a.stage, a.key, spec)
        for part in self._parts.values():
            write_spec(folder, f"{part.stage}_part", part.key, part.spec())


def store_keeps(plan: Plan) -> list[str]:
    """What gc keeps besides the build's artifacts: the store entries their builds reuse
    (``Stage.keeps``: a wsd run's stable-phase cache; the keyed parts), as ``<folder>/<key>``."""
    keeps = {k for a in plan.all_artifacts() if STAGES[a.stage].keeps for k in STAGES[a.stage].keeps(a)}
    return sorted(keeps | {f"{PARTS}/{p.stage}/{p.key}" for a in plan.all_artifacts() for p in a.parts})
