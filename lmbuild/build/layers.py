"""Where a build's config comes from: its layers, merged in one predictable order.

From lowest to highest:

  1. lmbuild's defaults (``lmbuild/schemas/config.schema.yaml``),
  2. a language preset (``data.clean.preset``, lmbuild.build.presets.PRESETS),
  3. the user's config files, in the order given (``--configfile a.yaml b.yaml``),
  4. ``--config key=value`` on the command line.

A higher layer's mapping merges into a lower one key by key; anything else (a list, a number, a
string) replaces what is below it, as Snakemake merges config files. The embedded demo's
``config.yaml`` (beside the Snakefile) is the user's config file only when no ``--configfile`` is
given: a user's own config never inherits the demo's choices.

:func:`load` merges layers 3 and 4 and records, for every value, the layer it came from;
:func:`origins` adds layers 1 and 2 after ``lmbuild.build.config.validate`` has filled them in, for
``lmbuild config`` (as ``git config --show-origin`` does).

What this module does not do: validate (``lmbuild.build.config`` does), or read the preset's values
itself (``lmbuild.data.lang``).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import yaml

from lmbuild.errors import UserError

DEMO = "config.yaml"  # the embedded demo's config, beside the Snakefile
DEFAULT, COMMAND_LINE = "default", "command line"


@dataclasses.dataclass
class Layered:
    """The user's layers merged (3 and 4 above), and each value's origin: dotted path -> label."""

    config: dict
    origins: dict[str, str]
    files: list[str]


def read_file(path: str | Path) -> dict:
    """One YAML config file as a mapping; one line naming the file (and line) otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"config: {path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"config: {path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"config: {path}{where}: not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config: {path}: expected a mapping of settings, got a {type(data).__name__}")
    return data


def leaves(node, prefix: str = "", whole=lambda node: False):
    """(dotted path, value) of every leaf: a value that is not a non-empty mapping or a list of
    mappings (``data.sources[0].path``); a mapping for which ``whole`` is true is one leaf."""
    if isinstance(node, dict) and node and not whole(node):
        for k, v in node.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else str(k), whole)
    elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        for i, v in enumerate(node):
            yield from leaves(v, f"{prefix}[{i}]", whole)
    else:
        yield prefix, node


def _merge_into(base: dict, over: dict, origins: dict, label: str, prefix: str = "") -> None:
    for k, v in over.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v and isinstance(base.get(k), dict):
            _merge_into(base[k], v, origins, label, path)
            continue
        for p in [p for p in origins if p == path or p.startswith((path + ".", path + "["))]:
            del origins[p]
        base[k] = copy.deepcopy(v)
        for leaf, _ in leaves(v, path):
            origins[leaf] = label


def merge(layers: list[tuple[str, dict]]) -> tuple[dict, dict]:
    """``[(label, mapping), ...]`` lowest first -> (merged mapping, dotted path -> label)."""
    out: dict = {}
    origins: dict[str, str] = {}
    for label, layer in layers:
        _merge_into(out, layer, origins, label)
    return out, origins


def load(files: list, cli: dict | None = None, demo: str | Path | None = None) -> Layered:
    """The user's config files (the demo's ``config.yaml`` when there are none) and the command
    line's ``--config`` values, merged, with each value's origin."""
    paths = [str(f) for f in files] or ([str(demo)] if demo is not None else [])
    layers = [(f"file:{DEMO}" if not files else f"file:{p}", read_file(p)) for p in paths]
    if cli:
        layers.append((COMMAND_LINE, dict(cli)))
    config, origin = merge(layers)
    return Layered(config, origin, paths)


def origins(validated: dict, user: dict[str, str], preset: dict | None, preset_name: str | None) -> dict[str, str]:
    """Every leaf of the validated config -> its layer: the user's label, ``preset <name>``, or
    ``default``. A path below one the user set (a list, say) takes the user's label."""
    preset_paths = {f"data.clean.{p}" for p, _ in leaves(preset or {})}
    out = {}
    for path, _ in leaves(validated):
        label = _user_label(path, user)
        if label is None:
            label = f"preset {preset_name}" if path in preset_paths else DEFAULT
        out[path] = label
    return out


def _user_label(path: str, user: dict[str, str]) -> str | None:
    """The label of ``path`` or of the nearest enclosing value the user set as a whole."""
    probe = path
    while probe:
        if probe in user:
            return user[probe]
        probe = probe[: max(probe.rfind("."), probe.rfind("["), 0)]
    return None


def show(validated: dict, where: dict[str, str]) -> str:
    """``lmbuild config``'s text: one ``<origin>\\t<dotted.key>=<value>`` line per value."""
    import json

    lines = []
    for path, value in leaves(validated):
        shown = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        lines.append(f"{where.get(path, DEFAULT)}\t{path}={shown}")
    return "\n".join(lines) + "\n"
