"""Rules gc and gc_remove: list (and on request remove) what the store no longer needs."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.gc import gc  # noqa: E402

p = snakemake.params  # noqa: F821 (snakemake is injected by the script directive)
text = gc(Path(p.root), {tuple(k.split("/")) for k in p.reachable}, list(p.stages), do_remove=p.delete)
Path(snakemake.log[0]).write_text(text + "\n")  # noqa: F821
print(text)
