"""``loss_curve.csv``: the loss curve of a training run, its one writer and its one reader.

One row per logged step: ``step, tokens, train_loss, val_loss, learning_rate, grad_norm,
tokens_per_second``, an empty cell where the step did not measure that value.

A shared leaf (lmbuild.build.codeset.LEAVES): the engine's MLflow tracking reads curves through
it too, so it imports nothing but the standard library. What it does not do: plot a curve
(lmbuild.evaluation.report, lmbuild.evaluation.sweep_report).
"""

from __future__ import annotations

import csv
from pathlib import Path

CURVE_COLUMNS = ["step", "tokens", "train_loss", "val_loss", "learning_rate", "grad_norm", "tokens_per_second"]


def loss_curve(log_history: list[dict], tokens_per_step: int) -> list[dict]:
    """One row per logged step from ``trainer.state.log_history``; None where not measured."""
    rows: dict[int, dict] = {}
    fields = {"loss": "train_loss", "eval_loss": "val_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm", "tokens_per_second": "tokens_per_second"}
    for entry in log_history:
        if not any(k in entry for k in fields):
            continue  # the end-of-training summary
        step = entry["step"]
        row = rows.setdefault(step, {c: None for c in CURVE_COLUMNS} | {"step": step, "tokens": step * tokens_per_step})
        for key, column in fields.items():
            if key in entry:
                row[column] = entry[key]
    return [rows[s] for s in sorted(rows)]


def write_curve(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CURVE_COLUMNS)
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def read_curve(path: Path) -> list[dict]:
    """loss_curve.csv -> rows with numbers (int step and tokens; None for an empty or unreadable
    cell); [] if the file is missing."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                if k is None:
                    continue
                v = (v or "").strip()
                try:
                    parsed[k] = None if v == "" else (int(float(v)) if k in ("step", "tokens") else float(v))
                except ValueError:
                    parsed[k] = None
            rows.append(parsed)
    return rows
