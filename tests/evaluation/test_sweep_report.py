"""The sweep's comparison report (lmbuild/evaluation/sweep_report.py), and one sweep built end to end:
its report, its MLflow runs read back with the real client, reruns, and a tracker that is down."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lmbuild.store.artifact import write_json
from lmbuild.errors import UserError
from lmbuild.store.runner import StageContext
from lmbuild.evaluation.sweep_report import build

RUNS = {"learning_rate_0p001": {"train.learning_rate": 0.001}, "learning_rate_0p01": {"train.learning_rate": 0.01}}


def fake_run(root: Path, run: str, val: list[float], bpb: float) -> dict[str, Path]:
    """A run's two artifacts as the stages leave them: manifests, loss_curve.csv, report.json."""
    trained, evaluated = root / run / "trained", root / run / "eval"
    trained.mkdir(parents=True)
    evaluated.mkdir(parents=True)
    rows = ["step,tokens,train_loss,val_loss,learning_rate,grad_norm,tokens_per_second"]
    rows += [f"{i * 10},{i * 100},{v + 0.3},{v},0.001,1.0," for i, v in enumerate(val)]
    (trained / "loss_curve.csv").write_text("\n".join(rows) + "\n")
    write_json(trained / "manifest.json", {"stage": "trained_checkpoint", "key": f"{run[:4]}000000000001", "counts": {"final_val_loss": val[-1], "parameters": 1000, "bf16": True}})
    write_json(evaluated / "manifest.json", {"stage": "eval_report", "key": f"{run[:4]}000000000002", "counts": {"heldout_bits_per_byte": bpb, "trained_checkpoint/heldout_bits_per_byte": bpb, "seconds": 3.0}})
    (evaluated / "report.json").write_text(json.dumps({"headline": {"heldout_token_loss": bpb * 2}}))
    return {f"{run}__trained_checkpoint": trained, f"{run}__eval_report": evaluated}


def make_report(tmp_path: Path, metric="final_val_loss", goal="min") -> Path:
    inputs = {**fake_run(tmp_path, "learning_rate_0p001", [9.0, 6.0, 5.5], 2.2), **fake_run(tmp_path, "learning_rate_0p01", [9.0, 5.0, 4.8], 2.4)}
    out = tmp_path / "out"
    out.mkdir()
    ctx = StageContext("sweep_report", "k" * 16, {"runs": RUNS, "metric": metric, "goal": goal}, inputs, out, tmp_path / "work")
    counts = build(ctx)
    assert counts["runs"] == 2
    return out


def test_the_table_the_curves_and_the_best_run(tmp_path):
    out = make_report(tmp_path)
    data = json.loads((out / "report.json").read_text())
    assert data["best"] == "learning_rate_0p01" and data["best_value"] == 4.8
    assert [r["run"] for r in data["rows"]] == list(RUNS)
    first = data["rows"][0]
    assert first["values"] == {"train.learning_rate": 0.001}
    assert first["metrics"] == {"final_val_loss": 5.5, "parameters": 1000, "heldout_bits_per_byte": 2.2, "heldout_token_loss": 4.4}
    assert first["curve"]["val_loss"] == [[0, 9.0], [10, 6.0], [20, 5.5]]
    md = (out / "report.md").read_text()
    assert "| run | train.learning_rate | final_val_loss | heldout_bits_per_byte | parameters |" in md
    assert "| learning_rate_0p01 **best** | 0.01 | 4.8 | 2.4 | 1000 |" in md
    html = (out / "report.html").read_text()
    # The SVG is inlined (no XML declaration inside the page), one line per run and curve.
    assert html.count("<svg") == 1 and "<?xml" not in html
    assert '<tr class="best"><td>learning_rate_0p01 &#9733;</td>' in html
    svg = (out / "loss_curves.svg").read_text()
    assert svg.startswith("<svg") and "learning_rate_0p01 (best)" in svg


def test_the_metric_and_goal_choose_the_best(tmp_path):
    out = make_report(tmp_path, metric="heldout_bits_per_byte")
    assert json.loads((out / "report.json").read_text())["best"] == "learning_rate_0p001"
    out = make_report(tmp_path / "max", metric="heldout_bits_per_byte", goal="max")
    assert json.loads((out / "report.json").read_text())["best"] == "learning_rate_0p01"


def test_a_metric_no_run_has_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^sweep.metric: 'arc_easy/acc' is not a metric of the runs \(they have: final_val_loss, heldout_bits_per_byte, heldout_token_loss, parameters\)$"):
        make_report(tmp_path, metric="arc_easy/acc")


# --------------------------------------------------------------------------- end to end

from conftest import DATA_STAGES, copy_built, jobs_of_dry_run, smoke_config, snakemake  # noqa: E402

GRID = {"train.learning_rate": [0.001, 0.01]}
# Shorter than the smoke run: the runs only need a loss curve of a few points each.
SHORT = {"train.max_steps": 12, "train.warmup_steps": 2, "train.eval_steps": 6, "train.logging_steps": 3}


def config(**overrides) -> dict:
    return smoke_config(**SHORT, **overrides)


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def swept(smoke_built, tmp_path_factory) -> tuple[Path, dict]:
    # The data and the init of the session's smoke build (the sweep's runs share them): this builds the runs.
    work = copy_built(smoke_built, tmp_path_factory.mktemp("sweep"), stages=[*DATA_STAGES, "init_checkpoint"])
    cfg = config(**{"sweep.grid": GRID, "tracking.mlflow.experiment": "smoke"})
    proc = snakemake(work, cfg, "sweep", timeout=2400)  # two trainings and evaluations; a busy machine
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return work, cfg


@pytest.mark.e2e
def test_a_sweep_builds_its_runs_and_one_report(swept):
    work, _ = swept
    (report,) = [p for p in (work / "artifacts" / "sweep_report").iterdir() if not p.name.startswith(".")]
    data = json.loads((report / "report.json").read_text())
    assert [r["run"] for r in data["rows"]] == ["learning_rate_0p001", "learning_rate_0p01"]
    assert data["best"] in {r["run"] for r in data["rows"]} and data["metric"] == "final_val_loss"
    for r in data["rows"]:
        assert r["metrics"]["final_val_loss"] > 0 and r["metrics"]["heldout_bits_per_byte"] > 0 and len(r["curve"]["val_loss"]) >= 2
    best = min(data["rows"], key=lambda r: r["metrics"]["final_val_loss"])
    assert data["best"] == best["run"]
    assert (report / "report.html").read_text().count("<svg") == 1
    # The base is not built by `sweep`: only the runs' models (one shared init, two trainings).
    assert len(list((work / "artifacts" / "trained_checkpoint").glob("[0-9a-f]*"))) == 2
    assert len(list((work / "artifacts" / "init_checkpoint").glob("[0-9a-f]*"))) == 1


@pytest.mark.e2e
def test_every_training_and_evaluation_is_an_mlflow_run(swept):
    work, _ = swept
    client = MlflowClient(tracking_uri=f"sqlite:///{work.resolve()}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    by_stage = {}
    for run in runs:
        by_stage.setdefault(run.data.tags["lmbuild.stage"], []).append(run)
    assert sorted(by_stage) == ["eval_report", "trained_checkpoint"] and all(len(v) == 2 for v in by_stage.values())
    for run in by_stage["trained_checkpoint"]:
        key = run.data.tags["lmbuild.key"]
        manifest = json.loads((work / "artifacts" / "trained_checkpoint" / key / "manifest.json").read_text())
        assert float(run.data.params["learning_rate"]) == manifest["settings"]["learning_rate"]
        assert run.data.tags["lmbuild.input.shards"] == f"shards/{manifest['inputs']['shards']['key']}"
        curve = client.get_metric_history(run.info.run_id, "val_loss")
        assert [round(p.value, 6) for p in curve][-1] == round(manifest["counts"]["final_val_loss"], 6) and len(curve) >= 2
    for run in by_stage["eval_report"]:
        assert run.data.metrics["heldout_bits_per_byte"] > 0
        trained = run.data.tags["lmbuild.input.trained_checkpoint"]
        assert trained in {f"trained_checkpoint/{r.data.tags['lmbuild.key']}" for r in by_stage["trained_checkpoint"]}


@pytest.mark.e2e
def test_nothing_is_planned_when_nothing_changed_and_tracking_is_no_key(swept):
    work, cfg = swept
    assert jobs_of_dry_run(snakemake(work, cfg, "sweep", "-n")) == {}
    moved = config(**{"sweep.grid": {"train.learning_rate": [0.01, "1e-3"]}, "tracking.mlflow.tracking_uri": "http://127.0.0.1:1", "tracking.mlflow.experiment": "other"})
    assert jobs_of_dry_run(snakemake(work, moved, "sweep", "-n")) == {}
    off = config(**{"sweep.grid": GRID, "tracking.mlflow.enabled": False})
    assert jobs_of_dry_run(snakemake(work, off, "sweep", "-n")) == {}
    # The ranking metric is the report's own setting: only the report is planned.
    metric = config(**{"sweep.grid": GRID, "sweep.metric": "heldout_bits_per_byte"})
    assert jobs_of_dry_run(snakemake(work, metric, "sweep", "-n")) == {"build_sweep_report": 1, "sweep": 1}


@pytest.mark.e2e
def test_a_new_run_builds_only_its_model_and_a_tracker_that_is_down_only_warns(swept):
    work, _ = swept
    uri = f"http://127.0.0.1:{unused_port()}"
    cfg = config(**{"sweep.grid": {"train.learning_rate": [0.001, 0.01, 0.003]}, "tracking.mlflow.tracking_uri": uri})
    planned = jobs_of_dry_run(snakemake(work, cfg, "sweep", "-n"))
    assert planned == {"build_trained_checkpoint": 1, "build_eval_report": 1, "build_sweep_report": 1, "sweep": 1}
    proc = snakemake(work, cfg, "sweep", timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    warnings = re.findall(r"^warning: (\w+): tracking: MLflow run of \w+ [0-9a-f]{16} not logged to " + re.escape(uri) + ": .*$", out, re.M)
    assert sorted(warnings) == ["eval_report", "trained_checkpoint"]
    assert jobs_of_dry_run(snakemake(work, cfg, "sweep", "-n")) == {}
