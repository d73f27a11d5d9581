"""Rule verify: check every planned artifact of the config and its variants against its
manifest (every file's size and SHA-256), and the cost plan if it was built; one line per
damaged or missing artifact and a non-zero exit."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.store.registry import verify_store  # noqa: E402

p = snakemake.params  # noqa: F821 (snakemake is injected by the script directive)
lines, errors = verify_store([tuple(e) for e in p.expected], list(p.optional))
Path(snakemake.log[0]).write_text("\n".join(lines) + "\n")  # noqa: F821
for line in lines:
    print(line, file=sys.stderr if line.startswith("error:") else sys.stdout)
sys.exit(1 if errors else 0)
