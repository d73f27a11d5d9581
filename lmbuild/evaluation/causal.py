"""The evaluation of a causal checkpoint in stage ``eval_report``: its figures for the report.

Per causal checkpoint (whatever is not an encoder: :func:`lmbuild.evaluation.checkpoints.is_encoder`):

  * the held-out task (``lmbuild_heldout``) and the extra tasks (``eval.tasks``) in one
    ``lm_eval.simple_evaluate`` call with a pinned batch size, fixed seeds, and lm-eval's
    request cache in the scratch dir (one cache file per checkpoint), so an interrupted
    evaluation resumes where it stopped (:class:`ResumableHFLM`);
  * the token-level held-out loss, comparable with training's val loss, from bits per byte;
  * greedy sample generations for ``eval.prompts``;
  * its tokenizer's and model's figures (:mod:`lmbuild.evaluation.metrics`).

lm-eval's request cache is keyed by request text, not by model: it is safe here because each
cache file belongs to one checkpoint of one artifact key (so one batch size). A resumed run may
batch the remaining windows differently, which can move scores in the last float digits.

What it does not do: write the task files (:mod:`lmbuild.evaluation.lm_eval_tasks`), assemble
the report entry (``lmbuild.evaluation.eval_report.evaluate_checkpoint``), or trust remote code.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from transformers import GenerationConfig

from lmbuild.evaluation.lm_eval_tasks import HELDOUT_TASK, limit_samples, load_extra_tasks
from lmbuild.evaluation.metrics import collect_metrics, main_metric, model_summary, tokenizer_stats
from lmbuild.training import accel

HELDOUT_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")
# Held-out documents scored per call, so that their results reach the request cache in steps.
ROLLING_CHUNK = 32


class ResumableHFLM(HFLM):
    """lm-eval's HF model, scoring rolling log-likelihoods ``ROLLING_CHUNK`` documents at a time.

    In lm-eval 0.4.x ``HFLM.loglikelihood_rolling`` writes results to the request cache only
    after every document of the call is scored, so a crash loses the whole held-out pass.
    Scoring in chunks bounds the loss to one chunk; each window is still scored in batches of
    the pinned batch size. Nothing else changes.
    """

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        out: list[float] = []
        for i in range(0, len(requests), ROLLING_CHUNK):
            out.extend(super().loglikelihood_rolling(requests[i : i + ROLLING_CHUNK], disable_tqdm=disable_tqdm))
        return out


def evaluate_causal(ck: dict, tm: TaskManager, extra_names: list[str], heldout: dict, settings: dict, work: Path, seq_len: int) -> dict:
    """A causal checkpoint's figures: lm-eval (held-out perplexity + extra tasks), generations,
    tokenizer and model. The request cache is per checkpoint: lm-eval keys it by request text,
    not by model."""
    s = settings
    ckpt, label = ck["path"], ck["label"]
    tops, leaves = load_extra_tasks(tm, extra_names)
    samples = limit_samples(leaves, s.get("limit"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # eval.dtype bfloat16: bf16 autocast over the fp32 weights, as in training; log-softmax in fp32 either way.
    dtype = accel.eval_dtype(s.get("dtype", "auto"))
    model_args = {"pretrained": str(ckpt), "dtype": "float32", "mixed_precision_dtype": None if dtype == "float32" else dtype,
                  "softmax_dtype": "float32", "trust_remote_code": False}
    lm = ResumableHFLM(**model_args, batch_size=s["batch_size"], device=device)
    seed = s["seed"]
    t0 = time.time()
    results = simple_evaluate(
        model=lm,
        tasks=[HELDOUT_TASK, *tops],
        task_manager=tm,
        batch_size=s["batch_size"],
        device=device,
        use_cache=str(work / f"lm_eval_cache_{label}"),
        samples=samples,
        log_samples=False,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    eval_seconds = time.time() - t0
    metrics = collect_metrics(results)

    # Token-level held-out loss, comparable with training's val loss: total NLL from bits/byte.
    held = {m: metrics[HELDOUT_TASK]["metrics"].get(m, {}).get("value") for m in HELDOUT_METRICS}
    tok = tokenizer_stats(lm.tokenizer, heldout["texts"])
    n_tokens = tok["tokens"]
    token_loss = held["bits_per_byte"] * math.log(2) * heldout["bytes"] / n_tokens if held["bits_per_byte"] is not None else None

    t0 = time.time()
    generations = generate_samples(lm.model, lm.tokenizer, list(s["prompts"]), s["max_new_tokens"], seed, dtype)
    gen_seconds = time.time() - t0

    counts = ck["manifest"].get("counts", {}) or {}
    headline = {
        "initial_val_loss": counts.get("initial_val_loss"),
        "final_val_loss": counts.get("final_val_loss"),
        "heldout_token_loss": token_loss,
        "heldout_token_perplexity": math.exp(token_loss) if token_loss is not None and token_loss < 700 else None,
        "heldout_word_perplexity": held["word_perplexity"],
        "heldout_byte_perplexity": held["byte_perplexity"],
        "heldout_bits_per_byte": held["bits_per_byte"],
        "heldout_docs": heldout["docs"],
        "heldout_tokens": n_tokens,
        "heldout_bytes": heldout["bytes"],
    }
    extra_main = {}
    for name in extra_names:
        metric = main_metric(results, name, metrics)
        if metric is not None:
            extra_main[name] = {"metric": metric, **metrics[name]["metrics"][metric]}
    cfg = results.get("config", {})
    part = {
        "headline": headline,
        "metrics": metrics,
        "extra_tasks": extra_main,
        "generations": generations,
        "tokenizer": tok,
        "model": model_summary(lm.model, seq_len),
        "lm_eval": {
            "model_args": model_args,
            "device": device,
            "dtype": dtype,
            "samples_per_task": {t: (m.get("n_samples") or {}).get("effective") for t, m in metrics.items()},
            "seeds": {k: cfg.get(k) for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")},
            "bootstrap_iters": cfg.get("bootstrap_iters"),
            "max_length": lm.max_length,
        },
        "seconds": {"lm_eval": round(eval_seconds, 3), "generation": round(gen_seconds, 3)},
    }
    del lm
    return part


@torch.no_grad()
def generate_samples(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int, dtype: str = "float32") -> list[dict]:
    """Greedy continuations of each prompt; stops early at the end-of-text token.

    ``dtype`` bfloat16: under bf16 autocast, as the scoring.

    The prompt follows an end-of-text token, as a document does in training and in lm-eval's
    rolling windows. A prompt too long for the context keeps its end.
    """
    model.eval()
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad)
    # Keep prompt + completion within the trained context where the prompt allows.
    prefix = [eos] if eos is not None else []
    room = max(1, getattr(model.config, "max_position_embeddings", 10**9) - max_new_tokens - len(prefix))
    device = next(model.parameters()).device
    out = []
    for prompt in prompts:
        ids = prefix + tokenizer(prompt, add_special_tokens=False)["input_ids"][-room:]
        ids = ids or [0]  # an empty prompt and no end-of-text token
        input_ids = torch.tensor([ids], device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            seq = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
        new = seq[0, len(ids) :].tolist()
        out.append(
            {
                "prompt": prompt,
                "completion": tokenizer.decode(new, skip_special_tokens=False),
                "new_tokens": len(new),
                "stopped_at_eos": bool(new) and new[-1] == eos,
            }
        )
    return out
