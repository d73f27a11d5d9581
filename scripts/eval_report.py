"""Rule build_eval_report: report.json over every checkpoint: lm-eval held-out perplexity (+ configured tasks) and sample generations of a causal model, masked-token accuracy and pseudo-perplexity of an encoder."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.evaluation.eval_report import build  # noqa: E402
from lmbuild.store.runner import run_stage  # noqa: E402

run_stage(snakemake, build)  # noqa: F821 (snakemake is injected by the script directive)
