"""Publishing a Hub export folder (catalog/hub_export.py) to the Hugging Face Hub, and fetching a
published one back.

- One commit per publish (``upload_folder``), replacing the data files of an earlier publish in
  that same commit; re-publishing the snapshot already there makes no commit at all.
- ``revision``: publish to a branch (created from main if needed) instead of replacing main.
- The token comes from the argument, ``HF_TOKEN`` or the user's `hf auth login`; it is never
  written anywhere and is scrubbed from every error message.
- Only the files the export wrote (``masters.yaml`` lists them) are uploaded: anything else
  put in the folder stays on this machine.
- The Hub applies a commit whole or not at all: a failed upload leaves the repository as it was
  (or, when the connection dropped after the Hub applied it, fully published); running the same
  command again finishes the job or finds it done."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from catalog.hub_export import META_NAME, read_meta
from schemas.errors import PublishError

REPO_TYPE = "dataset"


@dataclass
class PublishResult:
    repo_id: str
    revision: str
    commit: str | None  # None: nothing to publish (that snapshot is already there)
    url: str
    changed: bool


def _token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login` "
                           "(a token with write access to the repository)")
    return token


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _explain(exc: Exception, repo_id: str, token: str | None, doing: str) -> PublishError:
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    status = getattr(getattr(exc, "response", None), "status_code", None)
    retry = ("the commit is atomic: nothing or all of it is on the Hub (a connection lost after the Hub "
             "applied it); run the same command again to finish, or to find it done")
    if status == 401:  # before not-found: the client reports a refused token on a repo URL as not found
        msg = f"{doing} {repo_id}: the Hugging Face token was refused (missing, expired or invalid): set HF_TOKEN"
    elif status == 403:
        msg = (f"{doing} {repo_id}: this token may not write there (the repository belongs to another "
               "user or organisation): publish under your own namespace or ask for write access")
    elif isinstance(exc, RepositoryNotFoundError) or status == 404:
        msg = f"{doing} {repo_id}: repository not found (or not visible with this token)"
    elif isinstance(exc, HfHubHTTPError):
        msg = f"{doing} {repo_id}: the Hub answered {status} ({exc}); {retry}"
    else:
        msg = f"{doing} {repo_id} failed ({type(exc).__name__}: {exc}); {retry}"
    return PublishError(_scrub(msg, token))


def _published_sha(api, repo_id: str, revision: str) -> str | None:
    """The content digest (every exported file's sha256) recorded in the repository's masters.yaml."""
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    try:
        path = api.hf_hub_download(repo_id, META_NAME, repo_type=REPO_TYPE, revision=revision)
    except (EntryNotFoundError, RevisionNotFoundError):
        return None
    return (yaml.safe_load(Path(path).read_text()) or {}).get("content_sha256")


def publish_folder(folder: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = False,
                   revision: str | None = None, endpoint: str | None = None) -> PublishResult:
    """Upload a Hub export folder as one commit (or none when that snapshot is already there)."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    meta = read_meta(folder, verify=True)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"--repo {repo_id!r}: expected OWNER/NAME")
    token = _token(token)
    api = HfApi(endpoint=endpoint, token=token)
    branch = revision or "main"
    try:
        url = str(api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True))
        if branch != "main":
            api.create_branch(repo_id, branch=branch, repo_type=REPO_TYPE, exist_ok=True)
        if _published_sha(api, repo_id, branch) == meta["content_sha256"]:
            return PublishResult(repo_id, branch, None, url, False)
        message = (f"Publish Gen-Data snapshot {meta['snapshot']} (catalog version {meta['catalog_version']}, "
                   f"reward config {meta['reward_config'].get('reward_config_id', '?')[:12]})")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=REPO_TYPE, revision=branch,
                                 commit_message=message,
                                 commit_description=f"snapshot manifest sha256 {meta['snapshot_manifest_sha256']}",
                                 delete_patterns=["data/**", "README.md", META_NAME],
                                 allow_patterns=[*meta["files"], META_NAME])  # what the export wrote, nothing else
    except PublishError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a scrubbed, explained error
        raise _explain(exc, repo_id, token, "publishing to") from None
    return PublishResult(repo_id, branch, info.oid, url, True)


def fetch_published(repo_id: str, out: str | os.PathLike, *, token: str | None = None,
                    revision: str | None = None, endpoint: str | None = None) -> Path:
    """Download a published Gen-Data dataset (all its files) to ``out``."""
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    api = HfApi(endpoint=endpoint, token=token)
    try:
        path = api.snapshot_download(repo_id, repo_type=REPO_TYPE, revision=revision, local_dir=str(out))
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, repo_id, token, "downloading") from None
    return Path(path)
