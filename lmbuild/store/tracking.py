"""Experiment tracking: every built artifact of a tracked stage (``trained_checkpoint`` and
``eval_report``: ``Stage.tracked``, lmbuild.build.stages) is also an MLflow run.

After a training or evaluation job has written its artifact, the runner (``lmbuild.store.runner``)
logs one run from the finished artifact: parameters = the stage's settings (dotted keys),
metrics = the loss curve step by step (``loss_curve.csv``) and the manifest's final figures
(and ``report.json``'s headline for an evaluation), tags = the stage, the key, the code hash
and every input's key (``lmbuild.input.<name>``: the lineage). Config
``tracking: {mlflow: {enabled, tracking_uri, experiment}}``; the default store is SQLite at
``mlruns/mlflow.db`` in the working directory (MLflow 3's file store refuses new runs).

Plumbing, like the runner: no key covers this module or the tracking config (the job spec
carries it beside the settings), so turning tracking on, off or elsewhere rebuilds nothing.
What it does not do: fail a build. Any error (a tracker that is down, a bad URI, MLflow
missing) is one warning line; an artifact reused from another builder is not logged twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

from lmbuild.numbers import finite
from lmbuild.training.curve import read_curve

DEFAULT_STORE = "mlruns/mlflow.db"
# MLflow's limits per log_batch call, and of a parameter value (MLflow 3: 6000 characters).
BATCH_METRICS, BATCH_PARAMS, BATCH_TAGS, PARAM_CHARS = 1000, 100, 100, 6000
CURVE_METRICS = ("train_loss", "val_loss", "learning_rate", "grad_norm", "tokens_per_second")
# A tracker that is down costs one connection attempt, not MLflow's 7 retries with backoff.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}

log = logging.getLogger("lmbuild")


def settings(config: dict, workdir: str | os.PathLike | None = None) -> dict | None:
    """The tracking part of a job spec (None when off): the default store made absolute, so a
    job that runs elsewhere (a SLURM node on the shared file system) writes to the same one."""
    m = (config.get("tracking") or {}).get("mlflow") or {}
    if not m.get("enabled", True):
        return None
    uri = m.get("tracking_uri") or f"sqlite:///{Path(workdir or os.getcwd()).resolve() / DEFAULT_STORE}"
    return {"mlflow": {"tracking_uri": uri, "experiment": m.get("experiment", "lmbuild")}}


def flatten(tree, prefix: str = "") -> dict[str, str]:
    """Nested settings -> {dotted.key: text}; lists and scalars as JSON (strings as they are)."""
    if isinstance(tree, dict) and tree:
        out = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    text = tree if isinstance(tree, str) else json.dumps(tree, sort_keys=True)
    return {prefix or "value": text[:PARAM_CHARS]}


def _metric_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def metrics(artifact: Path, manifest: dict) -> list[tuple[str, float, int]]:
    """(name, value, step) of a finished artifact: its curve (``loss_curve.csv``, a trained
    model's), then its final figures at the last step: the manifest's counts and the headline of
    its ``report.json`` (an evaluation's)."""
    out: list[tuple[str, float, int]] = []
    last = 0
    for row in read_curve(artifact / "loss_curve.csv"):  # [] where the artifact has none
        last = max(last, row["step"])
        for col in CURVE_METRICS:
            if row.get(col) is not None:
                out.append((col, row[col], row["step"]))
    final = dict(manifest.get("counts") or {})
    if (artifact / "report.json").is_file():
        try:
            final |= json.loads((artifact / "report.json").read_text()).get("headline") or {}
        except (OSError, ValueError):
            pass
    for name, value in final.items():
        v = finite(value)
        if v is not None:
            out.append((f"final/{name}" if name in CURVE_METRICS else name, v, last))
    return [(_metric_name(n), v, s) for n, v, s in out]


def tags(manifest: dict) -> dict[str, str]:
    inputs = manifest.get("inputs") or {}
    out = {
        "lmbuild.stage": manifest["stage"],
        "lmbuild.key": manifest["key"],
        "lmbuild.code_hash": manifest.get("code_hash") or "",
        "lmbuild.lineage": json.dumps({n: f"{i['stage']}/{i['key']}" for n, i in inputs.items()}, sort_keys=True)[:5000],
    }
    out.update({f"lmbuild.input.{n}": f"{i['stage']}/{i['key']}" for n, i in inputs.items()})
    host = (manifest.get("job") or {}).get("host")
    if host:
        out["lmbuild.host"] = host
    return out


@contextmanager
def _store_lock(uri: str):
    """One writer at a time on a local SQLite store: two jobs creating its tables at once fail."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / f".{db.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


def log_run(tracking: dict, artifact: Path, manifest: dict) -> str:
    """Log one MLflow run of a finished artifact; returns its run id. Raises on any failure."""
    for var, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(var, value)
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    cfg = tracking["mlflow"]
    stage, key = manifest["stage"], manifest["key"]
    now = int(time.time() * 1000)
    with _store_lock(cfg["tracking_uri"]):
        client = MlflowClient(tracking_uri=cfg["tracking_uri"])
        exp = client.get_experiment_by_name(cfg["experiment"])
        exp_id = exp.experiment_id if exp else client.create_experiment(cfg["experiment"])
        run = client.create_run(exp_id, run_name=f"{stage} {key}", tags=tags(manifest))
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten(manifest.get("settings") or {}).items()]
        for chunk in _chunks(params, BATCH_PARAMS):
            client.log_batch(run_id, params=chunk)
        points = [Metric(n, v, now, s) for n, v, s in metrics(artifact, manifest)]
        for chunk in _chunks(points, BATCH_METRICS):
            client.log_batch(run_id, metrics=chunk)
        client.log_batch(run_id, tags=[RunTag("lmbuild.path", str(artifact))])
        client.set_terminated(run_id, "FINISHED")
    return run_id


def track(tracking: dict | None, artifact: Path, manifest: dict) -> str | None:
    """:func:`log_run` where the job spec carries ``tracking`` (that of a tracked stage,
    lmbuild.build.stages.Stage.tracked); a failure is one warning (returned), never an error."""
    if not tracking:
        return None
    try:
        run_id = log_run(tracking, artifact, manifest)
    except BaseException as exc:  # noqa: BLE001 (a tracker must never fail a build)
        if isinstance(exc, KeyboardInterrupt):
            raise
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        warning = f"tracking: MLflow run of {manifest.get('stage')} {manifest.get('key')} not logged to {tracking['mlflow']['tracking_uri']}: {type(exc).__name__}: {detail}"
        log.warning("%s", warning)
        return warning
    log.info("tracking: MLflow run %s of %s %s logged to %s", run_id, manifest["stage"], manifest["key"], tracking["mlflow"]["tracking_uri"])
    return None
