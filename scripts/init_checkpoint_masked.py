"""Rule build_init_checkpoint for an encoder: a ModernBERT masked LM (model.objective masked) with its tokenizer and mask token."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.models.modernbert import build_init  # noqa: E402
from lmbuild.store.runner import run_stage  # noqa: E402

run_stage(snakemake, build_init)  # noqa: F821 (snakemake is injected by the script directive)
