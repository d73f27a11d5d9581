"""Rules gc and gc_remove: list what the store keeps and what it no longer needs, each with
why (and on request remove the latter)."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.store.gc import Policy, gc  # noqa: E402

p = snakemake.params  # noqa: F821 (snakemake is injected by the script directive)
policy = Policy(**p.policy)
text = gc(Path(p.root), {tuple(k.rsplit("/", 1)) for k in p.reachable}, list(p.stages), do_remove=p.delete,
          policy=policy, checkout=p.checkout)
Path(snakemake.log[0]).write_text(text + "\n")  # noqa: F821
print(text)
