"""Config variants: several related models in one build (e.g. SOLAR's train small, upscale, continue).

A config may name variants, each a set of dotted-key overrides of the base config::

    variants:
      small: {model.num_hidden_layers: 4, model.init: random, model.source: null, train.max_steps: 200}
    model: {num_hidden_layers: 6, init: upscale, upscale_drop: 1, source: {variant: small}}

Each variant is a whole config (the base with its overrides, validated like any config) and
gets its own chain of artifacts. Keys are computed the same way as for the base, so where a
variant's settings equal the base's (here the data stages and the tokenizer) it shares the
base's artifacts and they are built once. ``model.source: {variant: name}`` makes that
variant's ``trained_checkpoint`` (or ``init_checkpoint``) an input of ``init_checkpoint``,
so its key enters every key downstream; so does a synthetic source's ``model: {variant: name}``
(lmbuild.data.synthetic), whose artifact becomes an input of ``raw``. A variant taught by itself,
and a cycle through teachers and sources, is one line.

What this module does not do: override inside lists (``data.sources`` is replaced whole), set
``data.clean.preset`` (a layer under the user's settings, lmbuild.build.layers), or vary
``artifacts``, ``resources``, ``tracking``, ``variants`` or ``sweep`` themselves (one build, one
set of rules).
"""

from __future__ import annotations

import copy
import re

from lmbuild.build.config import validate
from lmbuild.build.stages import STAGES
from lmbuild.errors import UserError
from lmbuild.models.layer_plan import layer_plan

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*$")
NOT_PER_VARIANT = ("artifacts", "resources", "variants", "sweep", "tracking")
RESERVED_NAMES = {"all", "variants", "sweep"}


def apply_overrides(base: dict, overrides: dict, where: str) -> dict:
    """A copy of ``base`` (without its variants) with ``{dotted.key: value}`` set."""
    cfg = copy.deepcopy(base)
    cfg.pop("variants", None)
    cfg.pop("sweep", None)  # a sweep's runs are variants of the base, not sweeps themselves
    for dotted, value in overrides.items():
        parts = str(dotted).split(".")
        if parts[0] in NOT_PER_VARIANT:
            raise UserError(f"{where}: {dotted}: {parts[0]} is the same for every variant")
        if parts[:3] == ["data", "clean", "preset"]:
            # A preset goes under the user's own settings (lmbuild.build.layers), which a variant, made
            # from the validated base, no longer tells apart from defaults.
            raise UserError(f"{where}: {dotted}: a preset is set in the base config, or for one source (data.clean.per_source.<name>.preset), not per variant")
        node = cfg
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise UserError(f"{where}: {dotted}: {'.'.join(parts[: i + 1])} is not a section")
        node[parts[-1]] = copy.deepcopy(value)
    return cfg


def source_variant(config: dict) -> str | None:
    src = config["model"].get("source") or {}
    return src.get("variant")


def variant_configs(config: dict, source: str = "config", sweep_runs: dict | None = None) -> dict[str, dict]:
    """Every variant's validated config, the sweep's runs (``sweep_runs``: what
    ``lmbuild.build.sweep.expand`` made of the config, which imports this module) included;
    UserError naming the key for a bad override, an unknown variant or a cycle of sources."""
    variants = {**(config.get("variants") or {}), **(sweep_runs or {})}
    out = {}
    for name, overrides in variants.items():
        if not NAME.match(name) or name in RESERVED_NAMES or name in STAGES:
            raise UserError(f"{source}: variants.{name}: a variant name is letters, digits and single underscores, not a stage name, 'all', 'variants' or 'sweep'")
        cfg = validate(apply_overrides(config, overrides, f"{source}: variants.{name}"), source=f"{source}: variants.{name}")
        cfg["variants"] = variants  # its own source may be another variant
        out[name] = cfg
    # Sources: each config names at most one variant, so the references form chains; walk them.
    for start, cfg in [(None, config), *out.items()]:
        seen, name = [start], source_variant(cfg)
        while name is not None:
            where = f"{source}: variants.{seen[-1]}" if seen[-1] else source
            if name not in out:
                known = ", ".join(sorted(out)) or "none defined"
                raise UserError(f"{where}: model.source.variant: unknown variant {name!r} (variants: {known})")
            if name in seen:
                chain = " -> ".join(s or "(base)" for s in [*seen, name])
                raise UserError(f"{source}: variants: model.source.variant forms a cycle: {chain}")
            seen.append(name)
            name = source_variant(out[name])
    _check_teachers(config, out, source)
    for name, cfg in [(None, config), *out.items()]:
        if source_variant(cfg) in out:
            _check_fits(cfg["model"], out[source_variant(cfg)]["model"], f"{source}: variants.{name}" if name else source)
    return out


def teacher_variants(config: dict) -> list[tuple[int, str]]:
    """``(i, variant)`` of each ``data.sources[i]`` of type synthetic whose teacher is a variant."""
    return [(i, s["model"]["variant"]) for i, s in enumerate(config["data"]["sources"]) if s["type"] == "synthetic" and "variant" in s["model"]]


def _check_teachers(config: dict, out: dict, source: str) -> None:
    """Synthetic sources' teachers: known variants, never the variant itself, and no cycle through
    them and model.source (a teacher's raw data cannot wait on a model trained from it)."""
    needs = {}
    for name, cfg in [(None, config), *out.items()]:
        where = f"{source}: variants.{name}" if name else source
        for i, v in teacher_variants(cfg):
            if v not in out:
                raise UserError(f"{where}: data.sources[{i}].model.variant: unknown variant {v!r} (variants: {', '.join(sorted(out)) or 'none defined'})")
            if v == name:
                raise UserError(f"{where}: data.sources[{i}].model.variant: the teacher is this variant itself; give variants.{name} its own data.sources")
        needs[name] = [v for _, v in teacher_variants(cfg)] + ([source_variant(cfg)] if source_variant(cfg) else [])

    def walk(name, path: list) -> None:
        for v in needs[name]:
            if v in path:
                chain = " -> ".join(s or "(base)" for s in [*path[path.index(v):], v])
                raise UserError(f"{source}: variants: synthetic teachers and model.source form a cycle: {chain}")
            walk(v, [*path, v])

    for name in needs:
        walk(name, [name])


ARCHITECTURE = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "rope_theta", "tie_word_embeddings")


def _check_fits(m: dict, src: dict, where: str) -> None:
    """Before anything trains: the widths equal the source variant's, and the layer count is the plan's.

    (lmbuild.models.surgery checks the same against the checkpoint itself, for every kind of source.)
    """
    for key in ARCHITECTURE:
        if m[key] != src[key]:
            raise UserError(f"{where}: model.{key}: {m[key]} does not match its source variant's {src[key]} ({m['source']['variant']})")
    n = src["num_hidden_layers"]
    try:
        layers = len(layer_plan(m, n))
    except UserError as exc:
        raise UserError(f"{where}: {exc} (source variant {m['source']['variant']})") from None
    if m["num_hidden_layers"] != layers:
        raise UserError(f"{where}: model.num_hidden_layers: {m['num_hidden_layers']}, but model.init {m['init']} of the {n}-layer source variant gives {layers}")
