"""`snakemake push`: what it would upload is exactly the export artifact's files (less its
manifest); offline or without a repo id, one line and nothing uploaded."""

from __future__ import annotations

import huggingface_hub
import pytest

from lmbuild.errors import UserError
from lmbuild.ship import push
from lmbuild.store import runner

FILES = {"README.md": "---\nlicense: other\n---\n", "config.json": "{}", "model.safetensors": "w" * 64, "tiny-f16.gguf": "g" * 32}


@pytest.fixture
def export(tmp_path):
    def build(ctx):
        for name, text in FILES.items():
            (ctx.out / name).write_text(text)
        return {}

    out = tmp_path / "export" / "k"
    runner.run(build, stage="export", key="k", settings={}, lineage={}, inputs={}, output=out)
    return out


class Recorder:
    """huggingface_hub.HfApi as far as push uses it: what it was asked to do."""

    calls: list = []

    def create_repo(self, repo, **kw):
        self.calls.append(("create_repo", repo, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw))
        return type("Info", (), {"commit_url": "https://hub/commit/1"})()


def test_it_uploads_exactly_the_artifacts_files_in_one_commit(export, monkeypatch):
    assert push.upload_files(export) == sorted(FILES)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    Recorder.calls = []
    line = push.push(export, {"repo_id": "me/tiny", "private": True})
    assert line == f"push: 4 files of {export} uploaded to me/tiny (https://hub/commit/1)"
    (_, repo, kw), (_, up) = Recorder.calls
    assert repo == "me/tiny" and kw == {"private": True, "exist_ok": True}
    assert up["repo_id"] == "me/tiny" and up["folder_path"] == str(export) and up["allow_patterns"] == sorted(FILES)


def test_offline_or_without_a_repo_it_says_so_and_uploads_nothing(export, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(huggingface_hub, "HfApi", None)  # any use would fail
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"^push: the hub is offline \(HF_HUB_OFFLINE=1; HF_HUB_OFFLINE=0 to push\); nothing uploaded to me/tiny$"):
        push.push(export, {"repo_id": "me/tiny"})
    with pytest.raises(UserError, match=r"^push: export.push.repo_id is not set; nothing uploaded \(4 files of .* would go\)$"):
        push.push(export, {"repo_id": None})
    with pytest.raises(SystemExit) as exit_:
        push.main(export, {"repo_id": "me/tiny"}, tmp_path / "logs" / "push.log")
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: push: the hub is offline")


def test_a_damaged_export_is_not_uploaded(export, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "HfApi", None)
    (export / "model.safetensors").write_text("x" * 64)  # same size, other bytes
    with pytest.raises(UserError, match=r"damaged: model.safetensors does not match its SHA-256"):
        push.push(export, {"repo_id": "me/tiny"})
