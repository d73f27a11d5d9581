"""Validate a config against lmbuild/schemas/config.schema.yaml and fill in its defaults.

Errors are one line that names the config key, e.g.
``config: train.learning_rate: 'fast' is not of type 'number'``.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import math
import re
from pathlib import Path

import jsonschema
import yaml

from lmbuild.build.keys import sorted_tree
from lmbuild.build.presets import PRESETS, apply_preset
from lmbuild.build.stages import LAYER_PLAN_KEYS
from lmbuild.data.files import source_name
from lmbuild.data.overrides import WHOLE_STAGE, difference, merge, stage_settings
from lmbuild.errors import UserError
from lmbuild.training.schedule import wsd_decay_steps

# Package data (pyproject.toml), so an installed lmbuild finds it without the checkout.
SCHEMA = importlib.resources.files("lmbuild") / "schemas" / "config.schema.yaml"


def load_schema() -> dict:
    # libyaml where installed: ten times faster on this schema, and every parse (every job) reads it.
    return yaml.load(SCHEMA.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _types(schema: dict) -> set:
    t = schema.get("type", ())
    return {t} if isinstance(t, str) else set(t)


def coerce_number(value, schema: dict):
    """One value of a ``number`` or ``integer`` field in one canonical type, so that ``1e-3``,
    ``0.001`` and ``1.0e-03`` (YAML reads the first as a string) are the same setting and the
    same key: numbers as float, integers as int (``3e2`` -> 300). Anything else is returned
    as it is, for the schema to judge; non-finite numbers are refused later (:func:`_finite`)."""
    types = _types(schema)
    if isinstance(value, bool) or not types & {"number", "integer"}:
        return value
    if isinstance(value, str) and "string" not in types:
        try:
            number = float(value.strip())
        except ValueError:
            return value
        if not math.isfinite(number):
            return value  # "inf" stays a string, for the schema to refuse
        value = number
    if isinstance(value, float) and "integer" in types and value.is_integer():
        return int(value)
    if isinstance(value, int) and "number" in types and "integer" not in types:
        return float(value)
    return value


def _with_defaults(validator_class):
    """A validator that also fills `default` values into missing object properties and gives
    every number one canonical type (:func:`coerce_number`) before checking it."""
    validate_properties = validator_class.VALIDATORS["properties"]
    validate_items = validator_class.VALIDATORS["items"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
                if name in instance:
                    instance[name] = coerce_number(instance[name], sub)
        yield from validate_properties(validator, properties, instance, schema)

    def coerce_items(validator, items, instance, schema):
        if isinstance(instance, list) and isinstance(items, dict):
            instance[:] = [coerce_number(v, items) for v in instance]
        yield from validate_items(validator, items, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults, "items": coerce_items})


def _finite(node, where: str, source: str) -> None:
    """NaN and infinity are no setting (and cannot be hashed into a key): one line naming the key."""
    if isinstance(node, float) and not math.isfinite(node):
        raise UserError(f"{source}: {where or '(top level)'}: {node!r} is not a finite number")
    if isinstance(node, dict):
        for k, v in node.items():
            _finite(v, f"{where}.{k}" if where else str(k), source)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _finite(v, f"{where}[{i}]", source)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else ("." if parts else "") + str(p))
    return "".join(parts)


def _one_line(error: jsonschema.ValidationError) -> str:
    where = _key_path(error)
    if "errorMessage" in error.schema and error.validator != "type":  # the schema's own words
        return f"{where or '(top level)'}: {error.schema['errorMessage']} (got {error.instance!r})"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        pats = error.schema.get("patternProperties", {})
        extra = [e for e in extra if not any(re.search(p, e) for p in pats)]
        key = f"{where}.{extra[0]}" if where else str(extra[0])
        return f"{key}: unknown key"
    return f"{where or '(top level)'}: {error.message}"


def validate(config: dict | None, source: str = "config") -> dict:
    """Return a validated copy of ``config``: every default filled in, numbers in one canonical
    type, every mapping's keys sorted (so that neither key order nor number notation reaches a
    key or a job).

    Raises UserError with one line naming the offending key. Variants are validated by
    ``lmbuild.build.variants.variant_configs`` (which ``lmbuild.build.graph.Plan`` calls), each as a whole
    config through this function.
    """
    # data.clean.preset's settings go under the user's (lmbuild.build.presets.PRESETS).
    config = apply_preset(copy.deepcopy(config or {}))
    _finite(config, "", source)
    schema = load_schema()
    cls = _with_defaults(jsonschema.validators.validator_for(schema))
    validator = cls(schema)
    # Defaults are filled while validating; validate twice so nested defaults inside filled
    # defaults ({}-valued sections) are filled too and then checked.
    errors = list(validator.iter_errors(config))
    if not errors:
        errors = list(validator.iter_errors(config))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise UserError(f"{source}: {_one_line(best)}")
    _finite(config, "", source)
    _check_consistency(config, source)
    _check_per_source(config, schema, cls, source)
    return sorted_tree(config)


def _check_per_source(config: dict, schema: dict, cls, source: str) -> None:
    """``data.clean.per_source``: each entry names a source, sets only per-document settings and
    is valid merged over the stage's settings (a ``preset`` of its own under its keys); it is
    kept as its minimal difference from the stage's settings (lmbuild.data.overrides)."""
    clean = config["data"]["clean"]
    if not clean["per_source"]:
        return
    names = [source_name(s) for s in config["data"]["sources"]]
    base = stage_settings(clean)
    validator = cls(schema["properties"]["data"]["properties"]["clean"])
    kept = {}
    for name, over in clean["per_source"].items():
        where = f"data.clean.per_source.{name}"
        if name not in names:
            raise UserError(f"{source}: {where}: no source is named {name!r} (the sources: {', '.join(names)}; a source's name is its `name`, `embedded`, or <type>:<path>)")
        for k in over:
            if k in WHOLE_STAGE:
                raise UserError(f"{source}: {where}.{k}: applies to the whole stage (data.clean.{k}), not per source")
        preset = over.get("preset")
        if preset is not None and preset not in PRESETS:
            raise UserError(f"{source}: {where}.preset: unknown preset {preset!r} (presets: {', '.join(PRESETS)})")
        effective = merge(merge(base, PRESETS[preset]) if preset else base, over)
        errors = list(validator.iter_errors(effective))
        if errors:
            line = _one_line(jsonschema.exceptions.best_match(errors))
            top = "(top level): "
            raise UserError(f"{source}: {where}: {line[len(top):]}" if line.startswith(top) else f"{source}: {where}.{line}")
        _finite(effective, where, source)
        kept[name] = difference(base, stage_settings(effective))
    clean["per_source"] = {name: over for name, over in kept.items() if over}


def _check_consistency(config: dict, source: str) -> None:
    """Cross-field rules that a JSON schema cannot say."""
    m, p = config["model"], config["pack"]
    if m["hidden_size"] % m["num_attention_heads"]:
        raise UserError(f"{source}: model.hidden_size ({m['hidden_size']}) must be a multiple of model.num_attention_heads ({m['num_attention_heads']})")
    if m["num_attention_heads"] % m["num_key_value_heads"]:
        raise UserError(f"{source}: model.num_attention_heads must be a multiple of model.num_key_value_heads")
    if p["seq_len"] > m["max_position_embeddings"]:
        raise UserError(f"{source}: pack.seq_len ({p['seq_len']}) exceeds model.max_position_embeddings ({m['max_position_embeddings']})")
    tok = config["tokenizer"]
    if tok["type"] == "pretrained" and not tok["path"]:
        raise UserError(f"{source}: tokenizer.path is required when tokenizer.type is pretrained")
    for i, src in enumerate(config["data"]["sources"]):
        if src["type"] == "synthetic":
            _check_synthetic(src, f"{source}: data.sources[{i}]")
        elif src["type"] != "embedded" and not src.get("path"):
            raise UserError(f"{source}: data.sources[{i}].path is required for type {src['type']}")
        if src["type"] != "embedded" and "parts" in src:
            raise UserError(f"{source}: data.sources[{i}].parts applies to type embedded only")
        if src["type"] != "synthetic" and SYNTHETIC_KEYS & set(src):
            raise UserError(f"{source}: data.sources[{i}].{sorted(SYNTHETIC_KEYS & set(src))[0]} applies to type synthetic only")
    _check_init(m, source)
    if m["objective"] == "masked":
        _check_masked(m, source)
    kinds = sorted({k for v in config["data"]["mixture"].values() for k in v})
    if len(kinds) > 1:
        raise UserError(f"{source}: data.mixture: one kind (weight, tokens or epochs) for every source, got {', '.join(kinds)}")
    t = config["train"]
    if t["warmup_steps"] >= t["max_steps"]:
        raise UserError(f"{source}: train.warmup_steps must be smaller than train.max_steps")
    if t["lr_scheduler"] == "wsd" and t["warmup_steps"] + wsd_decay_steps(t) > t["max_steps"]:
        raise UserError(
            f"{source}: train.warmup_steps ({t['warmup_steps']}) plus the wsd decay ({wsd_decay_steps(t)} steps, "
            f"train.decay_fraction {t['decay_fraction']:g}) exceed train.max_steps ({t['max_steps']})"
        )
    late = [k for k in t["keep_steps"] if k > t["max_steps"]]
    if late:
        raise UserError(f"{source}: train.keep_steps {late} exceed train.max_steps ({t['max_steps']})")


# The keys of a synthetic source (lmbuild.data.synthetic), which no other source type takes.
SYNTHETIC_KEYS = {"model", "prompts", "per_prompt", "max_new_tokens", "temperature", "seed", "batch_size"}


def _check_synthetic(src: dict, where: str) -> None:
    """A synthetic source's teacher is one local folder or one variant's artifact (as model.source)."""
    if "path" in src:
        raise UserError(f"{where}.path: a synthetic source has no path (its documents come from model and prompts)")
    kinds = [k for k in ("path", "variant") if k in src["model"]]
    if len(kinds) != 1:
        raise UserError(f"{where}.model: needs exactly one of path (a local model folder) or variant (a variant of this build)")
    if "stage" in src["model"] and kinds != ["variant"]:
        raise UserError(f"{where}.model: stage goes with variant")


def _check_init(m: dict, source: str) -> None:
    """model.init needs the right companions: a source, and for down/upscale one plan."""
    init, src = m["init"], m["source"]
    if init == "random":
        if src is not None:
            raise UserError(f"{source}: model.source is set but model.init is random (set model.source: null, or another model.init)")
        return
    kinds = [k for k in ("path", "hub", "variant") if k in (src or {})]
    if len(kinds) != 1:
        raise UserError(f"{source}: model.source: model.init {init} needs exactly one of path, hub or variant")
    if "stage" in src and kinds != ["variant"] or "revision" in src and kinds != ["hub"]:
        raise UserError(f"{source}: model.source: stage goes with variant, revision with hub")
    given = [k for k in LAYER_PLAN_KEYS if m[k] is not None]
    wanted = {"pretrained": [], "downscale": ["layer_plan", "downscale_keep"], "upscale": ["layer_plan", "upscale_drop"]}[init]
    if any(k not in wanted for k in given) or (wanted and len(given) != 1):
        raise UserError(f"{source}: model.init {init} takes {' or '.join(f'model.{k}' for k in wanted) or 'no layer plan'} (given: {', '.join(given) or 'none'})")


def _check_masked(m: dict, source: str) -> None:
    """An encoder (lmbuild.models.modernbert: ModernBERT) has full multi-head attention and no upscale."""
    if m["num_key_value_heads"] != m["num_attention_heads"]:
        raise UserError(
            f"{source}: model.objective masked builds a ModernBERT encoder, which has no grouped-query attention: "
            f"set model.num_key_value_heads ({m['num_key_value_heads']}) to model.num_attention_heads ({m['num_attention_heads']})"
        )
    if m["init"] == "upscale":
        raise UserError(f"{source}: model.objective masked takes model.init random, pretrained or downscale (not upscale)")


def reference_markdown() -> str:
    """The config reference table of docs/configuration.md, generated from the schema."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]

    def type_of(s: dict) -> str:
        if "enum" in s:
            return " \\| ".join(f"`{v}`" for v in s["enum"])
        t = s.get("type", "object")
        return " \\| ".join(t) if isinstance(t, list) else t

    def walk(schema: dict, prefix: str, items: bool = True) -> None:
        # Defaults that apply under a condition (a synthetic source's: the schema's if/then).
        conditional = schema.get("then", {}).get("properties", {})
        for name, sub in schema.get("properties", {}).items():
            key = f"{prefix}{name}"
            if "default" not in sub and "default" in conditional.get(name, {}):
                sub = {**sub, "default": conditional[name]["default"]}
            default = sub.get("default", "")
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub, key + ".", items)
                continue
            if items and sub.get("type") == "array" and "properties" in sub.get("items", {}):
                desc = " ".join(sub.get("description", "").split())
                rows.append(f"| `{key}` | list | `{json.dumps(default)}` | {desc} |")
                walk(sub["items"], key + "[]" + ".")
                continue
            desc = " ".join(sub.get("description", "").split())
            shown = f"`{json.dumps(default)}`" if "default" in sub else ""
            rows.append(f"| `{key}` | {type_of(sub)} | {shown} | {desc} |")
            # A mapping of named entries whose settings are described (data.classifiers): each as <name>.
            each = sub.get("additionalProperties")
            if isinstance(each, dict) and any("description" in s for s in each.get("properties", {}).values()):
                walk(each, key + ".<name>.", items=False)  # their lists' items are described once, above

    walk(load_schema(), "")
    return "\n".join(rows) + "\n"


START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def update_readme(path: Path) -> bool:
    """Rewrite the generated block of the README; True if it changed."""
    text = path.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{reference_markdown()}{END}{tail}"
    path.write_text(new)
    return new != text


if __name__ == "__main__":
    # python -m lmbuild.build.config            prints the reference table
    # python -m lmbuild.build.config docs/configuration.md  rewrites the generated block there
    import sys

    if len(sys.argv) > 1:
        update_readme(Path(sys.argv[1]))
    else:
        print(reference_markdown(), end="")
