"""Initialise a model from an existing checkpoint: ``pretrained``, ``downscale``, ``upscale``.

Every strategy is a *layer plan*: the list of source decoder layers that the new model's
layers copy, in order. The embeddings, final norm and output projection are copied as they
are.

- ``pretrained``: every layer, in order (continue pretraining the source as it is).
- ``downscale``: fewer layers: the first and last ``downscale_keep`` (the ends of a network
  matter most; Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers",
  drop a block from the middle), or an explicit ``layer_plan`` without repeats.
- ``upscale``: depth up-scaling as SOLAR 10.7B did (Kim et al. 2023, "SOLAR 10.7B: Scaling
  Large Language Models with Simple yet Effective Depth Up-Scaling", arXiv:2312.15166,
  section 2.1): two copies of the n-layer source, the last m layers dropped from the first
  and the first m from the second, concatenated: ``[0 .. n-m-1] + [m .. n-1]``, 2(n-m)
  layers (SOLAR: n=32, m=8, 48 layers). Or any explicit ``layer_plan`` longer than n.

The new model is a fresh ``LlamaForCausalLM`` with ``num_hidden_layers = len(plan)``, so each
attention module's ``layer_idx`` (its slot in the KV cache) is its new position, and
``load_state_dict`` copies each source tensor into that model's own parameters, so duplicated
layers are independent parameters (safetensors also refuses tensors that share memory).

The source is a folder with ``config.json`` and safetensors weights (one file or an index of
shards): an artifact of this build, a local path, or a hub snapshot (``huggingface_hub``,
where the hub is reachable). Pickled weights (``*.bin``) are refused and no remote code runs.

What this module does not do: convert between architectures (Llama-family ``model_type``
``llama`` only), change the vocabulary (the source must have been trained with this build's
tokenizer: same size, same tokens where the source carries a tokenizer), change widths, or
train. The new model's ``model.*`` sizes in the config must describe it: they are checked
against the source, not taken from it, so that a config always says what it builds.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

from lmbuild.errors import UserError
from lmbuild.models.layer_plan import layer_plan

log = logging.getLogger(__name__)

LAYER_PREFIX = "model.layers."
# model.* settings that must equal the source's config (rope_theta is read separately).
ARCHITECTURE = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings")
HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.txt"]


def remap_layers(state: dict[str, torch.Tensor], plan: list[int]) -> dict[str, torch.Tensor]:
    """New layer j's tensors are source layer plan[j]'s (the same tensors: the load copies them)."""
    out, by_layer = {}, {}
    for name, tensor in state.items():
        if name.startswith(LAYER_PREFIX):
            index, rest = name[len(LAYER_PREFIX) :].split(".", 1)
            by_layer.setdefault(int(index), {})[rest] = tensor
        else:
            out[name] = tensor
    for j, i in enumerate(plan):
        for rest, tensor in by_layer[i].items():
            out[f"{LAYER_PREFIX}{j}.{rest}"] = tensor
    return out


# --- the source ----------------------------------------------------------------------


def resolve_source(settings: dict, artifact: Path | None) -> Path:
    """The local folder of the source: an artifact of this build, a path, or a hub snapshot."""
    if artifact is not None:
        return Path(artifact)
    src = settings["source"]
    if src.get("path"):
        path = Path(src["path"])
        if not path.is_dir():
            raise UserError(f"model.source.path: {path}: no such folder")
        return path
    if not src.get("hub"):
        raise UserError("model.source: names a variant's artifact, but it is not among this job's inputs")
    from huggingface_hub import snapshot_download

    try:  # weights as safetensors only: a pickle is never fetched
        return Path(snapshot_download(src["hub"], revision=src.get("revision"), allow_patterns=HUB_FILES))
    except Exception as exc:  # offline, unknown repo, no access: one line naming the key
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model.source.hub: cannot fetch {src['hub']!r} ({type(exc).__name__}: {first}); HF_HUB_OFFLINE=0 where the hub is reachable") from None


def load_source(folder: Path):
    """(config, fp32 state dict) of a Llama checkpoint folder; safetensors only, no remote code."""
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: no config.json (not a Hugging Face model folder)")
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    if config.model_type != "llama":
        raise UserError(f"{folder}/config.json: model_type {config.model_type!r} is not supported (llama only)")
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    if not all((folder / f).is_file() for f in files):
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        why = f"only pickled weights ({', '.join(pickles)}), which are not loaded" if pickles else "no safetensors weights"
        raise UserError(f"{folder}: {why}; save the source with safetensors")
    state = {}
    for f in files:
        state.update(load_file(folder / f, device="cpu"))
    return config, {k: v.float() for k, v in state.items()}


def _rope_theta(config) -> float | None:
    params = getattr(config, "rope_parameters", None) or {}
    return params.get("rope_theta", getattr(config, "rope_theta", None))


def check_compatible(settings: dict, config, folder: Path, tokenizer, plan: list[int]) -> None:
    """The source fits this build: same vocabulary as the tokenizer, same widths as model.*."""
    where = folder / "config.json"
    if config.vocab_size != len(tokenizer):
        raise UserError(
            f"model.source: the source's vocabulary has {config.vocab_size} tokens ({where}) but this build's tokenizer has "
            f"{len(tokenizer)}; initialise from a model trained with the same tokenizer (tokenizer.*)"
        )
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
        theirs, ours = AutoTokenizer.from_pretrained(folder, trust_remote_code=False).get_vocab(), tokenizer.get_vocab()
        if theirs != ours:
            token = (sorted(set(theirs) ^ set(ours)) or sorted(t for t in ours if ours[t] != theirs[t]))[0]
            raise UserError(
                f"model.source: the source's tokenizer ({folder}) differs from this build's (token {token!r} "
                f"is {theirs.get(token)} there, {ours.get(token)} here); use the same tokenizer (tokenizer.*)"
            )
    for key in ARCHITECTURE:
        if settings[key] != getattr(config, key):
            raise UserError(f"model.{key}: {settings[key]} does not match the source's {getattr(config, key)} ({where}); model.* must describe the new model")
    theta = _rope_theta(config)
    if theta is not None and float(settings["rope_theta"]) != float(theta):
        raise UserError(f"model.rope_theta: {settings['rope_theta']} does not match the source's {theta} ({where})")
    if settings["num_hidden_layers"] != len(plan):
        raise UserError(
            f"model.num_hidden_layers: {settings['num_hidden_layers']}, but model.init {settings['init']} of the "
            f"{config.num_hidden_layers}-layer source gives {len(plan)} layers (plan {plan})"
        )


def from_source(settings: dict, tokenizer, artifact: Path | None = None) -> tuple[LlamaForCausalLM, dict]:
    """The new model for ``settings['init']`` (not random), and what the manifest records."""
    folder = resolve_source(settings, artifact)
    source_config, state = load_source(folder)
    n = source_config.num_hidden_layers
    plan = layer_plan(settings, n)
    check_compatible(settings, source_config, folder, tokenizer, plan)

    config = copy.deepcopy(source_config)
    config.num_hidden_layers = len(plan)
    if getattr(config, "layer_types", None):  # per-layer attention kinds follow their layers
        config.layer_types = [source_config.layer_types[i] for i in plan]
    config.dtype = "float32"
    model = LlamaForCausalLM(config).float()
    result = model.load_state_dict(remap_layers(state, plan), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        missing = sorted(set(result.missing_keys) - tied)
        raise UserError(f"{folder}: weights do not fit its config.json (missing {missing[:3]}, unexpected {sorted(result.unexpected_keys)[:3]})")
    if config.tie_word_embeddings:
        model.tie_weights()
    where = {"artifact": str(artifact)} if artifact is not None else {k: v for k, v in settings["source"].items() if v is not None}
    log.info("init %s from %s: %d -> %d layers, plan %s", settings["init"], folder, n, len(plan), plan)
    return model, {"init": settings["init"], "source": where, "source_layers": n, "layer_plan": plan}
