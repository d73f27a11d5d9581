"""lmbuild.report: the report.json data dict rendered as PNG, HTML and Markdown (no model needed)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from matplotlib import image

from lmbuild import report

NASTY = "</pre><script>alert(1)</script> | `x` ```"


def sample_data() -> dict:
    return {
        "key": "evalkey000000001",
        "headline": {
            "initial_val_loss": 9.1, "final_val_loss": 4.25, "heldout_token_loss": 4.3,
            "heldout_token_perplexity": 73.7, "heldout_word_perplexity": 512.3,
            "heldout_bits_per_byte": 1.71, "heldout_docs": 20, "heldout_tokens": 81234,
        },
        "extra_tasks": {"mini_hellaswag": {"metric": "acc", "value": 0.3, "stderr": 0.0458}},
        "metrics": {
            "lmbuild_heldout": {"alias": "lmbuild_heldout", "n_samples": {"original": 20, "effective": 20}, "metrics": {
                "word_perplexity": {"value": 512.3, "stderr": None, "higher_is_better": False},
                "bits_per_byte": {"value": 1.71, "stderr": None, "higher_is_better": False},
            }},
            "mini_hellaswag": {"alias": "mini_hellaswag", "n_samples": {"original": 50, "effective": 10}, "metrics": {
                "acc": {"value": 0.3, "stderr": 0.0458, "higher_is_better": True},
            }},
        },
        "training": {
            "summary": {"initial_val_loss": 9.1, "final_val_loss": 4.25, "tokens_seen": 1638400, "tokens_per_second": 4012.7, "parameters": 5012480},
            "settings": {"learning_rate": 0.002, "max_steps": 400, "bf16": "auto"},
            "model": {"hidden_size": 256, "num_hidden_layers": 4},
        },
        "loss_curve": [
            {"step": s, "tokens": s * 4096, "train_loss": 9.0 - s / 60 if s else None, "val_loss": 9.1 - s / 70 if s % 100 == 0 else None}
            for s in range(0, 401, 10)
        ],
        "generations": [{"prompt": "ROMEO:", "completion": NASTY, "new_tokens": 9, "stopped_at_eos": False}],
        "settings": {"tasks": ["mini_hellaswag"], "val_docs": 200, "prompts": ["ROMEO:"]},
        "artifacts": {"eval_report": "evalkey000000001", "trained_checkpoint": "trainedkey000001", "shards": "shardskey0000001"},
        "lm_eval": {"batch_size": 8, "versions": {"lm_eval": "0.4.13"}},
        "seconds": {"lm_eval": 41.2},
    }


def test_fmt():
    assert report.fmt(None) == report.DASH
    assert report.fmt(1638400) == "1,638,400"
    assert report.fmt(4012.7) == "4,013"
    assert report.fmt(0.04581) == "0.04581"
    assert report.fmt(1.292e11) == "1.292e+11"
    assert report.fmt(True) == "true"


def test_loss_curve_png_is_a_real_plot():
    png = report.loss_curve_png(sample_data()["loss_curve"], heldout_loss=4.3)
    pixels = image.imread(io.BytesIO(png))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 600
    assert float(np.std(pixels[..., :3])) > 0.02
    # Coloured lines are drawn (train blue, val red), not just black axes.
    rgb = pixels[..., :3]
    assert ((rgb[..., 2] - rgb[..., 0]) > 0.3).sum() > 200
    assert ((rgb[..., 0] - rgb[..., 2]) > 0.3).sum() > 200


def test_loss_curve_png_without_data_still_renders():
    pixels = image.imread(io.BytesIO(report.loss_curve_png([])))
    assert float(np.std(pixels[..., :3])) > 0  # the "no loss data" note


def test_loss_curve_uses_steps_when_tokens_are_missing():
    rows = [{"step": s, "tokens": None, "train_loss": 5.0 - s / 10, "val_loss": None} for s in range(5)]
    assert report.loss_curve_png(rows) != report.loss_curve_png([])


def test_html_is_self_contained_and_escaped():
    data = sample_data()
    png = report.loss_curve_png(data["loss_curve"])
    page = report.render_html(data, png)
    assert page.startswith("<!DOCTYPE html>")
    # The image is embedded and decodes back to the PNG.
    uri = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert uri and base64.b64decode(uri.group(1)) == png
    assert not re.search(r"(src|href)=\"?(https?:)?//", page) and "<link" not in page
    # Generated text is escaped; the only <script> would be the one from the data.
    assert "<script>" not in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Metrics with stderr, headline, settings and artifact keys.
    assert "mini_hellaswag" in page and "0.3" in page and "\u00b1 0.0458" in page
    assert "512.3" in page and "4.25" in page and "trainedkey000001" in page and "shardskey0000001" in page
    assert "learning_rate" in page and "1,638,400" in page


def test_html_renders_partial_data():
    page = report.render_html({}, None)
    assert "No loss curve" in page and "No headline figures" in page


def test_markdown_report():
    md = report.render_markdown(sample_data(), "loss_curve.png")
    assert "![training and validation loss against tokens](loss_curve.png)" in md
    assert "| mini_hellaswag | acc \u2191 | 0.3 | \u00b1 0.0458 | 10 |" in md
    # The completion sits in a fence longer than its own ``` run, so it cannot close it early.
    assert "````text\n" + NASTY + "\n````" in md
    assert "Validation loss 9.1 \u2192 4.25" in md
