"""Rule build_init_checkpoint: A seeded random Llama from model.*, saved (safetensors) with its tokenizer."""

from lmbuild.model import build
from lmbuild.runner import run_stage

run_stage(snakemake, build)  # noqa: F821 (snakemake is injected by the script directive)
