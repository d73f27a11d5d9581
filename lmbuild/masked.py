"""Encoders (``model.objective: masked``): a ModernBERT masked LM, its ``init_checkpoint`` and its training.

Why ModernBERT (Warner et al. 2024, arXiv:2412.13663) and not BERT/RoBERTa: it is in
transformers itself (no remote code), runs on CPU with PyTorch's SDPA attention, uses RoPE
instead of learned positions, pre-norm and GeGLU like the Llama decoder beside it, and takes
any tokenizer: our byte-level BPE plus one added mask token. Its layers live under
``model.layers.<i>.`` as the Llama's do, so ``lmbuild.init.remap_layers`` removes layers for
``downscale`` unchanged.

The config comes from ``model.*`` (``make_config``): layers, width, MLP width (GeGLU's), heads,
context length, ``rope_theta`` (the global-attention layers' RoPE base), tied embeddings,
init range; vocabulary from the tokenizer. ModernBERT's own pattern stays: every third
layer attends globally, the others within a 128-token window, local RoPE base 10,000.

The tokenizer: masked-LM training needs a mask token; where the tokenizer has none (our
BPE's only special token is ``<|endoftext|>``), ``init_checkpoint`` adds ``<|mask|>`` as a
new id at the end of the vocabulary and saves that tokenizer in the checkpoint. The
``tokenizer`` and ``shards`` artifacts are untouched (the shards never contain the mask id),
so a causal and a masked model of one build share them.

Training (``train``): the HF Trainer with ``lmbuild.train``'s pieces (data order, checkpoints
and resume, divergence checks, loss curve, TensorBoard) on the same packed blocks, with
``DataCollatorForLanguageModeling`` (``train.mlm_probability``, BERT's 80/10/10 replacement,
seeded by ``train.seed``) instead of next-token labels. The validation loss is the masked-LM
loss on a fixed masking of the validation blocks (each block masked from ``seed`` and its
index), so the curve's points are comparable.

What this module does not do: upscale an encoder, grouped-query attention, Liger kernels,
flash-attention, or more than one training process (DDP/FSDP are the causal path's). A
resumed run continues the data order exactly, but draws its masks afresh from the seed.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset, Subset
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling, ModernBertConfig, ModernBertForMaskedLM, set_seed
from transformers.integrations import TensorBoardCallback

from lmbuild.accel import use_bf16
from lmbuild.errors import UserError
from lmbuild.init import remap_layers, resolve_source
from lmbuild.layer_plan import layer_plan
from lmbuild.model import count_parameters, flops_per_token
from lmbuild.blocks import META, ShardedBlocks, training_blocks
from lmbuild.runner import StageContext
from lmbuild.train import (
    CurveCallback,
    LMTrainer,
    TrainingDiverged,
    check_resume,
    checkpoint_step,
    evenly_spaced,
    last_checkpoint,
    loss_curve,
    non_finite_parameter,
    training_arguments,
    write_curve,
)

log = logging.getLogger(__name__)

MASK_TOKEN = "<|mask|>"
MODEL_TYPE = "modernbert"
# model.* that must equal an encoder source's config (rope_theta is checked on its own).
ARCHITECTURE = ("hidden_size", "intermediate_size", "num_attention_heads", "max_position_embeddings", "tie_word_embeddings")


def with_mask_token(tokenizer):
    """The tokenizer, with ``<|mask|>`` added as a special token if it has no mask token."""
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    return tokenizer


def make_config(settings: dict, tokenizer) -> ModernBertConfig:
    """A ModernBERT config from the ``model`` settings and the (mask-token) tokenizer."""
    s = settings
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=s["num_attention_heads"],
        max_position_embeddings=s["max_position_embeddings"],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": float(s["rope_theta"])},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        tie_word_embeddings=s["tie_word_embeddings"],
        initializer_range=s["initializer_range"],
        # No [CLS]/[SEP] in packed pretraining blocks: the document separator stands for both.
        pad_token_id=pad,
        eos_token_id=eos,
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos,
        cls_token_id=eos,
        sep_token_id=eos,
        dtype="float32",
    )


def init_model(settings: dict, tokenizer) -> ModernBertForMaskedLM:
    """A fresh fp32 ModernBERT masked LM for ``tokenizer``, initialised from ``settings['seed']``."""
    set_seed(settings["seed"])
    return ModernBertForMaskedLM(make_config(settings, tokenizer)).float()


def load_encoder(folder: Path):
    """(config, fp32 state dict) of a ModernBERT checkpoint folder; safetensors only."""
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: no config.json (not a Hugging Face model folder)")
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    if config.model_type != MODEL_TYPE:
        raise UserError(f"{folder}/config.json: model_type {config.model_type!r} is not an encoder of model.objective masked ({MODEL_TYPE})")
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    if not all((folder / f).is_file() for f in files):
        raise UserError(f"{folder}: no safetensors weights (pickled weights are not loaded)")
    state = {}
    for f in files:
        state.update(load_file(folder / f, device="cpu"))
    return config, {k: v.float() for k, v in state.items()}


def from_source(settings: dict, tokenizer, artifact: Path | None = None) -> tuple[ModernBertForMaskedLM, dict]:
    """An encoder from a source encoder: all its layers (pretrained) or fewer (downscale)."""
    folder = resolve_source(settings, artifact)
    source, state = load_encoder(folder)
    n = source.num_hidden_layers
    plan = layer_plan(settings, n)
    where = folder / "config.json"
    if source.vocab_size != len(tokenizer):
        raise UserError(f"model.source: the source's vocabulary has {source.vocab_size} tokens ({where}) but this build's tokenizer, with its mask token, has {len(tokenizer)}")
    for key in ARCHITECTURE:
        if settings[key] != getattr(source, key):
            raise UserError(f"model.{key}: {settings[key]} does not match the source's {getattr(source, key)} ({where}); model.* must describe the new model")
    theta = (source.rope_parameters or {}).get("full_attention", {}).get("rope_theta")
    if theta is not None and float(settings["rope_theta"]) != float(theta):
        raise UserError(f"model.rope_theta: {settings['rope_theta']} does not match the source's {theta} ({where})")
    if settings["num_hidden_layers"] != len(plan):
        raise UserError(f"model.num_hidden_layers: {settings['num_hidden_layers']}, but model.init {settings['init']} of the {n}-layer source gives {len(plan)} layers (plan {plan})")
    config = copy.deepcopy(source)
    config.num_hidden_layers = len(plan)
    config.layer_types = [source.layer_types[i] for i in plan]  # each layer keeps its attention kind
    config.dtype = "float32"
    model = ModernBertForMaskedLM(config).float()
    result = model.load_state_dict(remap_layers(state, plan), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ()) if config.tie_word_embeddings else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        missing = sorted(set(result.missing_keys) - tied)
        raise UserError(f"{folder}: weights do not fit its config.json (missing {missing[:3]}, unexpected {sorted(result.unexpected_keys)[:3]})")
    if config.tie_word_embeddings:
        model.tie_weights()
    src = {"artifact": str(artifact)} if artifact is not None else {k: v for k, v in settings["source"].items() if v is not None}
    log.info("init %s encoder from %s: %d -> %d layers, plan %s", settings["init"], folder, n, len(plan), plan)
    return model, {"init": settings["init"], "source": src, "source_layers": n, "layer_plan": plan}


def build_init(ctx: StageContext) -> dict:
    """Stage ``init_checkpoint`` for an encoder: the model and the tokenizer with its mask token."""
    torch.set_num_threads(ctx.threads)
    tokenizer = with_mask_token(AutoTokenizer.from_pretrained(ctx.inputs["tokenizer"]))
    if ctx.settings["init"] == "random":
        model, extra = init_model(ctx.settings, tokenizer), {"init": "random"}
    else:
        model, extra = from_source(ctx.settings, tokenizer, ctx.inputs.get("source"))
    model.save_pretrained(ctx.out)
    tokenizer.save_pretrained(ctx.out)
    c = model.config
    non_embedding = count_parameters(model, non_embedding=True)
    counts = {
        "objective": "masked",
        "model_type": MODEL_TYPE,
        "parameters": count_parameters(model),
        "non_embedding_parameters": non_embedding,
        "layers": c.num_hidden_layers,
        "layer_types": list(c.layer_types),
        "hidden": c.hidden_size,
        "vocab_size": c.vocab_size,
        "mask_token": tokenizer.mask_token,
        "mask_token_id": tokenizer.mask_token_id,
        "flops_per_token": flops_per_token(c, non_embedding, c.max_position_embeddings),
        "flops_per_token_formula": "6*(non_embedding_parameters + vocab*hidden) + 12*layers*hidden*max_position_embeddings",
        **extra,
    }
    log.info("init_checkpoint (encoder): %s", counts)
    return counts


# --------------------------------------------------------------------------- training


class InputIds(Dataset):
    """Packed blocks as ``{"input_ids"}`` only: the collator draws the masked-LM labels."""

    def __init__(self, blocks: Dataset):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.blocks[i]["input_ids"]}


class FixedMasking(Dataset):
    """Blocks masked once and for all: block i's masks are drawn from ``seed`` and i, so every
    validation pass scores the same positions."""

    def __init__(self, blocks: Dataset, tokenizer, probability: float, seed: int):
        self.blocks, self.tokenizer, self.probability, self.seed = blocks, tokenizer, probability, seed

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        collator = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=self.probability, seed=self.seed * 1_000_003 + i)
        batch = collator([self.blocks[i]["input_ids"]])
        return {"input_ids": batch["input_ids"][0], "labels": batch["labels"][0]}


def mlm_collator(tokenizer, probability: float, seed: int):
    """Training batches are masked here (seeded); validation items arrive masked (FixedMasking)."""
    draw = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, seed=seed)

    def collate(examples: list[dict]) -> dict:
        if "labels" in examples[0]:
            return {k: torch.stack([e[k] for e in examples]) for k in ("input_ids", "labels")}
        # A list of equal-length tensors is stacked, not padded through the tokenizer.
        return draw([e["input_ids"] for e in examples])

    return collate


def train(s: dict, inputs: dict[str, Path], out: Path, work: Path, threads: int) -> dict:
    """Train the encoder in this process; write the artifact into ``out``; return the counts."""
    torch.set_num_threads(threads)
    shards, init = inputs["shards"], inputs["init_checkpoint"]
    meta = json.loads((shards / META).read_text())
    tokenizer = AutoTokenizer.from_pretrained(init)
    if tokenizer.mask_token is None:
        raise UserError(f"{init}: the tokenizer has no mask token (not an encoder's init_checkpoint)")
    model = AutoModelForMaskedLM.from_pretrained(init, dtype=torch.float32, attn_implementation="sdpa")
    if model.config.model_type != MODEL_TYPE:
        raise UserError(f"{init}: model_type {model.config.model_type!r}, not an encoder ({MODEL_TYPE})")
    if meta["vocab_size"] > model.config.vocab_size:
        raise UserError(f"{shards}: vocab_size {meta['vocab_size']} exceeds the model's {model.config.vocab_size} (a different tokenizer?)")
    if meta["seq_len"] > model.config.max_position_embeddings:
        raise UserError(f"{shards}: seq_len {meta['seq_len']} exceeds model.max_position_embeddings {model.config.max_position_embeddings}")

    train_data = InputIds(training_blocks(shards, s.get("mixture") or {}, s["seed"]))
    val_data = ShardedBlocks(shards, "val")
    per_step = s["batch_size"] * s["gradient_accumulation_steps"]
    if len(train_data) < per_step:
        raise UserError(f"{shards}: {len(train_data)} training blocks, fewer than one step's train.batch_size * train.gradient_accumulation_steps = {per_step}")
    val_subset = FixedMasking(Subset(val_data, evenly_spaced(len(val_data), s["eval_batches"] * s["batch_size"])), tokenizer, s["mlm_probability"], s["seed"])
    bf16 = use_bf16(s["bf16"])
    checkpoints = work / "trainer"
    resume = last_checkpoint(checkpoints)
    start_step = checkpoint_step(resume) if resume else 0
    args = training_arguments(s, checkpoints, bf16=bf16, world=1, resume=resume is not None)
    tokens_per_step = per_step * meta["seq_len"]
    trainer = LMTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=val_subset,
        processing_class=tokenizer,
        data_collator=mlm_collator(tokenizer, s["mlm_probability"], s["seed"]),
        tokens_per_step=tokens_per_step,
        seed=s["seed"],
        callbacks=[CurveCallback(), TensorBoardCallback(SummaryWriter(log_dir=str(work / "tensorboard")))],
    )
    if resume:
        check_resume(resume, trainer.order)
        log.info("resuming from %s", resume)
    log.info("training encoder %s on %d blocks (bf16=%s, mlm_probability=%g), validating on %d blocks", init, len(train_data), bf16, s["mlm_probability"], len(val_subset))
    started = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = time.time() - started
    trainer.check_losses()
    bad = non_finite_parameter(trainer.model)
    if bad:
        raise TrainingDiverged(f"non-finite parameter {bad} after step {trainer.state.global_step}: the model is not saved")
    trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "training_args.bin").unlink(missing_ok=True)  # a pickle: never in an artifact
    rows = loss_curve(trainer.state.log_history, tokens_per_step)
    val = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    write_curve(out / "loss_curve.csv", rows)
    shutil.copytree(work / "tensorboard", out / "tensorboard")
    step_seconds = max(result.metrics["train_runtime"] - trainer.eval_seconds, 1e-9)
    counts = {
        "objective": "masked",
        "mlm_probability": s["mlm_probability"],
        "steps": trainer.state.global_step,
        "tokens_seen": trainer.state.global_step * tokens_per_step,
        "initial_val_loss": val[0] if val else None,
        "final_val_loss": val[-1] if val else None,
        "final_train_loss": next((r["train_loss"] for r in reversed(rows) if r["train_loss"] is not None), None),
        "loss": "masked-LM cross-entropy over the masked positions (nats per masked token)",
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(trainer.eval_seconds, 3),
        "tokens_per_second": round((trainer.state.global_step - start_step) * tokens_per_step / step_seconds),
        "bf16": bf16,
        "kernels": "torch",
        "attention": "sdpa",
        "processes": 1,
        "parallel": None,
        "parameters": count_parameters(trainer.model),
        "resumed_from_step": start_step if resume else None,
    }
    log.info("trained_checkpoint (encoder): %s", counts)
    return counts


def build_train(ctx: StageContext) -> dict:
    """Stage ``trained_checkpoint`` for an encoder (one process)."""
    if ctx.gpus > 1:
        raise UserError(f"model.objective masked trains in one process; resources.trained_checkpoint.gpu is {ctx.gpus} (set it to 0 or 1)")
    return train(ctx.settings, ctx.inputs, ctx.out, ctx.work, ctx.threads)
