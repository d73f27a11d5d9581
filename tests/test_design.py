"""docs/design.md against the code: every stage of the stage table has its rule, script, module,
schema section and docs entry, and the README's commands are the ones CI runs.

Generic over ``lmbuild.build.stages.STAGES``: a stage added to the table fails here until each of its
parts exists and docs/design.md describes it. What this does not check: that the prose is right.
"""

from __future__ import annotations

import ast
import re
from types import SimpleNamespace

import pytest

from conftest import ROOT
from lmbuild.build import config as lmconfig
from lmbuild.build.stages import STAGES

DESIGN = (ROOT / "docs" / "design.md").read_text()
SNAKEFILE = (ROOT / "Snakefile").read_text()


class Reads(dict):
    """A config that records every key path read through it (``c["data"]["clean"]`` records
    ("data",) and ("data", "clean")), to find the sections a stage's settings come from."""

    def __init__(self, data: dict, path: tuple = (), log: set | None = None):
        super().__init__(data)
        self.path, self.log = path, log if log is not None else set()

    def __getitem__(self, k):
        value, path = super().__getitem__(k), (*self.path, k)
        self.log.add(path)
        return Reads(value, path, self.log) if isinstance(value, dict) else value


def config_read(stage: str) -> list[str]:
    """The dotted config keys the stage's settings read (the deepest ones), for the default config
    (a stage of the whole build, the sweep report, reads it through the base plan, with a run)."""
    cfg = Reads(lmconfig.validate({}))
    row = STAGES[stage]
    row.settings(SimpleNamespace(config=cfg, sweep_runs={"run": {}}) if row.build_scope else cfg)
    paths = cfg.log
    return sorted(".".join(p) for p in paths if not any(q[: len(p)] == p and q != p for q in paths))


def design_row(stage: str) -> list[str]:
    rows = [line for line in DESIGN.splitlines() if line.startswith(f"| `{stage}` |")]
    assert len(rows) == 1, f"docs/design.md: expected one row for stage {stage!r} in the stage table, found {len(rows)}"
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def build_module(script) -> str:
    """lmbuild/<...>.py that the script imports its stage's ``build`` from."""
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmbuild"):
            if any(a.name == "build" for a in node.names):
                return node.module.replace(".", "/") + ".py"
    raise AssertionError(f"{script}: imports no build function from lmbuild")


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_has_its_rule_script_module_and_docs_row(stage):
    _, rule, scripts, module, artifact, reads = design_row(stage)
    smk = ROOT / "rules" / f"{stage}.smk"
    assert smk.is_file(), f"stage {stage}: {smk} is missing"
    assert re.search(rf"^rule build_{stage}:", smk.read_text(), re.M), f"{smk}: no `rule build_{stage}:`"
    assert f'include: "rules/{stage}.smk"' in SNAKEFILE, f"Snakefile does not include rules/{stage}.smk"
    assert f"`build_{stage}`" in rule and f"`rules/{stage}.smk`" in rule, rule
    encoder = [ROOT / "scripts" / f"{STAGES[stage].encoder_script}.py"] if STAGES[stage].encoder_script else []
    for path in [*STAGES[stage].script_paths, *encoder]:
        assert path.is_file(), f"stage {stage}: {path} is missing"
        assert f"`scripts/{path.name}`" in scripts, f"docs/design.md, row {stage}: names no `scripts/{path.name}`"
    main = build_module(STAGES[stage].script)
    assert (ROOT / main).is_file() and f"`{main}`" in module, f"docs/design.md, row {stage}: the module is {main}, not {module}"
    assert artifact, f"docs/design.md, row {stage}: says nothing of the artifact"


@pytest.mark.parametrize("stage", list(STAGES))
def test_the_config_a_stage_reads_is_a_schema_section_in_the_reference_and_the_row(stage):
    reads = config_read(stage)
    if not reads:  # a stage without settings (the report page): its row says so
        assert design_row(stage)[5].startswith("none"), f"docs/design.md, row {stage}: it reads no config"
        return
    schema = lmconfig.load_schema()
    reference = (ROOT / "docs" / "configuration.md").read_text()
    row = design_row(stage)[5]
    for dotted in reads:
        node = schema
        for part in dotted.split("."):
            assert part in node.get("properties", {}), f"stage {stage} reads {dotted}, which the schema lacks ({part})"
            node = node["properties"][part]
        assert re.search(rf"^\| `{re.escape(dotted)}[`.\[]", reference, re.M), f"docs/configuration.md has no row for {dotted}"
        assert f"`{dotted}`" in row, f"docs/design.md, row {stage}: does not name `{dotted}` (it reads {reads})"


def test_the_drawing_has_every_stage_with_its_inputs():
    drawing = {}
    for line in DESIGN.splitlines():
        m = re.match(r"^(.+?)\s+-> (\w+)$", line)
        if m:  # "(...)": no input of the table's (none, or the build's other plans': more_inputs)
            drawing[m.group(2)] = {n.strip().rstrip("*") for n in re.sub(r"\(.*?\)", "", m.group(1)).split(",")} - {""}
    cfg = lmconfig.validate({"data": {"clean": {"quality": {"enabled": True}}, "quality_model": {"positives": [{"type": "embedded"}], "negatives": [{"type": "embedded"}]}}})
    for name, stage in STAGES.items():
        assert name in drawing, f"docs/design.md: the drawing has no line `... -> {name}`"
        # Every input, with the optional ones switched on (default config: a trained BPE).
        assert set(stage.input_names(cfg)) == drawing[name], (name, stage.input_names(cfg), drawing[name])


def test_the_layout_lists_every_module():
    """docs/design.md's layout names every module of lmbuild (by its file name, in its package's block)."""
    block = DESIGN[DESIGN.index("## Layout"):DESIGN.index("## Tests")]
    for path in sorted((ROOT / "lmbuild").rglob("*.py")):
        if path.name == "__init__.py" and path.parent != ROOT / "lmbuild":
            continue
        rel = path.relative_to(ROOT / "lmbuild")
        assert re.search(rf"(^|\s){re.escape(path.name)}([\s:;,]|$)", block), f"docs/design.md, Layout: names no {rel}"
    for package in sorted(p for p in (ROOT / "lmbuild").iterdir() if (p / "__init__.py").is_file()):
        assert f"  {package.name}/" in block, f"docs/design.md, Layout: names no lmbuild/{package.name}/"


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test = next(b for b in blocks if "pytest" in b)
    venv, install, pytest_cmd = (part.strip() for part in test.split("&&"))
    # .ci/run installs quietly (-q) and keeps pip's output in a log.
    assert f"{venv} && {install.replace('pip install ', 'pip install -q ')} " in ci, "the README's install is not the one .ci/run runs"
    assert re.search(rf"^{re.escape(pytest_cmd)} ", ci, re.M), f".ci/run does not run the README's {pytest_cmd!r}"
    default = next(b for b in blocks if "snakemake" in b and "pytest" not in b)
    assert default.startswith(f"{venv} && ") and default.endswith("&& .venv/bin/snakemake --cores 2"), default


def test_every_benchmark_is_on_the_benchmarks_page():
    page = (ROOT / "bench" / "README.md").read_text()
    for path in sorted([*(ROOT / "bench").glob("*.py"), *(ROOT / "bench").glob("*.sh")]):
        assert f"bench/{path.name}" in page, f"bench/README.md does not describe bench/{path.name}"


# An absolute path of one machine: its checkouts, homes, venvs, mounts and scratch folders. It
# starts a word (not `tests/data/`, `../shared/data`, a URL's path or `${VAR}/tmp`). System
# folders (/usr, /dev, /proc, /etc, /sys) are not in it: they name the OS, not one machine.
MACHINE_PATH = re.compile(
    r"(?<![\w.\-/}$)])/(?:(?:work|root|home|opt|Users|mnt|scratch|data|srv|lustre|gpfs)/|(?:var/)?tmp/[\w.-])"
)
# (file, text on the line, written without its leading slash so that this file passes too): why
# that hit names no machine's folder.
ALLOWED_PATHS = {
    (".gitignore", "work/"): "a pattern anchored at the repository root: the checkout's own work/ folder",
    ("tests/store/test_runner.py", "data/shard-00001.parquet"): "the file name of a made-up OSError; nothing is read there",
    ("tests/workflow/test_workflow.py", 'data/" in n'): "a part of an artifact's path inside the test's own folder",
}


def tracked_text_files() -> list[str]:
    import subprocess

    proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if proc.returncode:
        pytest.skip(f"not a git checkout ({proc.stderr.decode().strip()})")
    return [name for name in proc.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


def test_no_absolute_path_of_a_machine_in_tracked_files():
    hits, used = [], set()
    for name in tracked_text_files():
        data = (ROOT / name).read_bytes()
        if b"\0" in data[:8192]:  # binary: a model, a compressed fixture, a plot
            continue
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if not MACHINE_PATH.search(line):
                continue
            allowed = [key for key in ALLOWED_PATHS if key[0] == name and key[1] in line]
            if allowed:
                used.update(allowed)
            else:
                hits.append(f"{name}:{number}: {line.strip()[:160]}")
    assert not hits, "absolute paths of a machine (record commands relative to the repository, <workdir> for a work folder):\n" + "\n".join(hits)
    assert used == set(ALLOWED_PATHS), f"allowed paths no longer found, drop them: {set(ALLOWED_PATHS) - used}"
