"""Per-source cleaning settings: ``data.clean.per_source``.

A corpus mixes kinds of text: web pages beside a forum dump, a code source, plays whose speaker
lines are short by design. ``data.clean.per_source`` maps a source name (the ``source`` column,
lmbuild.data.files.source_name) to ``data.clean`` settings that apply to that source's documents
only, on top of the stage's own (a ``preset`` too: a Thai source in an English corpus)::

    data:
      clean:
        per_source:
          shakespeare: {c4: {enabled: false}, fineweb: {enabled: false}}

The config check (lmbuild.build.config) keeps each entry as the minimal difference from the stage's
settings, in canonical form, so an override equal to the stage's own setting is no override and
changes no key. Sections that act on the whole stage (``WHOLE_STAGE``) cannot be set per source.

What this module does not do: read documents (lmbuild.data.cleaned dispatches them by source).
"""

from __future__ import annotations

import copy

# Decided once for the stage: the classifier input, the dropped-document sample, nesting.
WHOLE_STAGE = ("per_source", "quality", "dropped")


def merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` on top, mappings merged key by key (``over`` wins)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def difference(base: dict, effective: dict) -> dict:
    """The smallest mapping that :func:`merge` puts on ``base`` to give ``effective``."""
    out = {}
    for k, v in effective.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            sub = difference(base[k], v)
            if sub:
                out[k] = sub
        elif k not in base or base[k] != v:
            out[k] = copy.deepcopy(v)
    return out


def stage_settings(clean: dict) -> dict:
    """The stage's own settings: ``data.clean`` without its per-source entries."""
    return {k: v for k, v in clean.items() if k != "per_source"}


def for_source(clean: dict, name: str) -> dict:
    """The cleaning settings of the documents of source ``name`` (validated ``data.clean``)."""
    return merge(stage_settings(clean), (clean.get("per_source") or {}).get(name, {}))
