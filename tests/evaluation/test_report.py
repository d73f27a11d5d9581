"""lmbuild.evaluation.report: report.json (lmbuild/schemas/report.schema.json) rendered as one HTML page with a
jinja2 template and matplotlib's SVG charts.

No model needed: the data dict is written by hand in report.json's shape, with manifests'
counts that name drop reasons and dedup figures the renderer has never heard of, and a
metric (masked-token accuracy) that no code names.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest

from lmbuild.evaluation import report, report_charts, report_lineage, report_rows
from lmbuild.errors import UserError

NASTY = "</pre><script>alert(1)</script> | `x` ```"
INIT = "initkey000000001"


def metrics(acc: float, ppl: float) -> dict:
    return {
        "lmbuild_heldout": {"alias": "lmbuild_heldout", "version": 1.0, "n_samples": {"original": 20, "effective": 20}, "metrics": {
            "word_perplexity": {"value": ppl, "stderr": None, "higher_is_better": False},
            "bits_per_byte": {"value": 1.71, "stderr": None, "higher_is_better": False},
        }},
        "mini_hellaswag": {"alias": "mini_hellaswag", "version": 1.0, "n_samples": {"original": 50, "effective": 10}, "metrics": {
            "acc": {"value": acc, "stderr": 0.0458, "higher_is_better": True},
        }},
    }


CURVE = [
    {"step": s, "tokens": s * 4096, "train_loss": 9.0 - s / 60 if s else None, "val_loss": 9.1 - s / 70 if s % 100 == 0 else None,
     "learning_rate": 0.002 * min(1, s / 40), "grad_norm": 1.0 + 1 / (1 + s), "tokens_per_second": 3000 + s}
    for s in range(0, 401, 10)
]


def checkpoint(label: str, stage: str, key: str, acc: float, ppl: float, completion: str, tokens_seen: int | None, run: str = INIT) -> dict:
    c = {
        "label": label, "stage": stage, "key": key, "path": f"artifacts/{stage}/{key}", "run": run, "tokens_seen": tokens_seen,
        "headline": {"heldout_token_loss": 4.3 if stage == "trained_checkpoint" else 9.0, "heldout_word_perplexity": ppl, "heldout_bits_per_byte": 1.71, "heldout_docs": 20},
        "metrics": metrics(acc, ppl),
        "extra_tasks": {"mini_hellaswag": {"metric": "acc", "value": acc, "stderr": 0.0458, "higher_is_better": True}},
        "generations": [{"prompt": "ROMEO:", "completion": completion, "new_tokens": 9, "stopped_at_eos": False}],
        "tokenizer": {"vocab_size": 8192, "tokens": 81234, "words": 30000, "bytes": 300000, "tokens_per_word": 2.7078, "tokens_per_byte": 0.27078},
        "model": {"config": {"hidden_size": 256, "num_hidden_layers": 4}, "parameters": 4999424, "seq_len": 256,
                  "flops_per_token": {"total": 33128448, "dense": 29982720, "attention": 3145728}, "flops_formula": "6N + 12LHs"},
        "lm_eval": {"device": "cpu", "dtype": "float32", "max_length": 256},
        "seconds": {"lm_eval": 41.2, "generation": 1.5},
    }
    if stage == "trained_checkpoint":
        c["training"] = {"summary": {"initial_val_loss": 9.1, "final_val_loss": 4.25, "tokens_seen": 1638400, "tokens_per_second": 4012.7},
                         "counts": {"tokens_seen": 1638400}, "settings": {"learning_rate": 0.002}, "loss_curve": CURVE}
    return c


def lineage() -> dict:
    def art(stage, key, inputs, counts, settings=None):
        return {"stage": stage, "key": key, "path": f"artifacts/{stage}/{key}", "settings": settings or {"x": 1}, "counts": counts, "code_hash": "c0de" * 4,
                "inputs": {i: {"stage": i, "key": k, "path": f"artifacts/{i}/{k}"} for i, k in inputs.items()}, "seconds": 1.5}

    arts = [
        # Listed out of order: the page sorts them by the input graph.
        art("trained_checkpoint", "trainedkey000001", {"init_checkpoint": INIT, "shards": "shardskey0000001"}, {"final_val_loss": 4.25},
            {"learning_rate": 0.002, "note": NASTY}),
        art("raw", "rawkey0000000001", {}, {"documents": 791, "bytes": 16387198}),
        art("shards", "shardskey0000001", {"deduplicated": "dedupkey00000001", "tokenizer": "tokkey0000000001"},
            {"train_documents": 680, "val_documents": 20, "train_tokens": 4434688, "val_tokens": 135680, "train_dropped_tokens": 45}),
        art("cleaned", "cleankey00000001", {"raw": "rawkey0000000001"},
            {"documents_in": 791, "documents_out": 769, "bytes_in": 16387198, "bytes_out": 15610852,
             "dropped": {"too_short": 20, "lang_score_below_threshold": 1, "too_long": 1}}),
        art("deduplicated", "dedupkey00000001", {"cleaned": "cleankey00000001"},
            {"documents_in": 769, "documents_out": 700, "duplicates_removed": 69, "duplicate_clusters": 31, "largest_cluster": 5}),
        art("tokenizer", "tokkey0000000001", {"deduplicated": "dedupkey00000001"}, {"vocab_size": 8192, "tokens_per_byte": 0.2589}),
        art("init_checkpoint", INIT, {"tokenizer": "tokkey0000000001"}, {"parameters": 4999424}),
        art("trained_checkpoint", "midkey0000000001", {"init_checkpoint": INIT, "shards": "shardskey0000001"}, {"tokens_seen": 819200}),
    ]
    return {f"{a['stage']}/{a['key']}": a for a in arts}


def sample_data() -> dict:
    init = checkpoint("init_checkpoint", "init_checkpoint", INIT, 0.2, 8000.0, "zzz random", 0)
    mid = checkpoint("trained_checkpoint@200", "trained_checkpoint", "midkey0000000001", 0.25, 900.0, "halfway", 819200)
    del mid["training"]
    trained = checkpoint("trained_checkpoint", "trained_checkpoint", "trainedkey000001", 0.3, 512.3, NASTY, 1638400)
    # An encoder's figure that no code names, on one checkpoint only.
    trained["metrics"]["lmbuild_masked"] = {"alias": "lmbuild_masked", "n_samples": None, "metrics": {
        "masked_token_accuracy": {"value": 0.41, "stderr": None, "higher_is_better": True}}}
    return {
        "key": "evalkey000000001",
        "primary": "trained_checkpoint",
        "checkpoints": [init, mid, trained],
        "settings": {"tasks": ["mini_hellaswag"], "val_docs": 200, "prompts": ["ROMEO:"]},
        "artifacts": {"eval_report": "evalkey000000001", "trained_checkpoint": "trainedkey000001", "init_checkpoint": INIT, "shards": "shardskey0000001"},
        "lineage": lineage(),
        "lm_eval": {"model": "hf", "batch_size": 8, "tasks": ["lmbuild_heldout", "mini_hellaswag"], "versions": {"lm_eval": "0.4.13"}},
        "seconds": {"trained_checkpoint": {"lm_eval": 41.2}, "total": 90.0},
    }


def schema() -> dict:
    return json.loads(report.SCHEMA.read_text())


def test_fmt():
    assert report_rows.fmt(None) == report_rows.DASH
    assert report_rows.fmt(1638400) == "1,638,400"
    assert report_rows.fmt(4012.7) == "4,013"
    assert report_rows.fmt(0.04581) == "0.04581"
    assert report_rows.fmt(1.292e11) == "1.292e+11"
    assert report_rows.fmt(True) == "true"


def test_curve_columns_group_whatever_the_trainer_logs():
    rows = [{"step": 1, "tokens": 10, "train_loss": 3.0, "val_loss": 3.1, "lr": 1e-3, "grad_norm": 0.5, "tokens_per_s": 900.0, "tok_s": 1.0, "mfu": 0.3}]
    groups = report_charts.curve_columns(rows)
    assert groups == {"loss": ["train_loss", "val_loss"], "learning rate": ["lr"], "throughput (tokens/s)": ["tokens_per_s", "tok_s"],
                      "gradient norm": ["grad_norm"], "other": ["mfu"]}


def test_funnel_reads_the_manifests_generically():
    data = sample_data()
    rows = {r["stage"]: r for r in report_lineage.funnel_rows(data)}
    assert [r["stage"] for r in report_lineage.funnel_rows(data)] == ["raw", "cleaned", "deduplicated", "shards"]
    assert rows["raw"]["documents_out"] == 791 and rows["cleaned"]["documents_in"] == 791 and rows["cleaned"]["documents_out"] == 769
    assert rows["shards"]["documents_out"] == 700 and rows["shards"]["tokens"] == 4434688 + 135680
    assert ("cleaned", "lang_score_below_threshold", 1) in report_lineage.drop_reasons(data)  # a reason no code names
    assert ("deduplicated", "duplicate_clusters", "31") in report_lineage.dedup_rows(data)


def test_sample_is_in_the_schema_and_a_wrong_shape_is_one_line(tmp_path):
    jsonschema.validate(sample_data(), schema())
    path = tmp_path / "report.json"
    path.write_text(json.dumps(sample_data()))
    assert report.load(path) == sample_data()
    old = sample_data()
    old["headline"] = old["checkpoints"][2]["headline"]  # the former top-level copy of the headline checkpoint
    path.write_text(json.dumps(old))
    with pytest.raises(UserError, match=r"^report: .*report.json: \(top level\): Additional properties are not allowed \('headline'"):
        report.load(path)
    bad = sample_data()
    del bad["checkpoints"][1]["run"]
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match=r"report.json: checkpoints/1: 'run' is a required property"):
        report.load(path)


def test_lineage_is_sorted_by_the_input_graph():
    order = [a["stage"] for a in report_lineage.lineage_sorted(sample_data())]
    assert order == ["raw", "cleaned", "deduplicated", "tokenizer", "init_checkpoint", "shards", "trained_checkpoint", "trained_checkpoint"]


def test_charts_are_matplotlib_svg():
    svg = report_charts.line_chart("t", [("a", [(0, 1.0), (10, 3.0)]), ("b", [(5, 2.0), (None, 1.0)])], "title", "x", "y")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "Matplotlib" not in svg and "<dc:date>" not in svg  # no creator or date: the page is reproducible
    assert re.search(r"<text[^>]*>title</text>", svg)  # text stays text
    assert svg.count('id="line2d_') >= 2
    assert report_charts.line_chart("t", [("a", [(None, 1.0)])], "t", "x", "y") is None
    assert report_charts.bar_chart("b", [("raw", 10), ("cleaned", float("nan"))], "docs").count("<svg") == 1
    assert report_charts.line_chart("t", [("a", [(0, 1.0)])], "t", "x", "y") == report_charts.line_chart("t", [("a", [(0, 1.0)])], "t", "x", "y")


def test_every_metric_of_every_checkpoint_is_shown():
    data = sample_data()
    assert ("lmbuild_masked", "masked_token_accuracy") in report_rows.metric_names(data)
    page = report.render_html(data)
    assert re.search(r"<td>lmbuild_masked</td><td>masked_token_accuracy \u2191</td><td class=n>\u2014</td><td class=n>\u2014</td><td class=n>0.41</td>", page)
    chart = str(report_charts.metrics_chart(data))
    for title in ("lmbuild_heldout: word_perplexity \u2193", "mini_hellaswag: acc \u2191", "lmbuild_masked: masked_token_accuracy \u2191"):
        assert f">{title}</text>" in chart, title


def test_what_was_not_run_for_a_checkpoint_is_said_once_per_reason():
    data = sample_data()
    why = "an encoder (model.objective masked) is scored by masked-token accuracy instead"
    data["checkpoints"][0]["objective"] = "masked"
    data["checkpoints"][0]["skipped"] = {"lm_eval": why, "generations": why}
    jsonschema.validate(data, schema())
    assert report_rows.skipped_rows(data["checkpoints"]) == [(data["checkpoints"][0]["label"], "generations, lm_eval", why)]
    page = report.render_html(data)
    assert page.count(f"Not run for {data['checkpoints'][0]['label']}: generations, lm_eval. {why}.") == 1
    assert "Not run for" not in report.render_html(sample_data())


def test_metrics_against_tokens_seen_per_training_run():
    data = sample_data()
    runs = report_rows.training_runs(data)
    assert {r: [c["label"] for c in cs] for r, cs in runs.items()} == {INIT: ["init_checkpoint", "trained_checkpoint@200", "trained_checkpoint"]}
    chart = str(report_charts.metrics_vs_tokens_chart(data))
    assert ">tokens seen</text>" in chart and ">mini_hellaswag: acc \u2191</text>" in chart
    assert "masked_token_accuracy" not in chart  # one checkpoint has it: a point, not a line
    page = report.render_html(data)
    assert "Against tokens seen" in page and "trained_checkpoint@200 at 819,200" in page
    # A run of one checkpoint, or checkpoints nobody counted tokens for, draw no such chart.
    for c in data["checkpoints"]:
        c["run"] = c["key"]
    assert report_rows.training_runs(data) == {} and report_charts.metrics_vs_tokens_chart(data) is None
    assert "Against tokens seen" not in report.render_html(data)


def test_html_is_self_contained_and_escaped():
    page = report.render_html(sample_data())
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page) and "<link" not in page and "@import" not in page
    assert not re.search(r"url\((?!#)", page)  # only the SVGs' own clip paths
    assert "<script" not in page
    # No address but the SVG namespaces (names, never fetched): matplotlib's RDF metadata is left out.
    assert set(re.findall(r"https?://[^\"\s<]*", page)) == {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for section in ("evaluation", "generations", "training", "data", "tokenizer", "model", "lineage", "lm-eval"):
        assert f'id="{section}"' in page
    # Every metric per checkpoint with its stderr, side by side.
    assert re.search(r"<td>mini_hellaswag</td><td>acc \u2191</td><td class=n>0.2 \u00b1 0.0458</td><td class=n>0.25 \u00b1 0.0458</td><td class=n>0.3 \u00b1 0.0458</td><td class=n>10</td>", page)
    # metrics, metrics against tokens, loss, lr, throughput, grad norm, documents and bytes per stage
    assert page.count("<svg") == 8
    clip_ids = re.findall(r'<clipPath id="([^"]+)"', page)
    assert len(clip_ids) == len(set(clip_ids))  # one document: every chart's ids its own
    assert "lang_score_below_threshold" in page and "duplicate_clusters" in page
    assert "33,128,448" in page and "2.708" in page  # FLOPs per token, tokens per word


def test_the_stage_renders_report_json(tmp_path):
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "report.json").write_text(json.dumps(sample_data()))
    (tmp_path / "out").mkdir()
    counts = report.build(SimpleNamespace(inputs={"eval_report": tmp_path / "ev"}, out=tmp_path / "out"))
    assert counts == {"eval_report": "evalkey000000001", "checkpoints": 3, "charts": 8}
    assert (tmp_path / "out" / "report.html").read_text() == report.render_html(sample_data())


def test_headline_cards_show_every_figure_known_ones_first():
    c = sample_data()["checkpoints"][2]
    c["headline"] = {"zeta_score": 0.5, "heldout_docs": 20, "final_val_loss": 4.25, "heldout_tokens": None}
    assert report_rows.headline_cards(c) == [("final val loss", "4.25"), ("held-out documents", "20"), ("zeta score", "0.5"), ("mini_hellaswag acc", "0.3 \u00b1 0.0458")]


def test_generations_are_side_by_side():
    page = report.render_html(sample_data())
    row = re.search(r"<tr><td><pre><span class=prompt>ROMEO:</span></pre></td>(.*?)</tr>", page, re.S).group(1)
    assert row.index("zzz random") < row.index("&lt;/pre&gt;")  # init first, trained second, one row


def test_lineage_links_resolve():
    page = report.render_html(sample_data())
    ids = set(re.findall(r'id="([^"]+)"', page))
    links = set(re.findall(r'href="#([^"]+)"', page))
    assert "a-init_checkpoint-initkey000000001" in ids
    assert {"a-raw-rawkey0000000001", "a-trained_checkpoint-trainedkey000001", "a-eval_report-evalkey000000001"} <= ids
    assert links and links <= ids, links - ids


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium (Debian: apt-get install chromium; .ci/run installs it)")
def test_report_renders_in_a_headless_browser(tmp_path):
    """Debian's chromium renders the page to a PNG that is not blank: many distinct colours
    (text, the inline SVG charts' lines in several colours, table shading) and pixels spread
    over the page."""
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
    # The charts' series colours are drawn.
    for hex_colour in report_charts.COLORS[:2]:
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(img.astype(int) - rgb).sum(axis=2) < 30).sum() > 100, hex_colour
