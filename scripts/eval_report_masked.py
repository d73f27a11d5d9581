"""Rule build_eval_report for an encoder: the report when an encoder is among the checkpoints (masked-token accuracy, pseudo-perplexity; causal checkpoints as lmbuild.evaluate does)."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.masked_eval import build  # noqa: E402
from lmbuild.runner import run_stage  # noqa: E402

run_stage(snakemake, build)  # noqa: F821 (snakemake is injected by the script directive)
