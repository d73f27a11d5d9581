"""``lmbuild why``: which artifacts a build would make, and what differs from what is built.

For every artifact the targets need that is not complete in the store (exactly the jobs that
``snakemake -n`` plans: a complete artifact asks for no inputs, rules/common.smk), the nearest
complete artifact of the same stage is found by its manifest and compared with the plan:

  settings      dotted key: old -> new (local files by name: added, removed, changed),
  code          the code files whose bytes differ (manifests record each file's sha256),
  inputs        upstream keys that differ (the upstream artifact is listed above it).

The plan is the one the Snakefile computes (lmbuild.build.graph.Plan over the same config layers,
lmbuild.build.layers): nothing here computes a key.

What this module does not do: run anything, or look at Snakemake's own metadata (reruns are
decided by the keys alone, profiles/default/config.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path

from lmbuild.build.layers import leaves
from lmbuild.build.graph import Artifact, Plan
from lmbuild.build.stages import CHAIN, FINAL, STAGES
from lmbuild.errors import UserError
from lmbuild.store.artifact import MANIFEST, is_complete

MAX_LINES = 12  # setting differences shown per artifact before "... and N more"


def config_key(stage: str, path: str) -> str:
    """A stage's settings path as a config key: cleaned's ``c4.enabled`` is ``data.clean.c4.enabled``
    (where its settings sit: ``Stage.section``, and ``Stage.elsewhere`` for keys from elsewhere)."""
    row = STAGES.get(stage)
    if row is None:
        return path
    head = path.split(".", 1)[0].split("[", 1)[0]
    if head in row.elsewhere:
        return row.elsewhere[head] + path[len(head):]
    return row.section + path


def targets(plan: Plan, names: list[str]) -> list[Artifact]:
    """The artifacts that Snakemake targets name (the Snakefile's `all`, stage and variant rules)."""
    out = []
    for name in names or ["all"]:
        if name == "all":
            out += [plan.artifacts[FINAL], plan.artifacts["trained_checkpoint"]]
        elif name == "variants":
            out += [p.artifacts[FINAL] for p in plan.variants.values()]
        elif name == "sweep":
            if "sweep_report" not in plan.artifacts:
                raise UserError("config: sweep: no runs (set sweep.grid or sweep.random)")
            out.append(plan.artifacts["sweep_report"])
        elif name in CHAIN or name in ("plan", "export"):
            out.append(plan.artifacts[name])
        elif "__" in name and name.split("__", 1)[0] in plan.variants and name.split("__", 1)[1] in (*CHAIN, "export"):
            variant, stage = name.split("__", 1)  # rules/variants.smk and rules/export.smk name these targets
            out.append(plan.variants[variant].artifacts[stage])
        else:
            known = ", ".join(["all", "variants", "sweep", "plan", "export", *CHAIN, *(f"{v}__<stage>" for v in plan.variants)])
            raise UserError(f"why: unknown target {name!r} (targets: {known})")
    return out


def would_run(wanted: list[Artifact]) -> list[Artifact]:
    """The artifacts a build of ``wanted`` makes, inputs before the artifacts that read them."""
    order: list[Artifact] = []
    seen: set[tuple[str, str]] = set()

    def visit(a: Artifact) -> None:
        if (a.stage, a.key) in seen:
            return
        seen.add((a.stage, a.key))
        if is_complete(Path(a.path)):
            return
        for i in a.inputs.values():
            visit(i)
        order.append(a)

    for a in wanted:
        visit(a)
    return order


def _is_files(node: dict) -> bool:
    """A located glob in key settings (lmbuild.build.locate.Locator.files): {pattern, files}."""
    return set(node) == {"pattern", "files"}


def _show(value) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def setting_changes(old: dict, new: dict, stage: str = "") -> list[str]:
    """``key: old -> new`` per differing leaf (as config keys); a located glob by its file names."""
    a = {config_key(stage, p): v for p, v in leaves(old, whole=_is_files)}
    b = {config_key(stage, p): v for p, v in leaves(new, whole=_is_files)}
    lines = []
    for path in sorted(set(a) | set(b)):
        if a.get(path) == b.get(path) and (path in a) == (path in b):
            continue
        x, y = a.get(path), b.get(path)
        if isinstance(x, dict) and isinstance(y, dict) and _is_files(x) and _is_files(y):
            lines += _file_changes(path, x, y)
        elif path not in a:
            lines.append(f"{path}: (unset) -> {_show(y)}")
        elif path not in b:
            lines.append(f"{path}: {_show(x)} -> (unset)")
        else:
            lines.append(f"{path}: {_show(x)} -> {_show(y)}")
    return lines


def _file_changes(path: str, old: dict, new: dict) -> list[str]:
    a, b = dict(map(tuple, old["files"])), dict(map(tuple, new["files"]))
    lines = []
    if old["pattern"] != new["pattern"]:
        lines.append(f"{path}: pattern {old['pattern']} -> {new['pattern']}")
    for name in sorted(set(a) | set(b)):
        if name not in a:
            lines.append(f"{path}: file added: {name}")
        elif name not in b:
            lines.append(f"{path}: file removed: {name}")
        elif a[name] != b[name]:
            lines.append(f"{path}: file changed: {name}")
    return lines


def _difference(a: Artifact, manifest: dict) -> dict:
    """What differs between the planned artifact and a built one's manifest."""
    old_digests = manifest.get("code_digests") or {}
    new_digests = a.lineage()["code_digests"]
    if manifest.get("code_hash") == a.code_hash:
        code = []
    elif old_digests:
        code = [f for f in sorted(set(old_digests) | set(new_digests)) if old_digests.get(f) != new_digests.get(f)]
    else:
        code = ["(the built artifact's manifest names no file hashes)"]
    old_inputs = {n: i.get("key") for n, i in (manifest.get("inputs") or {}).items()}
    new_inputs = {n: i.key for n, i in a.inputs.items()}
    inputs = [
        f"{n}: {old_inputs.get(n) or '(none)'} -> {new_inputs.get(n) or '(none)'}"
        for n in sorted(set(old_inputs) | set(new_inputs))
        if old_inputs.get(n) != new_inputs.get(n)
    ]
    return {"settings": setting_changes(manifest.get("key_settings", manifest.get("settings", {})), a.settings, a.stage), "code": code, "inputs": inputs}


def nearest(a: Artifact) -> tuple[Path, dict] | None:
    """The complete artifact of ``a``'s stage with the fewest differences, and those."""
    best = None
    folder = Path(a.path).parent
    for cand in sorted(folder.iterdir()) if folder.is_dir() else []:
        if cand.name.startswith(".") or not (cand / MANIFEST).is_file():
            continue
        try:
            manifest = json.loads((cand / MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        diff = _difference(a, manifest)
        size = sum(len(v) for v in diff.values())
        if best is None or size < best[0]:
            best = (size, cand, diff)
    return None if best is None else (best[1], best[2])


def explain(plan: Plan, names: list[str]) -> str:
    """``lmbuild why``'s text."""
    runs = would_run(targets(plan, names))
    if not runs:
        return f"nothing to do: {', '.join(names or ['all'])} is built ({plan.root}/)\n"
    lines = [f"{len(runs)} artifact(s) would be built:"]
    for a in runs:
        lines.append(f"\n{a.stage} {a.path}")
        found = nearest(a)
        if found is None:
            lines.append(f"  never built: no complete {a.stage} artifact in {Path(a.path).parent}/")
            continue
        path, diff = found
        lines.append(f"  nearest built: {path}")
        settings = diff["settings"]
        for s in settings[:MAX_LINES]:
            lines.append(f"  setting {s}")
        if len(settings) > MAX_LINES:
            lines.append(f"  ... and {len(settings) - MAX_LINES} more settings")
        for f in diff["code"]:
            lines.append(f"  code {f}")
        for i in diff["inputs"]:
            lines.append(f"  input {i}")
        if not any(diff.values()):
            lines.append("  (no difference recorded: a manifest from another version of lmbuild)")
    return "\n".join(lines) + "\n"
