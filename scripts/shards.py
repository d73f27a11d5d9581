"""Rule build_shards: Tokenize, append EOS, pack into seq_len blocks; hold out validation documents by id hash."""

from lmbuild.pack import build
from lmbuild.runner import run_stage

run_stage(snakemake, build)  # noqa: F821 (snakemake is injected by the script directive)
