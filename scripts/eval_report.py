"""Rule build_eval_report: lm-eval held-out perplexity (+ configured tasks), sample generations, report.json and report.html."""

from lmbuild.evaluate import build
from lmbuild.runner import run_stage

run_stage(snakemake, build)  # noqa: F821 (snakemake is injected by the script directive)
