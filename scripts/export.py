"""Rule build_export: the trained model shipped: its HF folder, a GGUF file and a model card."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.ship.export import build  # noqa: E402
from lmbuild.store.runner import run_stage  # noqa: E402

run_stage(snakemake, build)  # noqa: F821 (snakemake is injected by the script directive)
