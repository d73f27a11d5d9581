"""Rule build_eval_report when an encoder is among the checkpoints: the same report.json, each encoder scored by masked-token accuracy and pseudo-perplexity."""

import functools
import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.evaluation import masked  # noqa: E402
from lmbuild.evaluation.eval_report import build  # noqa: E402
from lmbuild.store.runner import run_stage  # noqa: E402

run_stage(snakemake, functools.partial(build, encoders=masked))  # noqa: F821 (snakemake is injected by the script directive)
