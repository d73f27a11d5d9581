"""The evaluation of an encoder (``model.objective: masked``) checkpoint in stage ``eval_report``.

``lmbuild.evaluation.eval_report.build`` evaluates every checkpoint input and calls :func:`evaluate_encoder`
for each encoder (``checkpoints.is_encoder``), given this module by the encoder's entry
(scripts/eval_report_masked.py); this module holds only what is an encoder's. Each
encoder gets, on the held-out documents of the ``shards`` artifact (the first
``eval.val_docs``, as for a causal model), each document's first ``seq_len`` tokens (its eos
appended, as in training):

- **masked-token accuracy** and the masked-LM loss: 15% of the tokens (BERT's rate, Devlin et
  al. 2019, whatever the training used, so that reports compare; the separator never) replaced
  by the mask token, drawn from ``eval.seed``; the share of them
  predicted exactly (argmax) and their mean cross-entropy. All chosen tokens are masked (no
  80/10/10 as in training), so that the accuracy is not inflated by tokens left in place.
- **pseudo-perplexity** (Salazar et al. 2020, "Masked Language Model Scoring", ACL,
  arXiv:1910.14659): each token scored with only itself masked, one forward pass per token;
  PPPL = exp(-(1/N) * sum of log P(token | the rest)). One pass per token costs
  tokens x window on CPU, so ``eval.pseudo_perplexity_tokens`` tokens are scored, a seeded
  (``eval.seed``) sample without replacement of all the windows' tokens: an estimate of the
  PPPL over the windows, exact where the budget covers them all.

lm-eval's tasks (held-out bits/byte, ``eval.tasks``) and the sample generations are skipped for
an encoder, with the reason in its entry's ``skipped``: they score or sample continuations from
a causal LM, which an encoder is not. Its entry has the one shape of
``lmbuild/schemas/report.schema.json``; its metrics sit under the task name ``masked_heldout``.

What this module does not do: assemble the report (``lmbuild.evaluation.eval_report``), compare PPPL with a
causal model's perplexity (they are not the same quantity), or score windows beyond each
document's first.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from lmbuild.errors import UserError
from lmbuild.training import accel

log = logging.getLogger(__name__)

TASK = "masked_heldout"
# An encoder's headline figures in the eval_report manifest's counts.
HEADLINE = ("masked_token_accuracy", "pseudo_perplexity")
MASK_PROBABILITY = 0.15
SKIPPED = (
    "lm-eval's tasks (held-out bits/byte, eval.tasks) and the sample generations score or sample continuations "
    "of a causal language model; an encoder (model.objective masked) is scored by masked-token accuracy and "
    "pseudo-perplexity instead"
)


def document_windows(tokenizer, texts: list[str], seq_len: int) -> list[torch.Tensor]:
    """Each document's first ``seq_len`` token ids, its eos appended first (as the shards do)."""
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) > 1:
            out.append(torch.tensor(ids[:seq_len]))
    if not out:
        raise UserError("eval_report: no held-out document has a token to score")
    return out


def _scorable(tokenizer, window: torch.Tensor) -> torch.Tensor:
    special = torch.tensor(tokenizer.get_special_tokens_mask(window.tolist(), already_has_special_tokens=True), dtype=torch.bool)
    return ~special


def _log_probs(model, rows: list[torch.Tensor], positions: list[torch.Tensor], pad_id: int, dtype: str) -> list[torch.Tensor]:
    """Log-probabilities [len(positions[i]), vocab] at the given positions of each right-padded row
    (pads are not attended). The vocabulary projection runs at those positions only (the encoder's
    head and decoder on their hidden states), not at every position: on CPU it is ~40% of a pass."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    device = next(model.parameters()).device
    index = torch.cat([torch.full((len(p),), i) for i, p in enumerate(positions)]), torch.cat(positions)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        hidden = model.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        logits = model.decoder(model.head(hidden[index[0].to(device), index[1].to(device)]))
    logp = torch.log_softmax(logits.float(), dim=-1).cpu()
    return list(logp.split([len(p) for p in positions]))


def masked_accuracy(model, tokenizer, windows: list[torch.Tensor], probability: float, seed: int, batch_size: int, dtype: str) -> dict:
    """Accuracy and mean cross-entropy at ``probability`` of each window's tokens, all masked."""
    g = torch.Generator().manual_seed(seed)
    rows, chosen = [], []
    for w in windows:
        pick = (torch.rand(len(w), generator=g) < probability) & _scorable(tokenizer, w)
        rows.append(torch.where(pick, tokenizer.mask_token_id, w))
        chosen.append(pick)
    correct, nll, n = 0, 0.0, 0
    for start in range(0, len(rows), batch_size):
        picks = [p.nonzero().flatten() for p in chosen[start : start + batch_size]]
        logps = _log_probs(model, rows[start : start + batch_size], picks, tokenizer.pad_token_id or 0, dtype)
        for w, pos, lp in zip(windows[start : start + batch_size], picks, logps):
            correct += int((lp.argmax(-1) == w[pos]).sum())
            nll -= float(lp.gather(1, w[pos].unsqueeze(1)).sum())
            n += len(pos)
    return {"masked_token_accuracy": correct / n if n else None, "masked_token_loss": nll / n if n else None, "masked_tokens": n}


def pseudo_perplexity(model, tokenizer, windows: list[torch.Tensor], budget: int, seed: int, batch_size: int, dtype: str) -> dict:
    """Salazar et al.'s PPPL over a seeded sample of ``budget`` of the windows' tokens."""
    candidates = [(d, int(i)) for d, w in enumerate(windows) for i in _scorable(tokenizer, w).nonzero().flatten()]
    if len(candidates) > budget:
        order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))[:budget]
        candidates = [candidates[i] for i in sorted(order.tolist())]
    pll = 0.0
    for start in range(0, len(candidates), batch_size):
        part = candidates[start : start + batch_size]
        rows = []
        for d, i in part:
            row = windows[d].clone()
            row[i] = tokenizer.mask_token_id
            rows.append(row)
        logps = _log_probs(model, rows, [torch.tensor([i]) for _, i in part], tokenizer.pad_token_id or 0, dtype)
        pll += sum(float(lp[0, windows[d][i]]) for lp, (d, i) in zip(logps, part))
    n = len(candidates)
    return {
        "pseudo_perplexity": math.exp(-pll / n) if n and -pll / n < 700 else None,
        "pseudo_log_likelihood_per_token": pll / n if n else None,
        "pseudo_perplexity_tokens": n,
        "pseudo_perplexity_candidates": sum(int(_scorable(tokenizer, w).sum()) for w in windows),
    }


def _metric(value, higher_is_better: bool) -> dict:
    return {"value": value, "stderr": None, "higher_is_better": higher_is_better}


def evaluate_encoder(ckpt: Path, label: str, counts: dict, heldout: dict, settings: dict, seq_len: int, probability: float = MASK_PROBABILITY) -> dict:
    """An encoder checkpoint's figures for its report entry (``lmbuild.evaluation.eval_report.evaluate_checkpoint``
    adds what every entry has, and the tokenizer and model summaries from ``loaded``: the model
    and the tokenizer). ``counts``: the checkpoint manifest's (its validation losses)."""
    s = settings
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = accel.eval_dtype(s.get("dtype", "auto"))
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    if tokenizer.mask_token_id is None:
        raise UserError(f"{label} {ckpt}: the tokenizer has no mask token (not an encoder's checkpoint)")
    model = AutoModelForMaskedLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="sdpa").to(device).eval()
    windows = document_windows(tokenizer, heldout["texts"], seq_len)
    t0 = time.time()
    acc = masked_accuracy(model, tokenizer, windows, probability, s["seed"], s["batch_size"], dtype)
    t1 = time.time()
    ppl = pseudo_perplexity(model, tokenizer, windows, s["pseudo_perplexity_tokens"], s["seed"], s["batch_size"], dtype)
    t2 = time.time()
    headline = {
        "initial_val_loss": counts.get("initial_val_loss"),
        "final_val_loss": counts.get("final_val_loss"),
        **acc,
        **ppl,
        "heldout_docs": len(windows),
        "heldout_tokens": sum(len(w) for w in windows),
    }
    metrics = {
        TASK: {
            "alias": "held-out documents, masked (lmbuild.evaluation.masked)",
            "version": 1,
            "n_samples": {"original": len(windows), "effective": len(windows)},
            "metrics": {
                "masked_token_accuracy": _metric(acc["masked_token_accuracy"], True),
                "masked_token_loss": _metric(acc["masked_token_loss"], False),
                "pseudo_perplexity": _metric(ppl["pseudo_perplexity"], False),
            },
        }
    }
    return {
        "objective": "masked",
        "headline": headline,
        "metrics": metrics,
        "extra_tasks": {},
        "skipped": {"lm_eval": SKIPPED, "generations": SKIPPED},
        "generations": [],
        "masked_eval": {
            "windows": f"each held-out document's first {seq_len} tokens (eos appended)",
            "mask_probability": probability,
            "masking": "every chosen token replaced by the mask token; separators never chosen",
            "pseudo_perplexity": "Salazar et al. 2020, one token masked per forward pass; a seeded sample of eval.pseudo_perplexity_tokens tokens",
            "seed": s["seed"],
            "batch_size": s["batch_size"],
            "device": device,
            "dtype": dtype,
        },
        "lm_eval": {"skipped": SKIPPED, "device": device, "dtype": dtype},
        "seconds": {"masked_accuracy": round(t1 - t0, 3), "pseudo_perplexity": round(t2 - t1, 3)},
        "loaded": (model, tokenizer),
    }
