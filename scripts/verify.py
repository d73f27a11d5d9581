"""Rule verify: check every built artifact of the config and its variants against its manifest
(every file's size and SHA-256); one line per damaged artifact and a non-zero exit."""

import sys
from pathlib import Path

# lmbuild from this checkout, also inside a --use-conda env that has only its dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmbuild.artifact import MANIFEST, verify  # noqa: E402
from lmbuild.errors import UserError  # noqa: E402

lines, bad = [], 0
for path in snakemake.params.artifacts:  # noqa: F821 (snakemake is injected by the script directive)
    if not (Path(path) / MANIFEST).exists():
        continue  # not built (yet)
    try:
        m = verify(path, hashes=True)
        lines.append(f"ok: {path} ({len(m.get('files') or {})} files)")
    except UserError as exc:
        lines.append(f"error: verify: {exc}")
        print(f"error: verify: {exc}", file=sys.stderr)
        bad += 1
lines.append(f"verify: {len(lines) - bad} artifacts intact, {bad} damaged")
Path(snakemake.log[0]).write_text("\n".join(lines) + "\n")  # noqa: F821
print("\n".join(lines))
sys.exit(1 if bad else 0)
