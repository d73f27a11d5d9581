"""``snakemake push``: upload an export artifact to the Hugging Face hub (``export.push``).

It uploads the artifact's files as its manifest lists them, less ``manifest.json`` (build
metadata: hosts, paths, timings; the card carries the lineage keys), in one commit
(``HfApi.upload_folder``), so a repository never holds half an upload. Offline
(``HF_HUB_OFFLINE``, set by lmbuild unless the user unsets it) or without ``export.push.repo_id``
it prints one line saying so, uploads nothing and exits non-zero.

What it does not do: build the export (the rule's input does), log in (``hf auth login`` or
``HF_TOKEN``), delete files already in the repository, or remove a repository it created when the
upload then fails (it holds no commit of the export then).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lmbuild.errors import UserError
from lmbuild.store.artifact import MANIFEST, verify


def upload_files(export: Path) -> list[str]:
    """The files a push uploads: every file of the export's manifest but the manifest itself,
    checked against their sizes and SHA-256 first."""
    manifest = verify(export, hashes=True)  # UserError naming the first missing or changed file
    return sorted(f for f in manifest.get("files") or {} if f != MANIFEST)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def push(export: Path, settings: dict) -> str:
    """Upload ``export`` to ``settings['repo_id']``; the line to print. UserError when it cannot."""
    repo = settings.get("repo_id")
    files = upload_files(export)
    if not repo:
        raise UserError(f"push: export.push.repo_id is not set; nothing uploaded ({len(files)} files of {export} would go)")
    if offline():
        raise UserError(f"push: the hub is offline (HF_HUB_OFFLINE=1; HF_HUB_OFFLINE=0 to push); nothing uploaded to {repo}")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo, private=settings.get("private", True), exist_ok=True)
        info = api.upload_folder(repo_id=repo, folder_path=str(export), allow_patterns=files,
                                 commit_message=f"lmbuild export {export.name}")
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise UserError(f"push: uploading {export} to {repo} failed, nothing committed: {str(exc).splitlines()[0]}") from None
    return f"push: {len(files)} files of {export} uploaded to {repo} ({getattr(info, 'commit_url', info)})"


def main(export: Path, settings: dict, log: Path) -> None:
    """The rule's entry: one line to stdout and the log; exit 1 with one line on error."""
    try:
        line = push(export, dict(settings))
    except UserError as exc:
        line = f"error: {exc}"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(line + "\n")
        print(line, file=sys.stderr)
        sys.exit(1)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(line + "\n")
    print(line)
