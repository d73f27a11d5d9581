"""Rule build_raw_part: ingest one group of input files (the fan-out half of stage raw)."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.data.raw import build_part  # noqa: E402
from lmbuild.store.runner import run_stage  # noqa: E402

run_stage(snakemake, build_part)  # noqa: F821 (snakemake is injected by the script directive)
