"""The evaluation of an encoder: masked-token accuracy and pseudo-perplexity (lmbuild.evaluation.masked), through lmbuild.evaluation.eval_report."""

from __future__ import annotations

import functools
import json
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModelForMaskedLM, AutoTokenizer  # noqa: E402

from lmbuild.evaluation import eval_report as evaluate, masked as masked_eval, report  # noqa: E402

from lmbuild.store import runner
from masked_inputs import encoder_settings, inputs, trained  # noqa: E402, F401 (fixtures)

SEQ = 32


@pytest.fixture(scope="module")
def loaded(trained):
    return AutoModelForMaskedLM.from_pretrained(trained).eval(), AutoTokenizer.from_pretrained(trained)


@pytest.fixture(scope="module")
def texts(inputs):
    return [json.loads(line)["text"] for line in (inputs["shards"] / "val_docs.jsonl").read_text().splitlines()[:3]]


@pytest.fixture(scope="module")
def windows(texts, loaded):
    return masked_eval.document_windows(loaded[1], texts, SEQ)


def test_windows_are_the_documents_first_tokens(windows, texts, loaded):
    tok = loaded[1]
    assert len(windows) == len(texts) == 3 and all(len(w) == SEQ for w in windows)
    assert [w.tolist() for w in windows] == [tok(t, add_special_tokens=False)["input_ids"][:SEQ] for t in texts]
    short = masked_eval.document_windows(tok, ["def f(): pass"], SEQ)[0].tolist()
    assert short == tok("def f(): pass", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_pseudo_perplexity_is_salazar_s_one_mask_at_a_time(windows, loaded):
    """With a budget that covers every token, the batched PPPL equals a plain loop of masked forwards."""
    model, tok = loaded
    got = masked_eval.pseudo_perplexity(model, tok, windows, 10_000, 0, 7, "float32")
    pll, n = 0.0, 0
    for w in windows:
        for i in range(len(w)):
            if w[i] == tok.eos_token_id:
                continue
            x = w.clone()
            x[i] = tok.mask_token_id
            with torch.no_grad():
                logits = model(input_ids=x[None]).logits[0, i]
            pll += torch.log_softmax(logits, -1)[w[i]].item()
            n += 1
    assert got["pseudo_perplexity_tokens"] == got["pseudo_perplexity_candidates"] == n
    assert got["pseudo_perplexity"] == pytest.approx(math.exp(-pll / n), rel=1e-4)


def test_a_smaller_budget_scores_a_seeded_sample(windows, loaded):
    model, tok = loaded
    a = masked_eval.pseudo_perplexity(model, tok, windows, 20, 5, 8, "float32")
    b = masked_eval.pseudo_perplexity(model, tok, windows, 20, 5, 8, "float32")
    c = masked_eval.pseudo_perplexity(model, tok, windows, 20, 6, 8, "float32")
    assert a == b and a["pseudo_perplexity_tokens"] == 20 and a["pseudo_perplexity"] != c["pseudo_perplexity"]


def test_masked_accuracy_masks_15_percent_and_scores_them(windows, loaded):
    model, tok = loaded
    got = masked_eval.masked_accuracy(model, tok, windows, 0.15, 0, 4, "float32")
    total = sum(len(w) for w in windows)
    assert 0.05 * total < got["masked_tokens"] < 0.25 * total
    assert 0 <= got["masked_token_accuracy"] <= 1 and got["masked_token_loss"] > 0
    assert got == masked_eval.masked_accuracy(model, tok, windows, 0.15, 0, 3, "float32")  # batching changes nothing


def test_the_one_evaluation_scores_both_encoders_skips_lm_eval_and_renders(inputs, trained, tmp_path):
    """lmbuild.evaluation.eval_report.build, given the encoders' module (the encoder's entry), hands each encoder to masked_eval: its report.json passes the report
    stage's schema check and the page shows the encoder's metrics."""
    settings = encoder_settings("eval_report", eval={"val_docs": 6, "pseudo_perplexity_tokens": 100, "tasks": ["hellaswag"]})
    ins = {"init_checkpoint": inputs["init_checkpoint"], "trained_checkpoint": trained, "shards": inputs["shards"]}
    out = tmp_path / "eval_report" / "test"
    # hellaswag is never loaded: lm-eval's tasks are for causal checkpoints only (offline, it would fail).
    build = functools.partial(evaluate.build, encoders=masked_eval)  # scripts/eval_report_masked.py
    runner.run(build, stage="eval_report", key="test", settings=settings, lineage={}, inputs=ins, output=out, threads=1)
    data = report.load(out / "report.json")  # the report stage's schema check
    init, done = data["checkpoints"]
    assert [init["label"], done["label"]] == ["init_checkpoint", "trained_checkpoint"] and data["primary"] == "trained_checkpoint"
    for e in (init, done):
        assert e["objective"] == "masked" and "causal" in e["skipped"]["lm_eval"]
        assert e["headline"]["pseudo_perplexity_tokens"] == 100 < e["headline"]["pseudo_perplexity_candidates"]
        assert e["metrics"]["masked_heldout"]["metrics"]["pseudo_perplexity"]["value"] == e["headline"]["pseudo_perplexity"]
        assert e["extra_tasks"] == {} and e["generations"] == [] and e["model"]["config"]["model_type"] == "modernbert"
    assert init["tokens_seen"] == 0 and done["tokens_seen"] > 0 and init["run"] == done["run"] == init["key"]
    # 20 steps of training: better than the random init on both figures.
    assert done["headline"]["pseudo_perplexity"] < init["headline"]["pseudo_perplexity"]
    assert done["headline"]["masked_token_loss"] < init["headline"]["masked_token_loss"]
    assert done["training"]["loss_curve"] and data["lm_eval"]["evaluated"] == [] and data["lm_eval"]["model"] is None
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["trained_checkpoint/pseudo_perplexity"] == done["headline"]["pseudo_perplexity"]
    page = report.render_html(data)
    assert "masked_token_accuracy" in page and "pseudo_perplexity" in page and "<svg" in page
    assert "Not run for trained_checkpoint: generations, lm_eval." in page
