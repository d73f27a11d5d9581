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

    def input_names(self, config: dict) -> tuple[str, ...]:
        return self.inputs(config) if callable(self.inputs) else self.inputs

    @property
    def script(self) -> Path:
        return ROOT / "scripts" / f"{self.name}.py"

    @property
    def script_paths(self) -> list[Path]:
        return [self.script, *(ROOT / "scripts" / f"{s}.py" for s in self.scripts)]


def _raw_settings(c: dict) -> dict:
    d = c["data"]
    return {"sources": d["sources"], "shards": d["shards"]}


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
    # Random init reads train.seed: the seed is one public setting for the whole model half.
    return {**m, "seed": c["train"]["seed"]} if init == "random" else m


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("raw", (), _raw_settings),
        # A fastText classifier for data.clean.quality (lmbuild.data.quality); built only when used.
        Stage("quality_model", (), lambda c: c["data"]["quality_model"]),
        Stage("cleaned", cleaned_inputs, lambda c: c["data"]["clean"], ("cleaned_part",)),
        Stage("deduplicated", ("cleaned",), lambda c: c["data"]["dedup"], ("dedup_map", "dedup_bucket")),
        Stage("tokenizer", tokenizer_inputs, lambda c: c["tokenizer"]),
        Stage("shards", ("deduplicated", "tokenizer"), lambda c: c["pack"]),
        Stage("init_checkpoint", ("tokenizer",), _init_settings),
        Stage("trained_checkpoint", ("init_checkpoint", "shards"), lambda c: c["train"]),
        # Every labelled checkpoint is evaluated (lmbuild.evaluate finds them by their manifests).
        Stage("eval_report", ("init_checkpoint", "trained_checkpoint", "shards"), lambda c: c["eval"]),
    ]
}
TARGETS = list(STAGES)
# What `snakemake` (rule all) and `snakemake variants` build: the table's last stage.
FINAL = TARGETS[-1]
