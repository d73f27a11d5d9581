"""Rule dedup_map: hash keys of one cleaned part's shard into buckets; contaminated ids."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.data.deduplicated import partition  # noqa: E402
from lmbuild.store.runner import run_stage  # noqa: E402

run_stage(snakemake, partition)  # noqa: F821 (injected by script:): the map of one cleaned part
