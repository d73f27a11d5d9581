"""Helpers the bench scripts share: records without this machine's paths, scratch folders, peer venvs.

A recorded command (a result file's "command", a printed usage line, a cProfile listing) must
read the same on any machine, so `relative_command` and `relative_text` replace this machine's
absolute paths: the checkout by repository-relative paths, the running venv's bin folder by
nothing (`snakemake`, `python`), its site-packages by `site-packages`, named folders by their
placeholder (`<workdir>`), the temp folder by `<tmp>` and the home folder by `~`.
`relative_argv` also shortens any other absolute path in an argument (not the OS's /dev, /usr, ...)
to `<dir>/<name>`.

Standard library only: dedup_bench.py re-runs itself under a peer's venv (datatrove's).
Does not make a recorded command runnable as is: placeholders stand for folders chosen at run time.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Where the shared real data lives (KJV, WikiText-2, ...): beside the checkout unless said otherwise.
SHARED_DATA = Path(os.environ.get("LMBUILD_SHARED_DATA", REPO.parent / "shared" / "data"))

# An absolute path starts a word: not inside a relative path, a URL's path or ${VAR}/x.
_START = r"(?<![\w.\-/}$)])"
_END = r"(?=[/\s\"',:;=)\]}]|$)"
SYSTEM = ("/dev/", "/proc/", "/sys/", "/etc/", "/usr/")  # the OS's own folders, the same on every machine


def scratch(name: str) -> Path:
    """A default work folder, under this machine's temp folder (found at run time)."""
    return Path(tempfile.gettempdir()) / name


def _prefixes(named: dict[str, str | os.PathLike]) -> list[tuple[str, str]]:
    pairs = []
    for placeholder, path in named.items():
        for variant in {str(Path(path).absolute()), str(Path(path).resolve())}:
            pairs.append((variant, placeholder))
    for root in {REPO, REPO.resolve()}:
        pairs.append((str(root), "."))
    pairs.append((str(Path(sys.executable).parent), "bin"))  # the venv's bin: snakemake, python
    for key in ("purelib", "platlib"):
        pairs.append((sysconfig.get_paths()[key], "site-packages"))
    pairs.append((tempfile.gettempdir(), "<tmp>"))
    pairs.append((str(Path.home()), "~"))
    return sorted(set(pairs), key=lambda p: -len(p[0]))  # the longest prefix wins (a workdir in /tmp)


def relative_text(text: str, named: dict[str, str | os.PathLike] | None = None) -> str:
    """text with this machine's known folders replaced (see the module docstring)."""
    for prefix, placeholder in _prefixes(named or {}):
        if prefix in ("", "/"):
            continue

        def swap(m: re.Match, placeholder=placeholder) -> str:
            rest = m.group(1) or ""
            if placeholder in (".", "bin"):  # a file in the checkout or the venv's bin: its relative name
                return rest[1:] if rest else ("." if placeholder == "." else "")
            return placeholder + rest

        text = re.sub(_START + re.escape(prefix) + r"(/[^\s\"',:;=)\]}]*)?" + _END, swap, text)
    return text


def relative_argv(argv: list[str], named: dict[str, str | os.PathLike] | None = None) -> list[str]:
    """Each argument as relative_text makes it; an absolute path left over becomes `<dir>/<name>`."""
    out = []
    for arg in argv:
        arg = relative_text(str(arg), named)
        key, eq, value = arg.rpartition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
        if value.startswith("/") and len(value) > 1 and not value.startswith(SYSTEM):
            value = f"<dir>/{Path(value).name}"
        out.append(key + eq + value)
    return out


def relative_command(argv: list[str], named: dict[str, str | os.PathLike] | None = None) -> str:
    """argv as one line for a record, without this machine's paths (`snakemake --snakefile Snakefile ...`)."""
    return " ".join(relative_argv(argv, named))


def peer_python(path: str | None, flag: str, what: str) -> str:
    """The interpreter of a peer tool's own venv, from a required argument: where such a venv
    lives is a fact of one machine, so there is no default. Exits with one line if it is
    missing or not an executable file. Not resolved: a venv's python is often a symlink to
    the system's, which would lose the venv's packages."""
    prog = Path(sys.argv[0]).name
    if not path:
        sys.exit(f"{prog}: {flag} is required here: the python of a venv with {what} ({flag} DT/bin/python)")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        sys.exit(f"{prog}: {flag} {path}: no such executable file")
    return os.path.abspath(path)


def job_stats(output: str) -> dict[str, int]:
    """{rule: jobs} from the first 'Job stats' table Snakemake printed (`-n` or a run), without
    its total; {} when it printed none ('Nothing to be done')."""
    if "Job stats:" not in output:
        return {}
    jobs = {}
    for line in output.split("Job stats:")[1].splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m or m.group(1) == "total":
            break
        jobs[m.group(1)] = int(m.group(2))
    return jobs
