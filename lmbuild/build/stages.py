"""The stage table: for each stage, its scripts, its inputs, the part of the config it reads,
and the hooks through which the engine learns what only the stage knows.

This module only describes; ``lmbuild.build.graph`` computes keys from it and ``rules/*.smk`` hold
the rules (one file per stage, named after it). Every stage, the cost plan (``plan``) and the
sweep's report (``sweep_report``) included, is keyed the same way: its settings, its code set (the
import walk from its scripts, lmbuild.build.codeset), its inputs' keys and its local files. What is
particular to a stage is a field or a hook of its row, never a stage name in the engine:

* ``locate``: which settings are local paths (lmbuild.build.locate), ``environment``: what
  identifies an input that is neither a setting nor a file;
* ``more_inputs``: inputs that other plans of the build hold (a variant's checkpoint);
* ``chain``: whether ``all`` builds it (``plan`` and ``sweep_report`` are built only when named);
* ``build_scope``: planned once for the whole build, from the base plan (``sweep_report``);
* ``section``: where its settings sit in the config (``lmbuild why`` names them as written);
* ``keeps``: store entries besides its artifact that its builds reuse (gc keeps them);
* ``tracked``, ``gpu``: whether a tracker logs it, whether its jobs may have GPUs;
* ``read_whole``, ``reads_whole``: which files of an input a job hashes before it reads them.

It imports only engine modules and shared leaves, so the config check, the variants and the plan
can all read it. What it does not do: compute a key, or run anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from lmbuild.build import data_stages as data, locate
from lmbuild.errors import UserError
from lmbuild.training.schedule import stable_key

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[str, ...] | Callable[[dict], tuple[str, ...]]  # or config -> input stages
    # validated config -> this stage's settings (build_scope: the base Plan -> settings, or None
    # where the build has no such artifact)
    settings: Callable
    # Every script a rule of this stage runs (scripts/<name>.py first); their lmbuild imports
    # are followed to the stage's code set (lmbuild.build.codeset).
    scripts: tuple[str, ...] = ()
    # An encoder's artifact (model.objective masked; lmbuild.models.modernbert): its settings. None:
    # the stage's settings are the same for both objectives.
    encoder_settings: Callable[[dict], dict] | None = None
    # Data files the code reads (templates, schemas), repo-relative: part of the code set, since
    # the import walk cannot see them.
    files: tuple[str, ...] = ()
    # The script that builds an encoder's artifact instead of scripts/<name>.py, with its own code
    # set, so that no causal build's key holds encoder code.
    encoder_script: str | None = None
    # An encoder's artifact when any input is an encoder's checkpoint (an evaluation of several).
    encoder_from_inputs: bool = False
    locate: Callable | None = None  # (Locator, settings) -> None: lmbuild.build.locate
    environment: Callable[[dict], dict | None] | None = None
    # Plan -> {input name: Artifact} from the build's other plans (variants, sweep runs).
    more_inputs: Callable | None = None
    chain: bool = True
    build_scope: bool = False
    # The config prefix of its settings, and {(settings key): config key} for keys from elsewhere.
    section: str = ""
    elsewhere: dict = dataclasses.field(default_factory=dict)
    # Artifact -> ["<folder>/<key>", ...] below the store that its builds reuse (gc keeps them).
    keeps: Callable | None = None
    tracked: bool = False
    gpu: bool = False
    # The files of its artifact that a reader reads whole (fnmatch patterns, "*" crosses folders):
    # their SHA-256 is checked before the job reads them (lmbuild.store.runner.read_whole). What is
    # read in part keeps the size check: Parquet shards (by row group), val_docs.jsonl (its first
    # documents), validation token files (a few blocks), TensorBoard events (read by no stage).
    read_whole: tuple[str, ...] = ()
    # {input stage: patterns} where this stage reads an input otherwise than its readers do.
    reads_whole: dict = dataclasses.field(default_factory=dict)
    # Artifact -> its fan-out parts, in order: [{"settings", "located", "inputs", "info"}], each a
    # store entry keyed by what it reads (lmbuild.build.graph.Part), which builds of other keys reuse.
    parts: Callable | None = None

    def input_names(self, config: dict) -> tuple[str, ...]:
        return self.inputs(config) if callable(self.inputs) else self.inputs

    def entry(self, encoder: bool) -> str | None:
        """The entry script's name when it is not scripts/<name>.py (an encoder's own, :attr:`encoder_script`)."""
        return self.encoder_script if encoder else None

    def settings_of(self, encoder: bool) -> Callable[[dict], dict]:
        """The settings function of a causal or an encoder's artifact."""
        return self.encoder_settings if encoder and self.encoder_settings else self.settings

    @property
    def script(self) -> Path:
        return ROOT / "scripts" / f"{self.name}.py"

    @property
    def script_paths(self) -> list[Path]:
        return [self.script, *(ROOT / "scripts" / f"{s}.py" for s in self.scripts)]

    def entry_paths(self, entry: str | None) -> list[Path]:
        """The scripts an artifact built by ``entry`` (:meth:`entry`) runs."""
        return self.script_paths if entry is None else [ROOT / "scripts" / f"{entry}.py"]


# The model.* keys that pick a layer plan (lmbuild.models.layer_plan); model.init names which of them it takes.
LAYER_PLAN_KEYS = ("layer_plan", "downscale_keep", "upscale_drop")


def _init_settings(c: dict) -> dict:
    """model.* without what the chosen model.init ignores; seed from train.seed (random init only:
    the others copy every weight, and take initializer_range from nowhere either).

    A variant source is named by its artifact (an input, whose key enters this one), not by the
    variant's name, so renaming a variant rebuilds nothing.
    """
    m = dict(c["model"])
    objective = m.pop("objective")
    init = m["init"]
    copied = ("initializer_range",)
    drop = {
        "random": ("source", *LAYER_PLAN_KEYS),
        "pretrained": (*LAYER_PLAN_KEYS, *copied),
        "downscale": ("upscale_drop", *copied),
        "upscale": ("downscale_keep", *copied),
    }[init]
    for k in drop:
        m.pop(k)
    if init != "random" and "variant" in m["source"]:
        m["source"] = {"stage": m["source"].get("stage", "trained_checkpoint")}
    if objective != "causal":  # absent for causal, so the key of a causal model never changed
        m["objective"] = objective
    # Random init reads train.seed: the seed is one public setting for the whole model half.
    return {**m, "seed": c["train"]["seed"]} if init == "random" else m


# Settings that only an encoder reads (model.objective masked): left out of causal keys.
ENCODER_ONLY = {"train": ("mlm_probability",), "eval": ("pseudo_perplexity_tokens",)}


def is_encoder(settings: dict) -> bool:
    """An init or trained checkpoint's settings (as the plan keeps them) are an encoder's."""
    return settings.get("objective") == "masked"


def _causal(section: str) -> Callable[[dict], dict]:
    return lambda c: {k: v for k, v in c[section].items() if k not in ENCODER_ONLY[section]}


def check_enough(average_last: int, keep_steps: list[int], where: str) -> None:
    """``average_last`` kept steps exist in ``train.keep_steps`` (lmbuild.training.average checks
    the trained model's manifest again when it averages)."""
    if average_last > len(keep_steps):
        raise UserError(
            f"config: {where}: {average_last} asks for the mean of the last {average_last} kept checkpoints, "
            f"but train.keep_steps keeps {len(keep_steps)}"
        )


def _eval_settings(c: dict, encoder: bool = False) -> dict:
    """eval.*: a causal report's without the encoder-only settings; ``average_last`` only when set,
    so that the reports keyed before it existed keep their keys. Asking to average more kept
    steps than train.keep_steps keeps is a config error."""
    e = dict(c["eval"]) if encoder else _causal("eval")(c)
    if e.get("average_last") is None:
        e.pop("average_last", None)
    else:
        check_enough(e["average_last"], c["train"]["keep_steps"], "eval.average_last")
    return e


def _export_settings(c: dict) -> dict:
    """export.* but ``push`` (where it is uploaded, no artifact's content), what the chosen
    checkpoint ignores, and each data source's licence for the card (``licenses``, in source
    order; None where unset). The checkpoint it names must be kept (train.keep_steps)."""
    e = {k: v for k, v in c["export"].items() if k != "push"}
    keep = c["train"]["keep_steps"]
    if e["checkpoint"] == "average":
        check_enough(e["average_last"], keep, "export.average_last")
    else:
        e.pop("average_last")
    if e["checkpoint"].startswith("step-") and int(e["checkpoint"][5:]) not in keep:
        raise UserError(f"config: export.checkpoint: {e['checkpoint']} is not a kept step (train.keep_steps: {keep})")
    if not e["gguf"]:
        for k in ("gguf_type", "check_docs", "min_agreement"):
            e.pop(k)
    e["licenses"] = [src.get("license") for src in c["data"]["sources"]]
    return e


# Settings that only the wsd schedule reads, at their schema defaults (tests/build/test_plan.py checks
# them against lmbuild/schemas/config.schema.yaml). A cosine run's settings hold these values whatever the
# config says: decay_steps set on a cosine run retrains nothing. Pinned rather than left out, so
# that the settings of every cosine run keyed before (which held the defaults) are unchanged.
WSD_ONLY = {"decay_fraction": 0.1, "decay_steps": None}


def _train_settings(c: dict, encoder: bool = False) -> dict:
    """train.*, and data.mixture when set: the mixture is applied when training samples blocks,
    so it enters this key (and what is downstream) and no data stage's. Absent when empty, so
    that a build without a mixture keeps its keys. A causal run leaves out encoder-only settings;
    a cosine run holds the wsd-only settings at their defaults (:data:`WSD_ONLY`)."""
    t = dict(c["train"]) if encoder else _causal("train")(c)
    if t["lr_scheduler"] != "wsd":
        t.update(WSD_ONLY)
    m = c["data"]["mixture"]
    if m:
        t["mixture"] = m
    return {**t, "objective": "masked"} if encoder else t


def _source_variant(plan) -> dict:
    """init_checkpoint's ``source`` input: the artifact a ``model.source: {variant: ...}`` names."""
    src = plan.config["model"]["source"] or {}
    if plan.config["model"]["init"] == "random" or "variant" not in src:
        return {}
    return {"source": plan.variant(src["variant"]).artifacts[src.get("stage", "trained_checkpoint")]}


def _variants_checkpoints(plan) -> dict:
    """The base's evaluation sets every variant's trained model beside its own (lmbuild.evaluation
    labels each by its input name); a variant's own report has only its own, and the sweep's runs
    are compared in the sweep report."""
    if plan.name is not None:
        return {}
    own = plan.artifacts["trained_checkpoint"].key
    return {
        f"{v}__trained_checkpoint": p.artifacts["trained_checkpoint"]
        for v, p in plan.variants.items()
        if v not in plan.sweep_runs and p.artifacts["trained_checkpoint"].key != own
    }


def _stable_cache(artifact) -> list[str]:
    """A wsd run's stable-phase cache (``<store>/_stable/<key>``, lmbuild.training.stable_cache),
    which a longer run of the same settings continues from."""
    if artifact.settings.get("lr_scheduler") != "wsd":
        return []
    return [f"_stable/{stable_key(artifact.settings, artifact.code_hash, {n: i.key for n, i in artifact.inputs.items()})}"]


def _plan_settings(c: dict, encoder: bool = False) -> dict:
    """What the cost plan reads: the model, data and training settings (a causal run's without the
    encoder's), and in ``plan.gpus`` every GPU count it prices: the config's, and the one that
    resources give training (resources.trained_checkpoint.gpu, else resources.default.gpu)."""
    res = c.get("resources") or {}
    gpus = list(c["plan"]["gpus"])
    for section in (res.get("trained_checkpoint") or {}, res.get("default") or {}):
        if section.get("gpu"):
            gpus.append(int(section["gpu"]))
            break
    model = dict(c["model"]) if encoder else {k: v for k, v in c["model"].items() if k != "objective"}
    train = dict(c["train"]) if encoder else _causal("train")(c)
    return {"model": model, "pack": c["pack"], "train": train, "tokenizer": c["tokenizer"], "plan": {**c["plan"], "gpus": sorted(set(gpus))}}


def _sweep_report_settings(plan) -> dict | None:
    """The sweep's runs ({name: their values}) and how to rank them; None without a sweep."""
    if not plan.sweep_runs:
        return None
    return {"runs": plan.sweep_runs, "metric": plan.config["sweep"]["metric"], "goal": plan.config["sweep"]["goal"]}


def _sweep_runs(plan) -> dict:
    """Every run's trained model and evaluation, named ``<run>__<stage>``: the report's key changes
    when a run's does, and only the report is rebuilt when only sweep.metric or sweep.goal change."""
    return {f"{run}__{stage}": plan.variants[run].artifacts[stage] for run in plan.sweep_runs for stage in ("trained_checkpoint", "eval_report")}


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        # One job per group of input files (lmbuild.data.groups), then a gather.
        Stage(
            "raw", (), data.raw_settings, ("raw_part",), locate=locate.raw_sources, environment=locate.embedded_corpus("sources"),
            more_inputs=data.teachers, section="data.", parts=data.raw_parts,
        ),
        # The fastText classifiers that cleaning scores with: data.clean.quality's and data.classifiers
        # (lmbuild.data.quality_model); built only when used.
        Stage(
            "quality_model", (), data.classifier_settings,
            locate=locate.classifier_sources, environment=locate.classifier_corpus, section="data.",
            read_whole=("*",),  # fastText's model.bin, loaded whole by every cleaning part
        ),
        Stage(
            "cleaned", data.cleaned_inputs, data.cleaned_settings, ("cleaned_part",), locate=locate.url_blocklists, section="data.clean.",
            elsewhere={"classifiers": "data.classifiers"}, parts=data.cleaned_parts,
            files=data.CLEANING_LISTS,  # the vendored URL and bad-words lists (lmbuild/data/resources/README.md)
        ),
        Stage(
            "deduplicated", ("cleaned",), data.dedup_settings, ("dedup_map", "dedup_bucket"), locate=locate.decontamination_files,
            section="data.dedup.", elsewhere={"eval_tasks": "eval.tasks"}, parts=data.dedup_maps,
        ),
        # from_pretrained reads every file.
        Stage("tokenizer", data.tokenizer_inputs, lambda c: c["tokenizer"], locate=locate.tokenizer_folder, section="tokenizer.", read_whole=("*",)),
        Stage("shards", ("deduplicated", "tokenizer"), lambda c: c["pack"], ("shards_part",), section="pack.", read_whole=("index.json", "meta.json")),
        Stage(
            "init_checkpoint", ("tokenizer",), _init_settings, encoder_script="init_checkpoint_masked",
            locate=locate.model_source_folder, more_inputs=_source_variant, section="model.", elsewhere={"seed": "train.seed"},
            read_whole=("*",),  # model, config, tokenizer
        ),
        Stage(
            "trained_checkpoint", ("init_checkpoint", "shards"), _train_settings,
            encoder_settings=lambda c: _train_settings(c, encoder=True), encoder_script="trained_checkpoint_masked",
            section="train.", elsewhere={"mixture": "data.mixture", "objective": "model.objective"}, keeps=_stable_cache, tracked=True, gpu=True,
            read_whole=("*",),  # the model, config, tokenizer, the kept steps' models, loss_curve.csv
            reads_whole={"shards": ("index.json", "meta.json", "tokens/*.train.*.bin")},  # every training block may be drawn
        ),
        # Every labelled checkpoint is evaluated (lmbuild.evaluation.checkpoints finds them by their
        # manifests); with an encoder among them, the encoder's eval settings and entry
        # (scripts/eval_report_masked.py, which hands encoders to lmbuild.evaluation.masked).
        Stage(
            "eval_report", ("init_checkpoint", "trained_checkpoint", "shards"), _eval_settings, encoder_settings=lambda c: _eval_settings(c, encoder=True),
            encoder_script="eval_report_masked", encoder_from_inputs=True, locate=locate.eval_files, more_inputs=_variants_checkpoints,
            section="eval.", tracked=True, gpu=True, read_whole=("report.json",),
        ),
        # The page over report.json (lmbuild.evaluation.report): its own cheap step, so a change of
        # the page re-renders in seconds and evaluates nothing. No settings of its own.
        Stage("report", ("eval_report",), lambda c: {}, files=("lmbuild/evaluation/templates/report.html.j2", "lmbuild/schemas/report.schema.json")),
        # The model shipped (lmbuild.ship.export): HF folder, GGUF, model card; `snakemake export`.
        # Outside the chain: a full copy of the weights and a GGUF are not needed to read the report.
        Stage(
            "export", ("trained_checkpoint", "eval_report", "shards"), _export_settings, chain=False, section="export.",
            elsewhere={"licenses": "data.sources"},
            reads_whole={"eval_report": ("report.json",), "shards": ()},  # the shards' first val_docs only
        ),
        # What the run will cost (lmbuild.models.plan), from the config alone: `snakemake plan`.
        Stage("plan", (), _plan_settings, encoder_settings=lambda c: _plan_settings(c, encoder=True), chain=False),
        # The sweep's comparison of its runs (lmbuild.evaluation.sweep_report): `snakemake sweep`.
        Stage(
            "sweep_report", (), _sweep_report_settings, files=("lmbuild/evaluation/templates/sweep_report.html.j2",),
            more_inputs=_sweep_runs, chain=False, build_scope=True, section="sweep.",
            reads_whole={"trained_checkpoint": ("loss_curve.csv",)},  # a trained model's curve only
        ),
    ]
}
# The chain that `snakemake` (rule all) builds, in order; its last stage is what `all` and
# `snakemake variants` ask for. The others are built only when their target names them.
CHAIN = [name for name, s in STAGES.items() if s.chain]
FINAL = CHAIN[-1]
