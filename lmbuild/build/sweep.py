"""Sweeps: a grid and a seeded random search over dotted config keys, expanded into variants.

    sweep:
      grid: {train.learning_rate: [0.001, 0.002], model.num_hidden_layers: [2, 4]}
      random: {runs: 4, seed: 0, space: {train.learning_rate: {min: 1e-4, max: 1e-2, log: true}}}

Every grid combination and every random draw is one run: a variant (``lmbuild.build.variants``)
whose overrides are the run's values, validated like any variant, so what runs share upstream
(data, tokenizer, here also the init of equal models) has one key and is built once. A run's
name is made from its values after validation (``learning_rate_0p001_num_hidden_layers_2``),
so it does not depend on the order of the keys or on number notation (``1e-3`` = ``0.001``).
The random search draws with Python's ``random.Random(seed)`` over the keys in sorted order,
floats rounded to 3 significant digits: the same config gives the same runs on every machine.

What this module does not do: build, compare or rank runs (``lmbuild.evaluation.sweep_report`` does, in
its own step), or search adaptively (each run is planned before anything trains).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import random

from lmbuild.build.config import validate
from lmbuild.build.variants import NOT_PER_VARIANT, apply_overrides
from lmbuild.errors import UserError
from lmbuild.evaluation import tasks

# The figures every run has (training's and the evaluation's counts, report.json's headline);
# an eval.tasks task adds <task>/<metric>. lmbuild.evaluation.sweep_report ranks by any of them.
METRICS = (
    "final_val_loss", "final_train_loss", "initial_val_loss", "heldout_bits_per_byte", "heldout_token_loss",
    "heldout_token_perplexity", "heldout_word_perplexity", "heldout_byte_perplexity", "tokens_per_second", "train_seconds", "parameters",
)
RANDOM_DIGITS = 3  # significant digits of a drawn float: readable names, no spurious precision
MAX_DRAWS_PER_RUN = 100  # a random space too small for `runs` distinct runs fails, not loops


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def value_token(value) -> str:
    """A value as letters and digits: 0.002 -> 0p002, 1e-05 -> 1em05, -3 -> m3, True -> true."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        if text.endswith(".0"):
            text = text[:-2]
        return text.replace(".", "p").replace("-", "m").replace("+", "")
    if isinstance(value, str):
        kept = "".join(c for c in value if c.isascii() and c.isalnum())
        if kept:
            return kept
    # Lists, mappings and strings without a letter or digit: a short hash of the value.
    return "h" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def _labels(keys: list[str]) -> dict[str, str]:
    """Each swept key's part of a run name: its last component, or the whole path where two
    keys share the last component (``train.seed`` and ``eval.seed``)."""
    leaves = [k.split(".")[-1] for k in keys]
    return {k: (leaf if leaves.count(leaf) == 1 else k.replace(".", "_")) for k, leaf in zip(keys, leaves)}


def run_name(values: dict, labels: dict[str, str]) -> str:
    return "_".join(f"{labels[k]}_{value_token(values[k])}" for k in sorted(values))


def _draw(rng: random.Random, spec: dict, where: str):
    if "values" in spec:
        if any(k in spec for k in ("min", "max", "log", "integer")):
            raise UserError(f"{where}: give either values or min and max")
        return copy.deepcopy(rng.choice(spec["values"]))
    if "min" not in spec or "max" not in spec:
        raise UserError(f"{where}: give either values or min and max")
    lo, hi = spec["min"], spec["max"]
    if not lo < hi:
        raise UserError(f"{where}: min ({lo:g}) must be smaller than max ({hi:g})")
    if spec.get("log") and lo <= 0:
        raise UserError(f"{where}: log needs min > 0 (got {lo:g})")
    if spec.get("integer"):
        if spec.get("log"):
            return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        return rng.randint(math.ceil(lo), math.floor(hi))
    x = math.exp(rng.uniform(math.log(lo), math.log(hi))) if spec.get("log") else rng.uniform(lo, hi)
    return float(f"{x:.{RANDOM_DIGITS}g}")


def _points(sweep: dict, source: str) -> list[tuple[str, dict]]:
    """(where, {dotted key: value}) of every run, before validation: grid first, then draws."""
    out = []
    grid = sweep.get("grid") or {}
    if grid:
        keys = sorted(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            out.append((f"{source}: sweep.grid", dict(zip(keys, copy.deepcopy(list(combo))))))
    rnd = sweep.get("random") or {}
    space = rnd.get("space") or {}
    runs = rnd.get("runs", 0)
    if runs and not space:
        raise UserError(f"{source}: sweep.random.space: no keys to draw (sweep.random.runs is {runs})")
    if space and not runs:
        raise UserError(f"{source}: sweep.random.runs: a random space needs a number of runs")
    rng = random.Random(rnd.get("seed", 0))
    seen: set[str] = set()
    for _ in range(runs * MAX_DRAWS_PER_RUN):
        if len(seen) == runs:
            break
        point = {k: _draw(rng, space[k], f"{source}: sweep.random.space.{k}") for k in sorted(space)}
        ident = json.dumps(point, sort_keys=True)
        if ident not in seen:
            seen.add(ident)
            out.append((f"{source}: sweep.random", point))
    if len(seen) < runs:
        raise UserError(f"{source}: sweep.random.runs: {runs} distinct runs asked, but the space gave only {len(seen)}")
    return out


def _check_metric(config: dict, source: str) -> None:
    """sweep.metric names a figure the runs will have: a typo fails before anything trains."""
    metric = config["sweep"].get("metric", "final_val_loss")
    names = [t["task"] for t in tasks.parse(config["eval"].get("tasks") or [])]
    task, _, name = metric.partition("/")
    if metric not in METRICS and not (name and task in names):
        known = ", ".join([*METRICS, *(f"{t}/<metric>" for t in names)])
        raise UserError(f"{source}: sweep.metric: {metric!r} is not a metric of the runs (one of: {known})")


def expand(config: dict, source: str = "config") -> dict[str, dict]:
    """The sweep's runs as variants, ``{name: {dotted key: validated value}}`` in run order.

    Raises UserError naming the key for a bad value (the run is validated as a whole config),
    for two runs that the validated values make equal, and for a name clash with ``variants``.
    """
    sweep = config.get("sweep") or {}
    points = _points(sweep, source)
    if not points:
        return {}
    keys = sorted({k for _, p in points for k in p})
    for k in keys:
        if k.split(".")[0] in NOT_PER_VARIANT:
            raise UserError(f"{source}: sweep: {k}: {k.split('.')[0]} is the same for every run")
    labels = _labels(keys)
    runs: dict[str, dict] = {}
    for where, point in points:
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in point.items())
        cfg = validate(apply_overrides(config, point, f"{where} ({shown})"), source=f"{where} ({shown})")
        values = {k: _get(cfg, k) for k in point}
        name = run_name(values, labels)
        if name in runs:
            if where.endswith("grid"):
                raise UserError(f"{where}: two runs have the same values after validation ({name})")
            continue  # a draw equal to a grid point: one run
        runs[name] = values
    _check_metric(config, source)
    clash = sorted(set(runs) & set(config.get("variants") or {}))
    if clash:
        raise UserError(f"{source}: variants.{clash[0]}: a variant has the name of a sweep run")
    return runs
