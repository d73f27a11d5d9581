"""MLflow tracking (lmbuild/store/tracking.py), read back with the real MlflowClient.

The end-to-end checks (a build logs its training and evaluation runs; a tracker that is down
warns and the build succeeds; the tracking config plans nothing) are in tests/evaluation/test_sweep_report.py,
which builds a sweep once.
"""

from __future__ import annotations

import json
import socket

import pytest
from mlflow.tracking import MlflowClient

from lmbuild.store import tracking
from lmbuild.build.config import validate

MANIFEST = {
    "stage": "trained_checkpoint",
    "key": "0123456789abcdef",
    "settings": {"learning_rate": 0.002, "max_steps": 20, "betas": [0.9, 0.95], "lr_scheduler": "cosine"},
    "code_hash": "c0de",
    "inputs": {"init_checkpoint": {"stage": "init_checkpoint", "key": "aaaaaaaaaaaaaaaa", "path": "x"}, "shards": {"stage": "shards", "key": "bbbbbbbbbbbbbbbb", "path": "y"}},
    "counts": {"final_val_loss": 4.5, "steps": 20, "bf16": True, "parallel": None, "tokens_per_second": 1200},
    "job": {"host": "node1"},
}
CURVE = "step,tokens,train_loss,val_loss,learning_rate,grad_norm,tokens_per_second\n0,0,,9.0,,,\n10,100,6.5,,0.002,1.5,\n20,200,5.0,4.5,0.0001,1.0,\n"


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_default_store_is_sqlite_under_mlruns_and_off_means_none(tmp_path):
    cfg = validate({})
    assert tracking.settings(cfg, tmp_path) == {"mlflow": {"tracking_uri": f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db", "experiment": "lmbuild"}}
    assert tracking.settings(validate({"tracking": {"mlflow": {"enabled": False}}}), tmp_path) is None
    given = validate({"tracking": {"mlflow": {"tracking_uri": "http://mlflow:5000", "experiment": "x"}}})
    assert tracking.settings(given, tmp_path)["mlflow"] == {"tracking_uri": "http://mlflow:5000", "experiment": "x"}


def test_a_training_run_reads_back_with_the_real_client(tmp_path):
    art = tmp_path / "artifact"
    art.mkdir()
    (art / "loss_curve.csv").write_text(CURVE)
    cfg = tracking.settings(validate({"tracking": {"mlflow": {"experiment": "sweeps"}}}), tmp_path)
    assert tracking.track(cfg, art, MANIFEST) is None
    client = MlflowClient(tracking_uri=cfg["mlflow"]["tracking_uri"])
    exp = client.get_experiment_by_name("sweeps")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "trained_checkpoint 0123456789abcdef" and run.info.status == "FINISHED"
    assert run.data.params == {"learning_rate": "0.002", "max_steps": "20", "betas": "[0.9, 0.95]", "lr_scheduler": "cosine"}
    tags = run.data.tags
    assert tags["lmbuild.stage"] == "trained_checkpoint" and tags["lmbuild.key"] == "0123456789abcdef"
    assert tags["lmbuild.input.shards"] == "shards/bbbbbbbbbbbbbbbb" and tags["lmbuild.code_hash"] == "c0de"
    assert json.loads(tags["lmbuild.lineage"]) == {"init_checkpoint": "init_checkpoint/aaaaaaaaaaaaaaaa", "shards": "shards/bbbbbbbbbbbbbbbb"}
    assert tags["lmbuild.path"] == str(art)
    history = {m: [(p.step, p.value) for p in client.get_metric_history(run.info.run_id, m)] for m in ("train_loss", "val_loss", "learning_rate")}
    assert history == {"train_loss": [(10, 6.5), (20, 5.0)], "val_loss": [(0, 9.0), (20, 4.5)], "learning_rate": [(10, 0.002), (20, 0.0001)]}
    # Final figures: numbers only (bf16 and None are not metrics), at the last step.
    assert run.data.metrics["final_val_loss"] == 4.5 and run.data.metrics["steps"] == 20
    assert "bf16" not in run.data.metrics and "parallel" not in run.data.metrics
    # A second artifact: a second run in the same experiment.
    tracking.track(cfg, art, {**MANIFEST, "key": "fedcba9876543210"})
    assert len(client.search_runs([exp.experiment_id])) == 2


def test_an_evaluation_logs_the_report_headline(tmp_path):
    art = tmp_path / "eval"
    art.mkdir()
    (art / "report.json").write_text(json.dumps({"headline": {"heldout_token_loss": 4.7, "heldout_docs": 10}}))
    manifest = {**MANIFEST, "stage": "eval_report", "counts": {"heldout_bits_per_byte": 1.9, "arc_easy/acc": 0.3}}
    cfg = tracking.settings(validate({}), tmp_path)
    tracking.track(cfg, art, manifest)
    client = MlflowClient(tracking_uri=cfg["mlflow"]["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("lmbuild").experiment_id])
    assert run.data.metrics == {"heldout_bits_per_byte": 1.9, "arc_easy/acc": 0.3, "heldout_token_loss": 4.7, "heldout_docs": 10}


def test_a_job_whose_spec_carries_no_tracking_logs_nothing(tmp_path):
    assert tracking.track(None, tmp_path, {**MANIFEST, "stage": "tokenizer"}) is None
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}", "sqlite:////proc/no/such/dir/mlflow.db", "nosuchscheme://x"])
def test_a_tracker_that_fails_is_one_warning(tmp_path, uri, caplog):
    cfg = {"mlflow": {"tracking_uri": uri.format(port=unused_port()), "experiment": "lmbuild"}}
    warning = tracking.track(cfg, tmp_path, MANIFEST)
    assert warning.startswith("tracking: MLflow run of trained_checkpoint 0123456789abcdef not logged to ")
    assert "\n" not in warning
    assert [r.levelname for r in caplog.records if r.name == "lmbuild"] == ["WARNING"]


def test_the_tracking_config_enters_no_key_and_only_the_tracked_specs(tmp_path):
    from lmbuild.build.graph import Plan
    from lmbuild.build.stages import STAGES

    a = Plan(validate({}))
    b = Plan(validate({"tracking": {"mlflow": {"tracking_uri": "http://mlflow:5000", "experiment": "x"}}}))
    assert {s: x.key for s, x in a.artifacts.items()} == {s: x.key for s, x in b.artifacts.items()}
    b.write_specs(tmp_path, tracking.settings(b.config, tmp_path))
    for spec in tmp_path.glob("*/*.json"):
        data = json.loads(spec.read_text())
        assert ("tracking" in data) == STAGES[data["stage"].removesuffix("_part")].tracked, spec  # a keyed part's: <stage>_part
        if "tracking" in data:
            assert data["tracking"] == {"mlflow": {"tracking_uri": "http://mlflow:5000", "experiment": "x"}}
    assert {s for s, row in STAGES.items() if row.tracked} == {"trained_checkpoint", "eval_report"}
