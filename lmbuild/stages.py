"""The stage table: for each stage, its scripts, its inputs and the part of the config it reads.

This module only describes; ``lmbuild.plan`` computes keys from it and ``rules/*.smk`` hold the
rules (one file per stage, named after it). It imports nothing but the layer-plan key names,
so the config check, the variants and the plan can all read it without importing each other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from lmbuild.errors import UserError
from lmbuild.layer_plan import LAYER_PLAN_KEYS

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[str, ...] | Callable[[dict], tuple[str, ...]]  # or config -> input stages
    settings: Callable[[dict], dict]  # validated config -> this stage's settings
    # Every script a rule of this stage runs (scripts/<name>.py first); their lmbuild imports
    # are followed to the stage's code set (lmbuild.plan.code_files).
    scripts: tuple[str, ...] = ()
    # An encoder's artifact (model.objective masked; lmbuild.masked): its settings. None: the
    # stage's settings are the same for both objectives.
    encoder_settings: Callable[[dict], dict] | None = None
    # Data files the code reads (templates), repo-relative: part of the code set, since the
    # import walk cannot see them.
    files: tuple[str, ...] = ()
    # The script that builds an encoder's artifact instead of scripts/<name>.py, with its own code
    # set. Only trained_checkpoint has one (scripts/trained_checkpoint_masked.py); init_checkpoint
    # and eval_report dispatch on the objective inside their one entry (lmbuild.model,
    # lmbuild.evaluate), so that is all `entry` and the rules' params.script still serve.
    encoder_script: str | None = None

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


def _raw_settings(c: dict) -> dict:
    d = c["data"]
    return {"sources": d["sources"], "shards": d["shards"], "files_per_job": d["files_per_job"]}


def cleaned_inputs(c: dict) -> tuple[str, ...]:
    """The trained quality classifier is an input only when cleaning scores with it."""
    if not c["data"]["clean"]["quality"]["enabled"]:
        return ("raw",)
    q = c["data"]["quality_model"]
    if not q["positives"] or not q["negatives"]:
        raise UserError("config: data.clean.quality.enabled needs data.quality_model.positives and data.quality_model.negatives")
    return ("raw", "quality_model")


def tokenizer_inputs(c: dict) -> tuple[str, ...]:
    """A pretrained tokenizer reads no data; a trained one reads the deduplicated corpus."""
    return ("deduplicated",) if c["tokenizer"]["type"] == "bpe" else ()


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


# Settings that only the wsd schedule reads, at their schema defaults (tests/test_plan.py checks
# them against lmbuild/config.schema.yaml). A cosine run's settings hold these values whatever the
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


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        # One job per group of input files (lmbuild.data.groups), then a gather.
        Stage("raw", (), _raw_settings, ("raw_part",)),
        # A fastText classifier for data.clean.quality (lmbuild.data.quality); built only when used.
        Stage("quality_model", (), lambda c: c["data"]["quality_model"]),
        Stage("cleaned", cleaned_inputs, lambda c: c["data"]["clean"], ("cleaned_part",)),
        Stage("deduplicated", ("cleaned",), lambda c: c["data"]["dedup"], ("dedup_map", "dedup_bucket")),
        Stage("tokenizer", tokenizer_inputs, lambda c: c["tokenizer"]),
        Stage("shards", ("deduplicated", "tokenizer"), lambda c: c["pack"], ("shards_part",)),
        Stage("init_checkpoint", ("tokenizer",), _init_settings),
        Stage(
            "trained_checkpoint", ("init_checkpoint", "shards"), _train_settings,
            encoder_settings=lambda c: _train_settings(c, encoder=True), encoder_script="trained_checkpoint_masked",
        ),
        # Every labelled checkpoint is evaluated (lmbuild.evaluate finds them by their manifests;
        # an encoder's figures come from lmbuild.masked_eval); with an encoder among them, the
        # encoder's eval settings too.
        Stage("eval_report", ("init_checkpoint", "trained_checkpoint", "shards"), _causal("eval"), encoder_settings=lambda c: c["eval"]),
        # The page over report.json (lmbuild.report): its own cheap step, so a change of the page
        # re-renders in seconds and evaluates nothing. No settings of its own.
        Stage("report", ("eval_report",), lambda c: {}, files=("lmbuild/templates/report.html.j2", "schemas/report.schema.json")),
    ]
}
TARGETS = list(STAGES)
# What `snakemake` (rule all) and `snakemake variants` build: the table's last stage.
FINAL = TARGETS[-1]
