"""Rule build_deduplicated: Exact deduplication across all shards with one DuckDB query; the smallest id survives."""

from lmbuild.data.dedup import build
from lmbuild.runner import run_stage

run_stage(snakemake, build)  # noqa: F821 (snakemake is injected by the script directive)
