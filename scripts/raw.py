"""Rule build_raw: Ingest the configured sources into Parquet shards (id, text, source, metadata)."""

from lmbuild.data.ingest import build
from lmbuild.runner import run_stage

run_stage(snakemake, build)  # noqa: F821 (snakemake is injected by the script directive)
