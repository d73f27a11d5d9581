"""Averaged checkpoints: the mean of the last N kept checkpoints of a training run.

A trained checkpoint's manifest lists its kept steps (``counts.kept``: step, tokens seen, path
``steps/<n>``, :mod:`lmbuild.training.kept`); each is a ``from_pretrained`` folder. The average
of the last N of them (by step) is a plain mean of every floating-point tensor of their
safetensors files, computed in float32 and stored in the checkpoints' own dtype, written as a
``from_pretrained`` folder with the newest kept step's config and tokenizer files.

Read by stage ``export`` (``export.checkpoint: average``) and stage ``eval_report``
(``eval.average_last``), which evaluates it beside the kept steps.

What it does not do: weight the checkpoints (no EMA), average optimizer state, or check that
the checkpoints share an architecture beyond their tensor names and shapes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lmbuild.errors import UserError

MARK = "average.json"  # written into an averaged folder: which steps, tokens seen
KEPT_MARK = "checkpoint.json"  # a kept step's own mark (lmbuild.training.checkpoints), not copied


def last_kept(manifest: dict, n: int, where: str) -> list[dict]:
    """The last ``n`` kept steps (by step) of a trained checkpoint's manifest; UserError naming
    ``where`` (the config key) when it kept fewer."""
    kept = sorted((manifest.get("counts") or {}).get("kept") or [], key=lambda k: k["step"])
    if n < 1 or len(kept) < n:
        steps = ", ".join(str(k["step"]) for k in kept) or "none"
        raise UserError(f"{where}: {n} asks for the mean of the last {n} kept checkpoints, but the run kept {len(kept)} (steps: {steps}; set train.keep_steps)")
    return kept[-n:]


def _weights(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder}: no safetensors weights to average")
    return files


def average(folders: list[Path], out: Path) -> dict:
    """The mean of the checkpoints in ``folders`` into ``out`` (created); the last folder's other
    files (config, tokenizer) are copied. Returns what was averaged."""
    out.mkdir(parents=True, exist_ok=True)
    last = folders[-1]
    names = [f.name for f in _weights(last)]
    for folder in folders:
        if [f.name for f in _weights(folder)] != names:
            raise UserError(f"{folder}: its weight files differ from {last}'s: cannot average them")
    tensors = 0
    for name in names:
        sums: dict[str, torch.Tensor] = {}
        dtypes: dict[str, torch.dtype] = {}
        meta = None
        for folder in folders:
            with safe_open(str(folder / name), framework="pt") as f:
                meta = meta if meta is not None else f.metadata()
                keys = set(f.keys())
                if sums and keys != set(sums):
                    raise UserError(f"{folder / name}: its tensors differ from the other checkpoints': cannot average them")
                for k in keys:
                    t = f.get_tensor(k)
                    dtypes.setdefault(k, t.dtype)
                    if k in sums and sums[k].shape != t.shape:
                        raise UserError(f"{folder / name}: {k} has shape {tuple(t.shape)}, not {tuple(sums[k].shape)}: cannot average")
                    if t.is_floating_point():
                        sums[k] = sums[k] + t.float() if k in sums else t.float()
                    else:  # integer buffers (none in a Llama): the newest checkpoint's
                        sums[k] = t
        mean = {k: (v / len(folders)).to(dtypes[k]) if v.is_floating_point() else v for k, v in sums.items()}
        save_file({k: v.contiguous() for k, v in mean.items()}, str(out / name), metadata=meta or {"format": "pt"})
        tensors += len(mean)
    for f in sorted(last.iterdir()):
        if f.is_file() and f.suffix != ".safetensors" and f.name not in (MARK, KEPT_MARK):
            shutil.copyfile(f, out / f.name)
    return {"checkpoints": len(folders), "tensors": tensors}


def average_kept(checkpoint: Path, manifest: dict, n: int, out: Path, where: str) -> dict:
    """The mean of the last ``n`` kept steps of the trained checkpoint at ``checkpoint`` (its
    ``manifest``) into ``out``; returns ``{steps, tokens_seen}`` (those of the newest averaged
    step), also written to ``out/average.json``."""
    kept = last_kept(manifest, n, where)
    average([checkpoint / k["path"] for k in kept], out)
    info = {"steps": [k["step"] for k in kept], "tokens_seen": kept[-1]["tokens_seen"]}
    (out / MARK).write_text(json.dumps(info))
    return info
