"""Depth up-scaling against random initialisation at the same token budget: run, table, plot.

    python experiments/depth_upscaling.py [--workdir DIR] [--configfile experiments/depth_upscaling.yaml]
    python experiments/depth_upscaling.py --report-only      # table and plot from the saved JSON

Builds the three trained checkpoints of ``depth_upscaling.yaml`` with one ``snakemake`` call
(small -> upscaled -> continued, and random6), then reads their ``loss_curve.csv`` and
manifests and writes ``experiments/depth_upscaling.json`` (every point, the load average,
the command, paths relative to the repository and ``<workdir>``), ``experiments/depth_upscaling.png``
and a Markdown table on stdout. The work folder defaults to lmbuild-dus in the temp folder.

How compute is counted: training FLOPs = tokens x ``lmbuild.models.common.flops_per_token`` of the
model that saw them (6 x matmul parameters + attention, at ``pack.seq_len``); the recipe's
count includes every token and FLOP of the small model's training. Validation is not counted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml
from snakemake.utils import update_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import relative_command, relative_text, scratch  # noqa: E402

HERE = Path(__file__).resolve().parent
TARGETS = ["trained_checkpoint", "small__trained_checkpoint", "random6__trained_checkpoint"]


def flops_per_token(model_dir: Path, seq_len: int) -> int:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from lmbuild.models.common import flops_per_token as fpt, matmul_parameters

    hf_logging.disable_progress_bar()
    m = AutoModelForCausalLM.from_pretrained(model_dir)
    return fpt(matmul_parameters(m), m.config.num_hidden_layers, m.config.hidden_size, seq_len)["total"]


def curve(art: Path) -> list[dict]:
    with open(art / "loss_curve.csv") as f:
        return [{"step": int(r["step"]), "tokens": int(r["tokens"]), "val_loss": float(r["val_loss"])} for r in csv.DictReader(f) if r["val_loss"]]


def run(args) -> dict:
    from lmbuild.build.config import validate
    from lmbuild.build.graph import Plan

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [str(snakemake), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", "2", *TARGETS, "--configfile", str(ROOT / "config.yaml"), args.configfile]
    # config.yaml named first: the experiment is layered over the demo (lmbuild/build/layers.py), which a
    # --configfile build does not read otherwise.
    # Addresses first: the plan of the code that runs (edits to the checkout later do not move them).
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load(Path(args.configfile).read_text()))  # as --configfile merges them
    cfg = validate(cfg)
    plan = Plan(cfg)
    load_before = os.getloadavg()
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode:
        sys.exit((proc.stdout + proc.stderr)[-4000:])
    seq_len = cfg["pack"]["seq_len"]
    runs = {}
    for label, p in (("small", plan.variant("small")), ("upscaled", plan), ("random6", plan.variant("random6"))):
        art = work / p.path("trained_checkpoint")
        m = json.loads((art / "manifest.json").read_text())
        runs[label] = {
            "artifact": relative_text(str(art), {"<workdir>": work}),
            "layers": p.config["model"]["num_hidden_layers"],
            "steps": m["counts"]["steps"],
            "tokens": m["counts"]["tokens_seen"],
            "train_seconds": m["counts"]["train_seconds"],
            "tokens_per_second": m["counts"]["tokens_per_second"],
            "flops_per_token": flops_per_token(art, seq_len),
            "curve": curve(art),
        }
    return {
        "command": relative_command(cmd, {"<workdir>": work}),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(wall),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": runs,
    }


def series(result: dict) -> dict[str, list[tuple[int, float, float]]]:
    """(tokens, FLOPs, val loss) per point: the recipe = small's curve, then the upscaled one after it."""
    r = result["runs"]
    small, up, rnd = r["small"], r["upscaled"], r["random6"]
    offset_t, offset_f = small["tokens"], small["tokens"] * small["flops_per_token"]
    recipe = [(p["tokens"], p["tokens"] * small["flops_per_token"], p["val_loss"]) for p in small["curve"]]
    recipe += [(offset_t + p["tokens"], offset_f + p["tokens"] * up["flops_per_token"], p["val_loss"]) for p in up["curve"]]
    return {"recipe": recipe, "random6": [(p["tokens"], p["tokens"] * rnd["flops_per_token"], p["val_loss"]) for p in rnd["curve"]]}


def to_reach(points: list[tuple[int, float, float]], loss: float) -> tuple[float, float] | None:
    """(tokens, FLOPs) at which a curve first reaches ``loss``, linearly interpolated; None if never."""
    for (t0, f0, l0), (t1, f1, l1) in zip(points, points[1:]):
        if l1 <= loss <= l0:
            w = (l0 - loss) / (l0 - l1) if l0 != l1 else 1.0
            return t0 + w * (t1 - t0), f0 + w * (f1 - f0)
    return None


def report(result: dict) -> str:
    s = series(result)
    r = result["runs"]
    n_small = len(r["small"]["curve"])
    rnd = {t: (f, l) for t, f, l in s["random6"]}
    recipe: dict[int, list] = {}
    for i, (t, f, l) in enumerate(s["recipe"]):
        # The small model's last point and the upscaled copy's first share a token count: both kept.
        model = f"{r['small']['layers']} layers" if i < n_small else f"{r['upscaled']['layers']} layers (upscaled)"
        recipe.setdefault(t, []).append(f"{model} | {f / 1e12:.2f} | {l:.3f}")
    lines = [
        f"| tokens seen | recipe: model | recipe: TFLOPs | recipe: val loss | random {r['random6']['layers']}-layer: TFLOPs | random: val loss |",
        "|---|---|---|---|---|---|",
    ]
    for t in sorted(set(recipe) | set(rnd)):
        cells = recipe.get(t, [" | | "])
        for k, cell in enumerate(cells):
            b = rnd.get(t) if k == len(cells) - 1 else None
            lines.append(f"| {t:,} | {cell} | " + (f"{b[0] / 1e12:.2f} | {b[1]:.3f} |" if b else " | |"))
    final_t, final_f, final_l = s["recipe"][-1]
    rt, rf, rl = s["random6"][-1]
    reach = to_reach(s["random6"], final_l)
    summary = [
        f"recipe final: {final_l:.3f} at {final_t:,} tokens, {final_f / 1e12:.2f} TFLOPs; random {r['random6']['layers']}-layer final: {rl:.3f} at {rt:,} tokens, {rf / 1e12:.2f} TFLOPs.",
    ]
    big = f"random {r['random6']['layers']}-layer"
    if reach:
        dt, df = 1 - final_t / reach[0], 1 - final_f / reach[1]
        summary.append(
            f"{big} reaches the recipe's final loss after {reach[0]:,.0f} tokens and {reach[1] / 1e12:.2f} TFLOPs, so the recipe "
            + (f"saved {100 * df:.0f}% of the FLOPs" if df > 0 else f"needed {100 * -df:.0f}% more FLOPs")
            + (f" and {100 * dt:.0f}% of the tokens." if dt > 0 else f" and {100 * -dt:.0f}% more tokens.")
        )
    else:
        summary.append(f"{big} does not reach the recipe's final loss within the budget ({rl:.3f} > {final_l:.3f}).")
    return "\n".join(lines) + "\n\n" + "\n".join(summary)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = series(result)
    r = result["runs"]
    n_small = len(r["small"]["curve"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, x, label in ((axes[0], 0, "tokens seen (millions)"), (axes[1], 1, "training FLOPs (x 10^12)")):
        scale = 1e6 if x == 0 else 1e12
        pts = s["recipe"]
        ax.plot([p[x] / scale for p in pts[:n_small]], [p[2] for p in pts[:n_small]], "o-", color="tab:orange", label=f"small: {r['small']['layers']} layers, random init")
        ax.plot([p[x] / scale for p in pts[n_small:]], [p[2] for p in pts[n_small:]], "o-", color="tab:red", label=f"upscaled to {r['upscaled']['layers']} layers (SOLAR), continued")
        ax.plot([p[x] / scale for p in s["random6"]], [p[2] for p in s["random6"]], "s-", color="tab:blue", label=f"{r['random6']['layers']} layers, random init")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss")
    axes[0].legend(fontsize=8)
    fig.suptitle("Depth up-scaling vs random init, same token budget (lmbuild, embedded corpus, 2 CPU cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configfile", default=str(HERE / "depth_upscaling.yaml"))
    ap.add_argument("--workdir", default=str(scratch("lmbuild-dus")))
    ap.add_argument("--out", default=str(HERE / "depth_upscaling"), help="prefix of the .json and .png written")
    ap.add_argument("--report-only", action="store_true", help="table and plot from the saved JSON")
    args = ap.parse_args()
    out = Path(args.out)
    if args.report_only:
        result = json.loads(out.with_suffix(".json").read_text())
    else:
        result = run(args)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"{result['date']}, {result['machine']}, load average {result['load_before']} before, {result['load_after']} after; "
          f"{result['wall_seconds']} s wall clock\ncommand: {result['command']}\n")
    print(report(result))


if __name__ == "__main__":
    main()
