"""Rule build_tokenizer: Train a byte-level BPE on the deduplicated text, or take an existing tokenizer."""

from lmbuild.tokenizer import build
from lmbuild.runner import run_stage

run_stage(snakemake, build)  # noqa: F821 (snakemake is injected by the script directive)
