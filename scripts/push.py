"""Rule push: upload the export to the hub (export.push.repo_id); not an artifact, in no key."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.ship.push import main  # noqa: E402

main(Path(snakemake.input[0]), snakemake.params.push, Path(snakemake.log[0]))  # noqa: F821
