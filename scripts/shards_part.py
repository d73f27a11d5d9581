"""Rule build_shards_part: tokenize and pack one deduplicated shard (the fan-out half of stage shards)."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.store.runner import run_stage  # noqa: E402
from lmbuild.tokens.shards import build_part  # noqa: E402

part = int(snakemake.params.part)  # noqa: F821 (snakemake is injected by the script directive)
run_stage(snakemake, lambda ctx: build_part(ctx, part))  # noqa: F821
