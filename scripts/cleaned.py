"""Rule build_cleaned: Normalise Unicode, drop by length, Gopher repetition and fastText language ID; count drops per reason."""

from lmbuild.data.clean import build
from lmbuild.runner import run_stage

run_stage(snakemake, build)  # noqa: F821 (snakemake is injected by the script directive)
