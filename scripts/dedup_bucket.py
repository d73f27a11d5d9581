"""Rule dedup_bucket: group one bucket's hash keys from every map job into duplicate edges."""

import functools
import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.data.deduplicated import bucket  # noqa: E402
from lmbuild.store.runner import run_stage  # noqa: E402

maps = [Path(p) for p in snakemake.input.maps]  # noqa: F821 (one map per cleaned part, in order)
run_stage(snakemake, functools.partial(bucket, bucket_index=snakemake.params.bucket, maps=maps))  # noqa: F821
