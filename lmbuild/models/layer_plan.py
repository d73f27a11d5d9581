"""Layer plans: which source decoder layer each layer of a new model copies (``model.init``
``pretrained``, ``downscale``, ``upscale``; see lmbuild.models.surgery for the strategies and papers).

Kept apart from lmbuild.models.surgery, without torch or transformers: a shared leaf
(lmbuild.build.codeset.LEAVES), so that a config can be checked against a source variant's
before anything trains (lmbuild.build.variants) at no import cost, while the initial
checkpoint's code set holds it. (Which model.* keys pick a plan is config: LAYER_PLAN_KEYS,
lmbuild.build.stages.)
"""

from __future__ import annotations

from lmbuild.errors import UserError


def solar_plan(n: int, m: int) -> list[int]:
    """SOLAR depth up-scaling of an n-layer model with overlap m: 2(n-m) layers."""
    if not 0 <= m < n:
        raise UserError(f"model.upscale_drop: {m} must be at least 0 and smaller than the source's {n} layers")
    return list(range(n - m)) + list(range(m, n))


def keep_ends_plan(n: int, k: int) -> list[int]:
    """The first k and the last k of n layers (2k < n, so that something is removed)."""
    if not 1 <= k or 2 * k >= n:
        raise UserError(f"model.downscale_keep: keeping the first and last {k} of {n} source layers removes nothing (need 2*{k} < {n})")
    return list(range(k)) + list(range(n - k, n))


def layer_plan(settings: dict, n: int) -> list[int]:
    """The source layer behind each new layer, for ``settings['init']`` and an n-layer source."""
    init = settings["init"]
    if init == "pretrained":
        return list(range(n))
    explicit = settings.get("layer_plan")
    if explicit is None:
        if init == "downscale":
            return keep_ends_plan(n, settings["downscale_keep"])
        return solar_plan(n, settings["upscale_drop"])
    bad = [i for i in explicit if not 0 <= i < n]
    if bad:
        raise UserError(f"model.layer_plan: layer {bad[0]} does not exist in the {n}-layer source")
    if init == "downscale" and (len(set(explicit)) != len(explicit) or len(explicit) >= n):
        raise UserError(f"model.layer_plan: a downscale plan keeps fewer than the source's {n} layers, each at most once")
    if init == "upscale" and len(explicit) <= n:
        raise UserError(f"model.layer_plan: an upscale plan has more than the source's {n} layers (it has {len(explicit)})")
    return list(explicit)
