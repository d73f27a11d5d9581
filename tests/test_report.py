"""lmbuild.report: the report.json data dict rendered as HTML (inline SVG), PNG and Markdown.

No model needed: the data dict is written by hand in report.json's shape, with manifests'
counts that name drop reasons and dedup figures the renderer has never heard of.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib import image

from lmbuild import report

NASTY = "</pre><script>alert(1)</script> | `x` ```"


def metrics(acc: float, ppl: float) -> dict:
    return {
        "lmbuild_heldout": {"alias": "lmbuild_heldout", "n_samples": {"original": 20, "effective": 20}, "metrics": {
            "word_perplexity": {"value": ppl, "stderr": None, "higher_is_better": False},
            "bits_per_byte": {"value": 1.71, "stderr": None, "higher_is_better": False},
        }},
        "mini_hellaswag": {"alias": "mini_hellaswag", "n_samples": {"original": 50, "effective": 10}, "metrics": {
            "acc": {"value": acc, "stderr": 0.0458, "higher_is_better": True},
        }},
    }


CURVE = [
    {"step": s, "tokens": s * 4096, "train_loss": 9.0 - s / 60 if s else None, "val_loss": 9.1 - s / 70 if s % 100 == 0 else None,
     "learning_rate": 0.002 * min(1, s / 40), "grad_norm": 1.0 + 1 / (1 + s), "tokens_per_second": 3000 + s}
    for s in range(0, 401, 10)
]


def checkpoint(label: str, stage: str, key: str, acc: float, ppl: float, completion: str) -> dict:
    c = {
        "label": label, "stage": stage, "key": key, "path": f"artifacts/{stage}/{key}",
        "headline": {"heldout_token_loss": 4.3 if stage == "trained_checkpoint" else 9.0, "heldout_word_perplexity": ppl, "heldout_bits_per_byte": 1.71, "heldout_docs": 20},
        "metrics": metrics(acc, ppl),
        "extra_tasks": {"mini_hellaswag": {"metric": "acc", "value": acc, "stderr": 0.0458}},
        "generations": [{"prompt": "ROMEO:", "completion": completion, "new_tokens": 9, "stopped_at_eos": False}],
        "tokenizer": {"vocab_size": 8192, "tokens": 81234, "words": 30000, "bytes": 300000, "tokens_per_word": 2.7078, "tokens_per_byte": 0.27078},
        "model": {"config": {"hidden_size": 256, "num_hidden_layers": 4}, "parameters": 4999424, "seq_len": 256,
                  "flops_per_token": {"total": 33128448, "dense": 29982720, "attention": 3145728}, "flops_formula": "6N + 12LHs"},
    }
    if stage == "trained_checkpoint":
        c["training"] = {"summary": {"initial_val_loss": 9.1, "final_val_loss": 4.25, "tokens_seen": 1638400, "tokens_per_second": 4012.7},
                         "settings": {"learning_rate": 0.002}, "loss_curve": CURVE}
    return c


def lineage() -> dict:
    def art(stage, key, inputs, counts, settings=None):
        return {"stage": stage, "key": key, "path": f"artifacts/{stage}/{key}", "settings": settings or {"x": 1}, "counts": counts, "code_hash": "c0de" * 4,
                "inputs": {i: {"stage": i, "key": k, "path": f"artifacts/{i}/{k}"} for i, k in inputs.items()}, "seconds": 1.5}

    arts = [
        art("raw", "rawkey0000000001", {}, {"documents": 791, "bytes": 16387198}),
        art("cleaned", "cleankey00000001", {"raw": "rawkey0000000001"},
            {"documents_in": 791, "documents_out": 769, "bytes_in": 16387198, "bytes_out": 15610852,
             "dropped": {"too_short": 20, "lang_score_below_threshold": 1, "too_long": 1}}),
        art("deduplicated", "dedupkey00000001", {"cleaned": "cleankey00000001"},
            {"documents_in": 769, "documents_out": 700, "duplicates_removed": 69, "duplicate_clusters": 31, "largest_cluster": 5}),
        art("tokenizer", "tokkey0000000001", {"deduplicated": "dedupkey00000001"}, {"vocab_size": 8192, "tokens_per_byte": 0.2589}),
        art("shards", "shardskey0000001", {"deduplicated": "dedupkey00000001", "tokenizer": "tokkey0000000001"},
            {"train_documents": 680, "val_documents": 20, "train_tokens": 4434688, "val_tokens": 135680, "train_dropped_tokens": 45}),
        art("init_checkpoint", "initkey000000001", {"tokenizer": "tokkey0000000001"}, {"parameters": 4999424}),
        art("trained_checkpoint", "trainedkey000001", {"init_checkpoint": "initkey000000001", "shards": "shardskey0000001"}, {"final_val_loss": 4.25},
            {"learning_rate": 0.002, "note": NASTY}),
    ]
    return {f"{a['stage']}/{a['key']}": a for a in arts}


def sample_data() -> dict:
    init = checkpoint("init_checkpoint", "init_checkpoint", "initkey000000001", 0.2, 8000.0, "zzz random")
    trained = checkpoint("trained_checkpoint", "trained_checkpoint", "trainedkey000001", 0.3, 512.3, NASTY)
    return {
        "key": "evalkey000000001",
        "primary": "trained_checkpoint",
        "checkpoints": [init, trained],
        "headline": {"initial_val_loss": 9.1, "final_val_loss": 4.25, "heldout_token_loss": 4.3, "heldout_token_perplexity": 73.7,
                     "heldout_word_perplexity": 512.3, "heldout_bits_per_byte": 1.71, "heldout_docs": 20, "heldout_tokens": 81234},
        "extra_tasks": trained["extra_tasks"],
        "metrics": trained["metrics"],
        "generations": trained["generations"],
        "training": {"summary": trained["training"]["summary"], "settings": {"learning_rate": 0.002, "max_steps": 400}, "model": {"hidden_size": 256}},
        "loss_curve": CURVE,
        "settings": {"tasks": ["mini_hellaswag"], "val_docs": 200, "prompts": ["ROMEO:"]},
        "artifacts": {"eval_report": "evalkey000000001", "trained_checkpoint": "trainedkey000001", "init_checkpoint": "initkey000000001", "shards": "shardskey0000001"},
        "lineage": lineage(),
        "lm_eval": {"batch_size": 8, "versions": {"lm_eval": "0.4.13"}},
        "seconds": {"trained_checkpoint": {"lm_eval": 41.2}},
    }


def test_fmt():
    assert report.fmt(None) == report.DASH
    assert report.fmt(1638400) == "1,638,400"
    assert report.fmt(4012.7) == "4,013"
    assert report.fmt(0.04581) == "0.04581"
    assert report.fmt(1.292e11) == "1.292e+11"
    assert report.fmt(True) == "true"


def test_loss_curve_png_is_a_real_plot():
    png = report.loss_curve_png(CURVE, heldout_loss=4.3)
    pixels = image.imread(io.BytesIO(png))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 600
    assert float(np.std(pixels[..., :3])) > 0.02
    rgb = pixels[..., :3]
    assert ((rgb[..., 2] - rgb[..., 0]) > 0.3).sum() > 200  # the blue train line
    assert ((rgb[..., 0] - rgb[..., 2]) > 0.3).sum() > 200  # the red val line


def test_svg_chart_scales_points_into_the_plot():
    svg = report.svg_chart([("a", [(0, 1.0), (10, 3.0)]), ("b", [(5, 2.0)])], "t", "x", "y", width=300, height=200)
    lines = re.findall(r'<polyline[^>]*points="([^"]+)"', svg)
    assert len(lines) == 2
    (x0, y0), (x1, y1) = [tuple(map(float, p.split(","))) for p in lines[0].split()]
    assert x0 < x1 and y0 > y1  # rising line: larger y is higher on screen
    assert all(0 <= v <= 300 for v in (x0, x1)) and all(0 <= v <= 200 for v in (y0, y1))
    assert "no data" in report.svg_chart([("a", [(None, 1.0)])], "t", "x", "y")


def test_curve_columns_group_whatever_the_trainer_logs():
    rows = [{"step": 1, "tokens": 10, "train_loss": 3.0, "val_loss": 3.1, "lr": 1e-3, "grad_norm": 0.5, "tokens_per_s": 900.0, "tok_s": 1.0, "mfu": 0.3}]
    groups = report.curve_columns(rows)
    assert groups == {"loss": ["train_loss", "val_loss"], "learning rate": ["lr"], "throughput (tokens/s)": ["tokens_per_s", "tok_s"],
                      "gradient norm": ["grad_norm"], "other": ["mfu"]}


def test_funnel_reads_the_manifests_generically():
    data = sample_data()
    rows = {r["stage"]: r for r in report.funnel_rows(data)}
    assert [r["stage"] for r in report.funnel_rows(data)] == ["raw", "cleaned", "deduplicated", "shards"]
    assert rows["raw"]["documents_out"] == 791 and rows["cleaned"]["documents_in"] == 791 and rows["cleaned"]["documents_out"] == 769
    assert rows["shards"]["documents_out"] == 700 and rows["shards"]["tokens"] == 4434688 + 135680
    assert ("cleaned", "lang_score_below_threshold", 1) in report.drop_reasons(data)  # a reason no code names
    assert ("deduplicated", "duplicate_clusters", "31") in report.dedup_rows(data)


def test_html_is_self_contained_and_escaped():
    page = report.render_html(sample_data())
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page) and "<link" not in page and "@import" not in page and "url(" not in page
    assert "<script" not in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for section in ("evaluation", "generations", "training", "data", "tokenizer", "model", "lineage"):
        assert f'id="{section}"' in page
    # Every metric per checkpoint with its stderr, side by side.
    assert re.search(r"<td>mini_hellaswag</td><td>acc \u2191</td><td class=n>0.2 \u00b1 0.0458</td><td class=n>0.3 \u00b1 0.0458</td>", page)
    assert page.count("<svg") >= 6 and page.count("<polyline") >= 6  # loss, lr, throughput, grad norm charts
    assert "lang_score_below_threshold" in page and "duplicate_clusters" in page
    assert "33,128,448" in page and "2.708" in page  # FLOPs per token, tokens per word


def test_generations_are_side_by_side():
    page = report.render_html(sample_data())
    row = re.search(r"<tr><td><pre><span class=prompt>ROMEO:</span></pre></td>(.*?)</tr>", page, re.S).group(1)
    assert row.index("zzz random") < row.index("&lt;/pre&gt;")  # init first, trained second, one row


def test_lineage_links_resolve():
    page = report.render_html(sample_data())
    ids = set(re.findall(r'id="([^"]+)"', page))
    links = set(re.findall(r'href="#([^"]+)"', page))
    assert {"a-raw-rawkey0000000001", "a-trained_checkpoint-trainedkey000001", "a-eval_report-evalkey000000001"} <= ids
    assert links and links <= ids, links - ids


def test_html_renders_partial_data():
    page = report.render_html({}, None)
    assert "No trained checkpoint" in page and "No headline figures" in page


def test_markdown_report():
    md = report.render_markdown(sample_data(), "loss_curve.png")
    assert "![training and validation loss against tokens](loss_curve.png)" in md
    assert "| mini_hellaswag | acc \u2191 | 0.2 \u00b1 0.0458 | 0.3 \u00b1 0.0458 | 10 |" in md
    # The completion sits in a fence longer than its own ``` run, so it cannot close it early.
    assert "````text\n" + NASTY + "\n````" in md
    assert "Validation loss 9.1 \u2192 4.25" in md


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium (Debian: apt-get install chromium; .ci/run installs it)")
def test_report_renders_in_a_headless_browser(tmp_path):
    """Debian's chromium renders the page to a PNG that is not blank: many distinct colours
    (text, SVG lines in several colours, table shading) and pixels spread over the page."""
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(report.render_html(sample_data()), encoding="utf-8")
    shot = tmp_path / "shot.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (3000, 1200)
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    assert colours > 50, colours
    ink = (img.sum(axis=2) < 600).mean(axis=1)  # share of non-white pixels per row
    assert (ink > 0.01).mean() > 0.3  # content on much of the page, not one line
    # The SVG charts' series colours are drawn.
    for hex_colour in report.COLORS[:2]:
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(img.astype(int) - rgb).sum(axis=2) < 30).sum() > 100, hex_colour
