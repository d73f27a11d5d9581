"""Atomic artifacts: a failed or killed stage leaves nothing that looks complete."""

import json
import signal
import subprocess
import sys

import pytest

from lmbuild.artifact import MANIFEST, atomic_dir, read_manifest
from lmbuild.errors import UserError
from lmbuild.runner import run


def test_exception_leaves_no_artifact_and_no_temp(tmp_path):
    final = tmp_path / "stage" / "abc"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_sigkill_mid_write_leaves_no_artifact(tmp_path):
    final = tmp_path / "stage" / "abc"
    code = f"""
import time
from pathlib import Path
from lmbuild.artifact import atomic_dir
with atomic_dir(Path({str(final)!r})) as tmp:
    (tmp / "part").write_text("half")
    print("writing", flush=True)
    time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not final.exists()
    leftovers = list(final.parent.glob(".tmp-abc-*"))
    assert leftovers, "the killed attempt's temporary directory should still be there"
    # The next attempt clears the leftover and completes.
    with atomic_dir(final) as tmp:
        (tmp / "done").write_text("ok")
    assert (final / "done").read_text() == "ok"
    assert not list(final.parent.glob(".tmp-*"))


def _build_ok(ctx):
    (ctx.out / "data.txt").write_text(ctx.settings["word"])
    return {"words": 1}


def _build_bad(ctx):
    (ctx.out / "data.txt").write_text("half")
    raise UserError("input.jsonl:3: invalid JSON")


def test_run_writes_manifest_last_with_lineage(tmp_path):
    out = tmp_path / "artifacts" / "toy" / "0123456789abcdef"
    lineage = {"code_hash": "c0de", "code_files": ["x.py"], "inputs": {}}
    m = run(_build_ok, stage="toy", key="0123456789abcdef", settings={"word": "hi"}, lineage=lineage, inputs={}, output=out)
    assert (out / "data.txt").read_text() == "hi"
    on_disk = read_manifest(out)
    assert on_disk == json.loads(json.dumps(m, default=str))
    assert on_disk["key"] == "0123456789abcdef" and on_disk["settings"] == {"word": "hi"}
    assert on_disk["counts"] == {"words": 1} and on_disk["code_hash"] == "c0de"
    assert not (tmp_path / "artifacts" / "_work" / "toy" / "0123456789abcdef").exists()


def test_run_with_user_error_leaves_nothing(tmp_path):
    out = tmp_path / "artifacts" / "toy" / "0123456789abcdef"
    with pytest.raises(UserError):
        run(_build_bad, stage="toy", key="0123456789abcdef", settings={}, lineage={}, inputs={}, output=out)
    assert not out.exists()
    assert not list(out.parent.glob(".tmp-*"))
    assert not (out / MANIFEST).exists()
