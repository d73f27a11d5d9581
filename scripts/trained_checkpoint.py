"""Rule build_trained_checkpoint: Train with the HF Trainer: AdamW, warmup + cosine, clipping, bf16 where supported, validation loss."""

from lmbuild.train import build
from lmbuild.runner import run_stage

run_stage(snakemake, build)  # noqa: F821 (snakemake is injected by the script directive)
