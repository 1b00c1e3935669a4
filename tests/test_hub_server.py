"""The fake Hub (tests/hub_server.py) driven by the real huggingface_hub client, fully offline."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import FakeHub, configure_client, fake_hub, git_blob_oid  # noqa: E402

ALICE, BOB = "tok-alice", "tok-bob"
REPO = "alice/data"
BINARY = bytes(range(256)) * 8  # 2 KiB, every byte value


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection to something other than the local fake hub fails the test."""
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with fake_hub({ALICE: "alice", BOB: "bob"}) as hub:
        configure_client(monkeypatch, hub.url, home=tmp_path)
        yield hub


@pytest.fixture
def api(hub):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.url, token=ALICE)


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


FIRST = {"README.md": b"# data\n", "data/train/part-0.bin": BINARY, "data/stale.txt": b"old\n"}


def _publish(api, tmp_path, files=FIRST, name="v1", **kwargs):
    api.create_repo(REPO, repo_type="dataset", exist_ok=True)
    return api.upload_folder(folder_path=str(_folder(tmp_path / name, files)), repo_id=REPO, repo_type="dataset",
                             commit_message=f"publish {name}", **kwargs)


def test_client_is_pointed_at_the_fake_hub(hub, api):
    from huggingface_hub import constants

    assert constants.ENDPOINT == hub.url and not constants.is_offline_mode()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    me = api.whoami()
    assert me["name"] == "alice" and me["type"] == "user" and me["auth"]["accessToken"]["role"] == "write"
    assert all(r.path != "/api/agent-harnesses" for r in hub.requests)


def test_create_repo_twice_then_upload_folder(hub, api, tmp_path):
    url1 = api.create_repo(REPO, repo_type="dataset", exist_ok=True)
    url2 = api.create_repo(REPO, repo_type="dataset", exist_ok=True)
    assert url1 == url2 == f"{hub.url}/datasets/{REPO}" and url1.repo_id == REPO and url1.repo_type == "dataset"
    assert hub.repos[("dataset", REPO)].owner == "alice" and not hub.repos[("dataset", REPO)].private
    with pytest.raises(Exception) as err:
        api.create_repo(REPO, repo_type="dataset")
    assert err.value.response.status_code == 409

    info = _publish(api, tmp_path, commit_description="first publish")
    commits = hub.commits(REPO)
    assert [c.summary for c in commits] == ["initial commit", "publish v1"]
    assert commits[-1].description == "first publish" and commits[-1].parent == commits[0].oid
    assert info.oid == commits[-1].oid and len(info.oid) == 40
    assert hub.files(REPO) == FIRST
    assert api.dataset_info(REPO).sha == info.oid
    assert sorted(s.rfilename for s in api.dataset_info(REPO).siblings) == sorted(FIRST)


def test_delete_patterns_remove_stale_files_in_the_same_commit(hub, api, tmp_path):
    _publish(api, tmp_path)
    second = {"README.md": b"# data v2\n", "data/train/part-0.bin": BINARY, "data/train/part-1.bin": b"\x00\x01"}
    _publish(api, tmp_path, second, name="v2", delete_patterns=["data/**", "README.md"])
    commits = hub.commits(REPO)
    assert [c.summary for c in commits] == ["initial commit", "publish v1", "publish v2"]
    assert hub.files(REPO) == second  # the stale file went away in that one commit
    assert commits[1].files == FIRST  # history is kept

    # Nothing changed => the client skips the commit (preupload reports each file's oid).
    _publish(api, tmp_path, second, name="v2-again")
    assert len(hub.commits(REPO)) == 3


def test_branch_upload_leaves_main_unchanged(hub, api, tmp_path):
    _publish(api, tmp_path)
    main_before = hub.commits(REPO)
    api.create_branch(REPO, branch="exp", repo_type="dataset")
    api.create_branch(REPO, branch="exp", repo_type="dataset", exist_ok=True)
    _publish(api, tmp_path, {"extra.txt": b"branch only\n"}, name="exp", revision="exp")
    assert hub.commits(REPO) == main_before and hub.files(REPO) == FIRST
    assert hub.files(REPO, revision="exp") == {**FIRST, "extra.txt": b"branch only\n"}
    assert [c.summary for c in hub.commits(REPO, revision="exp")][-1] == "publish exp"
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert sorted(b.name for b in refs.branches) == ["exp", "main"]
    assert api.list_repo_commits(REPO, repo_type="dataset", revision="exp")[0].title == "publish exp"


def test_listing_exists_and_downloads(hub, api, tmp_path):
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    info = _publish(api, tmp_path)
    assert sorted(api.list_repo_files(REPO, repo_type="dataset")) == sorted(FIRST)
    tree = {e.path: e for e in api.list_repo_tree(REPO, repo_type="dataset")}
    assert set(tree) == {"README.md", "data"}
    sub = list(api.list_repo_tree(REPO, path_in_repo="data/train", repo_type="dataset"))
    assert [(e.path, e.size, e.blob_id) for e in sub] == [("data/train/part-0.bin", 2048, git_blob_oid(BINARY))]
    assert api.file_exists(REPO, "data/train/part-0.bin", repo_type="dataset")
    assert not api.file_exists(REPO, "nope.txt", repo_type="dataset")
    assert not api.file_exists(REPO, "README.md", repo_type="dataset", revision="no-such-branch")
    assert [p.path for p in api.get_paths_info(REPO, ["README.md", "data", "nope"], repo_type="dataset")] == [
        "README.md", "data"]

    path = api.hf_hub_download(REPO, "data/train/part-0.bin", repo_type="dataset", cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == BINARY and info.oid in path
    path = hf_hub_download(REPO, "README.md", repo_type="dataset", cache_dir=tmp_path / "cache2", token=ALICE)
    assert Path(path).read_bytes() == FIRST["README.md"]
    with pytest.raises(EntryNotFoundError):
        api.hf_hub_download(REPO, "nope.txt", repo_type="dataset", cache_dir=tmp_path / "cache")
    with pytest.raises(RevisionNotFoundError):
        api.hf_hub_download(REPO, "README.md", repo_type="dataset", revision="nope", cache_dir=tmp_path / "cache")
    with pytest.raises(RepositoryNotFoundError):
        api.hf_hub_download("alice/nope", "README.md", repo_type="dataset", cache_dir=tmp_path / "cache")

    out = snapshot_download(REPO, repo_type="dataset", local_dir=tmp_path / "snap", token=ALICE)
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in Path(out).rglob("*")
           if p.is_file() and ".cache" not in p.relative_to(out).parts}
    assert got == FIRST


def test_private_repo_is_invisible_to_others(hub, api, tmp_path):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    api.create_repo("alice/secret", repo_type="dataset", private=True)
    assert hub.repos[("dataset", "alice/secret")].private
    api.upload_folder(folder_path=str(_folder(tmp_path / "s", {"a.txt": b"a"})), repo_id="alice/secret",
                      repo_type="dataset", commit_message="secret")
    assert api.list_repo_files("alice/secret", repo_type="dataset") == ["a.txt"]
    for token in (BOB, False):
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=hub.url, token=token).list_repo_files("alice/secret", repo_type="dataset")


def test_foreign_namespace_is_403_and_creates_nothing(hub, api, tmp_path):
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("bob/x", repo_type="dataset", exist_ok=True)
    assert err.value.response.status_code == 403
    hub.create_repo("bob/x")  # exists now: an upload with alice's token is refused as well
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_folder(folder_path=str(_folder(tmp_path / "b", {"a.txt": b"a"})), repo_id="bob/x",
                          repo_type="dataset", commit_message="nope")
    assert err.value.response.status_code == 403
    assert ALICE not in err.value.response.text
    assert hub.files("bob/x") == {} and len(hub.commits("bob/x")) == 1
    assert ("dataset", "bob/x") in hub.repos and len(hub.repos) == 1


def test_missing_or_unknown_token_is_401(hub, tmp_path):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    for token in (False, "tok-mallory"):
        anon = HfApi(endpoint=hub.url, token=token)
        with pytest.raises(HfHubHTTPError) as err:
            anon.create_repo(REPO, repo_type="dataset", exist_ok=True)
        assert err.value.response.status_code == 401
        assert err.value.response.json() == {"error": "Invalid credentials"}
        assert "tok-mallory" not in err.value.response.text
    assert hub.repos == {}
    hub.create_repo(REPO)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token=False).upload_folder(
            folder_path=str(_folder(tmp_path / "n", {"a.txt": b"a"})), repo_id=REPO, repo_type="dataset")
    assert err.value.response.status_code == 401
    assert hub.files(REPO) == {}


def test_failed_commit_changes_nothing_and_retry_succeeds(hub, api, tmp_path):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    _publish(api, tmp_path)
    before = hub.commits(REPO)
    second = {"data/train/part-0.bin": BINARY[::-1]}
    for status, expected in ((500, HfHubHTTPError), (0, httpx2.RemoteProtocolError)):
        hub.fail_next("commit", status=status)
        with pytest.raises(expected):
            _publish(api, tmp_path, second, name="v2", delete_patterns=["data/**"])
        assert hub.commits(REPO) == before and hub.files(REPO) == FIRST
    _publish(api, tmp_path, second, name="v2", delete_patterns=["data/**"])
    assert hub.files(REPO) == {"README.md": FIRST["README.md"], **second}
    assert hub.commits(REPO)[-1].summary == "publish v2"
    assert [r.status for r in hub.requests if r.kind == "commit"] == [200, 500, 0, 200]


def test_parent_commit_mismatch_is_refused(hub, api, tmp_path):
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    _publish(api, tmp_path)
    stale = hub.commits(REPO)[0].oid
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(REPO, [CommitOperationAdd("x.txt", b"x")], commit_message="racy", repo_type="dataset",
                          parent_commit=stale)
    assert err.value.response.status_code == 412 and hub.files(REPO) == FIRST
    head = hub.commits(REPO)[-1].oid
    api.create_commit(REPO, [CommitOperationAdd("x.txt", b"x")], commit_message="ok", repo_type="dataset",
                      parent_commit=head)
    assert hub.files(REPO)["x.txt"] == b"x"


def test_server_stops_cleanly():
    hub = FakeHub({ALICE: "alice"})
    url = hub.start()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    hub.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
