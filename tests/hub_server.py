"""A minimal Hugging Face Hub look-alike for offline tests (standard library only).

It speaks just enough of the Hub's HTTP API for the real ``huggingface_hub`` client (2.x) to
create repos and branches, commit (``upload_folder`` / ``create_commit`` with xet disabled),
list, check and download files::

    with fake_hub({"tok-alice": "alice"}) as hub:
        configure_client(monkeypatch, hub.url, home=tmp_path)   # env + huggingface_hub.constants
        api = HfApi(endpoint=hub.url, token="tok-alice")
        api.create_repo("alice/data", repo_type="dataset")
        ...
        assert hub.files("alice/data") == {...}

Everything lives in memory (``hub.repos``). Files are always stored as regular git blobs: the
preupload answer is ``uploadMode: "regular"`` for every file, so no LFS/xet transfer is ever
needed. Failures can be injected with :meth:`FakeHub.fail_next`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["Commit", "FakeHub", "HubRequest", "Repo", "configure_client", "fake_hub", "git_blob_oid"]

# URL segment (``/api/<plural>/...``) -> repo type, and repo type -> web/resolve URL prefix.
_PLURAL_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_OID_RE = re.compile(r"^[0-9a-f]{40}$")
_PR_REF_RE = re.compile(r"^refs/pr/(\d+)$")

#: Failure kinds accepted by :meth:`FakeHub.fail_next` ("*" matches any request).
FAILURE_KINDS = frozenset({
    "*", "whoami", "create", "delete", "info", "tree", "paths-info", "preupload", "commit", "branch",
    "refs", "commits", "resolve", "validate-yaml",
})


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 of ``data`` (what the Hub reports as a regular file's oid / ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Commit:
    oid: str  # 40 hex
    summary: str  # the commit message / title
    description: str
    files: dict[str, bytes]  # the full tree AFTER this commit (do not mutate)
    parent: str | None
    author: str | None = None
    date: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    owner: str
    private: bool
    # branch name -> history, oldest first; the last commit is the head. PRs live under "refs/pr/N".
    branches: dict[str, list[Commit]] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def head(self, branch: str = "main") -> Commit:
        return self.branches[branch][-1]


@dataclass(frozen=True)
class HubRequest:
    """One request the server answered (never holds the token)."""

    method: str
    path: str  # without the query string
    kind: str | None  # the failure kind of the endpoint ("commit", "resolve", ...), None if unknown
    user: str | None  # the authenticated user, if any
    status: int  # 0: the connection was dropped


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})
        self.extra = dict(extra or {})  # more fields for the JSON body


def _repo_not_found() -> _HubError:
    return _HubError(404, "Repository not found", "RepoNotFound")


class FakeHub:
    """An in-memory Hub served on ``127.0.0.1:<free port>`` by a background thread.

    ``users`` maps token -> username. State is inspectable: ``hub.repos[(repo_type, repo_id)]`` is a
    :class:`Repo`; :meth:`files` and :meth:`commits` read a branch; ``hub.requests`` logs every request.
    """

    def __init__(self, users: dict[str, str] | None = None, host: str = "127.0.0.1"):
        self.users: dict[str, str] = dict(users or {})
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[HubRequest] = []
        self.url: str | None = None
        self._host = host
        self._lock = threading.RLock()
        self._failures: dict[str, list[int]] = {}
        self._counter = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:<port>``)."""
        if self._server is not None:
            return self.url  # type: ignore[return-value]
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        server = ThreadingHTTPServer((self._host, 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://{self._host}:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-hub", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns, self._connections = list(self._connections), set()
        for conn in conns:  # idle keep-alive connections would otherwise keep their threads waiting
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeHub":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers

    def fail_next(self, endpoint_kind: str, status: int = 500, times: int = 1) -> None:
        """Make the next ``times`` requests of ``endpoint_kind`` fail with ``status``.

        ``status=0`` drops the connection after reading the request, without answering (the client
        sees "server disconnected"). Kinds: see ``FAILURE_KINDS`` ("*" = any request). An injected
        failure happens before anything is applied, so a failed commit changes nothing.
        Note: huggingface_hub retries some calls (``http_backoff``: preupload, tree listing, commit
        listing) up to 5 times on 408/429/5xx and dropped connections, sleeping 1, 2, 4, 8, 8 s: fail
        those with a 4xx (e.g. 403/422) to keep a test fast. The commit, create, branch, info and
        whoami calls are never retried.
        """
        if endpoint_kind not in FAILURE_KINDS:
            raise ValueError(f"unknown endpoint kind {endpoint_kind!r}; expected one of {sorted(FAILURE_KINDS)}")
        with self._lock:
            self._failures.setdefault(endpoint_kind, []).extend([status] * times)

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """The full tree at ``revision`` (a branch or a commit oid)."""
        with self._lock:
            return dict(self._resolve(self.repo(repo_id, repo_type), revision).files)

    def commits(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> list[Commit]:
        """The history of branch ``revision``, oldest first (the initial commit included)."""
        with self._lock:
            return list(self.repo(repo_id, repo_type).branches[revision])

    def create_repo(self, repo_id: str, *, repo_type: str = "dataset", private: bool = False) -> Repo:
        """Create a repo server-side (owner = its namespace), with an empty "initial commit" on main."""
        with self._lock:
            return self._create(repo_type, repo_id, private)

    def commit(self, repo_id: str, files: dict[str, bytes] | None = None, *, repo_type: str = "dataset",
               revision: str = "main", message: str = "seed", deletions: tuple[str, ...] = ()) -> Commit:
        """Commit server-side (seeding): add/overwrite ``files``, delete ``deletions`` (files or "dir/")."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            tree = dict(repo.head(revision).files)
            for path in deletions:
                for p in [p for p in tree if p == path or p.startswith(path.rstrip("/") + "/")]:
                    del tree[p]
            tree.update(files or {})
            return self._append(repo, revision, message, "", tree, repo.owner)

    # ------------------------------------------------------------------ state (call under the lock)

    def _new_oid(self, *parts: object) -> str:
        return hashlib.sha1(json.dumps([next(self._counter), *map(str, parts)]).encode()).hexdigest()

    def _create(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        if (repo_type, repo_id) in self.repos:
            raise ValueError(f"{repo_type} {repo_id} exists")
        owner = repo_id.split("/")[0]
        repo = Repo(repo_type, repo_id, owner, private)
        initial = Commit(self._new_oid(repo_type, repo_id, "initial"), "initial commit", "", {}, None, owner)
        repo.branches["main"] = [initial]
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def _append(self, repo: Repo, branch: str, summary: str, description: str, tree: dict[str, bytes],
                author: str | None) -> Commit:
        parent = repo.head(branch)
        commit = Commit(self._new_oid(repo.repo_id, parent.oid, summary, sorted(tree)), summary, description,
                        tree, parent.oid, author)
        repo.branches[branch] = [*repo.branches[branch], commit]
        return commit

    def _resolve(self, repo: Repo, revision: str) -> Commit:
        """A branch name or a (full) commit oid -> the commit; 404 RevisionNotFound otherwise."""
        if revision in repo.branches:
            return repo.head(revision)
        if _OID_RE.match(revision):
            for history in repo.branches.values():
                for commit in history:
                    if commit.oid == revision:
                        return commit
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _history(self, repo: Repo, revision: str) -> list[Commit]:
        """History (oldest first) ending at ``revision``."""
        target = self._resolve(repo, revision)
        if revision in repo.branches:
            return list(repo.branches[revision])
        for history in repo.branches.values():
            for i, commit in enumerate(history):
                if commit.oid == target.oid:
                    return history[: i + 1]
        raise AssertionError("unreachable")

    def _take_failure(self, kind: str | None) -> int | None:
        with self._lock:
            for key in (kind, "*"):
                queue = self._failures.get(key) if key else None
                if queue:
                    return queue.pop(0)
        return None

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections end by themselves
    server_version = "FakeHub/1.0"

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.hub._lock:
            self.hub._connections.discard(self.connection)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self, method: str) -> None:
        hub = self.hub
        body = self._read_body()
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        kind, handler = self._route(method, segments)
        user = None
        failure = hub._take_failure(kind)
        if failure == 0:  # simulate a dropped connection: no answer at all
            self._record(method, split.path, kind, None, 0)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            if failure is not None:
                raise _HubError(failure, f"Injected failure ({failure}) for {kind}")
            if handler is None:
                raise _HubError(404, "Sorry, we can't find the page you are looking for.")
            user = self._authenticate()
            with hub._lock:
                result = handler(method=method, user=user, query=query, body=body)
        except _HubError as err:
            headers = {**err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            headers.setdefault("X-Error-Message", err.message)
            self._record(method, split.path, kind, user, err.status)
            self._send_json(err.status, {"error": err.message, **err.extra}, headers, head=method == "HEAD")
            return
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: answer 500 rather than hang
            self._record(method, split.path, kind, user, 500)
            self._send_json(500, {"error": f"fake hub internal error: {type(exc).__name__}: {exc}"},
                            head=method == "HEAD")
            return
        status, payload, headers = result
        self._record(method, split.path, kind, user, status)
        if isinstance(payload, bytes):
            self._send(status, payload, headers, head=method == "HEAD")
        else:
            self._send_json(status, payload, headers, head=method == "HEAD")

    def _record(self, method: str, path: str, kind: str | None, user: str | None, status: int) -> None:
        with self.hub._lock:
            self.hub.requests.append(HubRequest(method, path, kind, user, status))

    def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None, *, head: bool = False) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/octet-stream")
        headers.setdefault("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None, *, head: bool = False) -> None:
        data = json.dumps(obj).encode()
        self._send(status, data, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, head=head)

    def _authenticate(self) -> str | None:
        """The user of the bearer token; None without a token; 401 for an unknown token."""
        auth = self.headers.get("Authorization") or ""
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        user = self.hub.users.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            # This X-Error-Message makes the client raise a plain HfHubHTTPError(401) (not RepositoryNotFoundError).
            raise _HubError(401, "Invalid credentials", headers={"X-Error-Message": "Invalid credentials in Authorization header"})
        return user

    # ------------------------------------------------------------------ routing

    def _route(self, method: str, seg: list[str]):
        """(failure kind, handler or None) for a request."""
        n = len(seg)
        if n >= 2 and seg[0] == "api":
            if seg[1:] == ["whoami-v2"]:
                return "whoami", self._only(method, "GET", self._whoami)
            if seg[1:] == ["agent-harnesses"]:
                return None, self._only(method, "GET", lambda **_: (200, {"standardEnvVars": [], "harnesses": {}}, {}))
            if seg[1:] == ["validate-yaml"]:
                return "validate-yaml", self._only(method, "POST", lambda **_: (200, {"errors": [], "warnings": []}, {}))
            if seg[1:] == ["repos", "create"]:
                return "create", self._only(method, "POST", self._create_repo)
            if seg[1:] == ["repos", "delete"]:
                return "delete", self._only(method, "DELETE", self._delete_repo)
            if n >= 4 and seg[1] in _PLURAL_TO_TYPE:
                repo_type, repo_id, rest = _PLURAL_TO_TYPE[seg[1]], f"{seg[2]}/{seg[3]}", seg[4:]
                bind = dict(repo_type=repo_type, repo_id=repo_id)
                if not rest:
                    return "info", self._only(method, "GET", self._info, revision=None, **bind)
                op, args = rest[0], rest[1:]
                rev = "/".join(args)
                if op == "revision" and args:
                    return "info", self._only(method, "GET", self._info, revision=rev, **bind)
                if op == "tree" and args:
                    revision, path = _split_revision(args)
                    return "tree", self._only(method, "GET", self._tree, revision=revision, path=path, **bind)
                if op == "paths-info" and args:
                    return "paths-info", self._only(method, "POST", self._paths_info, revision=rev, **bind)
                if op == "preupload" and args:
                    return "preupload", self._only(method, "POST", self._preupload, revision=rev, **bind)
                if op == "commit" and args:
                    return "commit", self._only(method, "POST", self._commit, revision=rev, **bind)
                if op == "branch" and args:
                    return "branch", self._only(method, ("POST", "DELETE"), self._branch, branch=rev, **bind)
                if op == "refs" and not args:
                    return "refs", self._only(method, "GET", self._refs, **bind)
                if op == "commits" and args:
                    return "commits", self._only(method, "GET", self._list_commits, revision=rev, **bind)
            return None, None
        # File downloads: /{repo_id}/resolve/... (models), /datasets/{repo_id}/resolve/..., /spaces/...
        repo_type = "model"
        if n >= 1 and seg[0] in ("datasets", "spaces"):
            repo_type, seg = _PLURAL_TO_TYPE[seg[0]], seg[1:]
        if len(seg) >= 5 and seg[2] == "resolve":
            revision, path = _split_revision(seg[3:])
            if path:
                return "resolve", self._only(method, ("GET", "HEAD"), self._resolve_file, repo_type=repo_type,
                                             repo_id=f"{seg[0]}/{seg[1]}", revision=revision, path=path)
        return None, None

    @staticmethod
    def _only(method: str, allowed: str | tuple[str, ...], fn, **bound):
        allowed = (allowed,) if isinstance(allowed, str) else allowed

        def call(**kwargs):
            if method not in allowed:
                raise _HubError(405, f"Method {method} not allowed")
            return fn(**bound, **kwargs)

        return call

    # ------------------------------------------------------------------ access checks

    def _readable_repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user != repo.owner):
            raise _repo_not_found()
        return repo

    def _writable_repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is not None and repo.private and user != repo.owner:
            raise _repo_not_found()  # the Hub never reveals that a private repo exists
        if user is None:
            raise _HubError(401, "Invalid credentials")
        if repo_id.split("/")[0] != user:
            raise _HubError(403, f"You don't have the rights to write to {repo_type} {repo_id}")
        if repo is None:
            raise _repo_not_found()
        return repo

    # ------------------------------------------------------------------ endpoints

    def _whoami(self, *, user, **_):
        if user is None:
            raise _HubError(401, "Invalid credentials")
        return 200, {
            "type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user, "fullname": user,
            "email": f"{user}@example.invalid", "emailVerified": True, "canPay": False, "isPro": False,
            "periodEnd": None, "avatarUrl": "", "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write",
                                                             "createdAt": "2024-01-01T00:00:00.000Z"}},
        }, {}

    def _create_repo(self, *, user, body, **_):
        payload = _json(body)
        if user is None:
            raise _HubError(401, "Invalid credentials")
        name, namespace = payload.get("name"), payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise _HubError(400, f"Invalid repo type: {repo_type}")
        if not isinstance(name, str) or not _NAME_RE.match(name) or not _NAME_RE.match(namespace):
            raise _HubError(400, f"Invalid repo name: {namespace}/{name}")
        repo_id = f"{namespace}/{name}"
        existing = self.hub.repos.get((repo_type, repo_id))
        if namespace != user:
            raise _HubError(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
        if existing is not None:
            # create_repo(exist_ok=True) reads "url" from this 409 body.
            raise _HubError(409, f"You already created this {repo_type} repo",
                            extra={"url": self.hub._repo_url(existing)})
        visibility = payload.get("visibility")
        private = visibility == "private" if visibility is not None else bool(payload.get("private", False))
        repo = self.hub._create(repo_type, repo_id, private)
        return 200, {"url": self.hub._repo_url(repo), "name": repo_id, "id": repo_id}, {}

    def _delete_repo(self, *, user, body, **_):
        payload = _json(body)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        self._writable_repo(repo_type, repo_id, user)
        del self.hub.repos[(repo_type, repo_id)]
        return 200, {}, {}

    def _info(self, *, repo_type, repo_id, revision, user, query, **_):
        repo = self._readable_repo(repo_type, repo_id, user)
        commit = self.hub._resolve(repo, revision or "main")
        blobs = query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=len(commit.files[path]), blobId=git_blob_oid(commit.files[path]))
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24], "id": repo_id,
            "author": repo.owner, "sha": commit.oid, "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created_at), "private": repo.private, "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(len(d) for d in commit.files.values()),
        }
        if repo_type == "space":
            info.update(sdk="static", runtime=None)
        return 200, info, {}

    @staticmethod
    def _entries(commit: Commit, path: str, recursive: bool) -> list[dict[str, Any]]:
        """Tree entries under ``path`` ("" = root), like GET /tree (dirs first, then files, sorted)."""
        prefix = f"{path}/" if path else ""
        files = {p: d for p, d in commit.files.items() if p.startswith(prefix)}
        if path and not files:
            if path in commit.files:
                raise _HubError(400, f"{path} is a file, not a directory")
            raise _HubError(404, f"{path} does not exist on this revision", "EntryNotFound")
        dirs: set[str] = set()
        out_files = []
        for p in files:
            parts = p[len(prefix):].split("/")
            for i in range(1, len(parts)):
                if recursive or i == 1:
                    dirs.add(prefix + "/".join(parts[:i]))
            if recursive or len(parts) == 1:
                out_files.append(p)
        entries = [_dir_entry(commit, d) for d in sorted(dirs)]
        entries += [_file_entry(p, commit.files[p]) for p in sorted(out_files)]
        return entries

    def _tree(self, *, repo_type, repo_id, revision, path, user, query, **_):
        repo = self._readable_repo(repo_type, repo_id, user)
        commit = self.hub._resolve(repo, revision)
        recursive = query.get("recursive", "").lower() in ("1", "true")
        entries = self._entries(commit, path.strip("/"), recursive)
        if query.get("expand", "").lower() in ("1", "true"):
            history = self.hub._history(repo, revision)
            for entry in entries:
                if entry["type"] == "file":
                    last = _last_change(history, entry["path"])
                    entry["lastCommit"] = {"id": last.oid, "title": last.summary, "date": _iso(last.date)}
        return 200, entries, {}

    def _paths_info(self, *, repo_type, repo_id, revision, user, body, **_):
        repo = self._readable_repo(repo_type, repo_id, user)
        commit = self.hub._resolve(repo, revision)
        ctype = self.headers.get("Content-Type") or ""
        if "json" in ctype:
            payload = _json(body)
            paths = payload.get("paths") or []
        else:
            paths = parse_qs(body.decode(), keep_blank_values=True).get("paths", [])
        out = []
        for raw in paths if isinstance(paths, list) else [paths]:
            path = str(raw).strip("/")
            if path in commit.files:
                out.append(_file_entry(path, commit.files[path]))
            elif any(p.startswith(path + "/") for p in commit.files):
                out.append(_dir_entry(commit, path))
        return 200, out, {}

    def _preupload(self, *, repo_type, repo_id, revision, user, body, **_):
        repo = self._writable_repo(repo_type, repo_id, user)
        commit = self.hub._resolve(repo, revision)
        payload = _json(body)
        files = payload.get("files")
        if not isinstance(files, list):
            raise _HubError(400, "Invalid preupload payload: 'files' must be a list")
        answer = []
        for item in files:
            path = _check_path(item.get("path") if isinstance(item, dict) else None)
            entry: dict[str, Any] = {"path": path, "uploadMode": "regular", "shouldIgnore": False}
            if path in commit.files:
                entry["oid"] = git_blob_oid(commit.files[path])
            answer.append(entry)
        return 200, {"files": answer, "commitOid": commit.oid}, {}

    def _commit(self, *, repo_type, repo_id, revision, user, query, body, **_):
        hub = self.hub
        repo = self._writable_repo(repo_type, repo_id, user)
        create_pr = query.get("create_pr") in ("1", "true", "True")
        if revision not in repo.branches:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        header, ops = None, []
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise _HubError(400, "Invalid ndjson line in commit payload") from None
            if item.get("key") == "header":
                header = item.get("value") or {}
            else:
                ops.append(item)
        if header is None:
            raise _HubError(400, "Missing header in commit payload")
        summary = header.get("summary") or ""
        if not summary.strip():
            raise _HubError(400, "Commit summary can't be empty")
        head = repo.head(revision)
        parent_commit = header.get("parentCommit")
        if parent_commit is not None and parent_commit != head.oid:
            raise _HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(head.files)
        for op in ops:
            key, value = op.get("key"), op.get("value") or {}
            if key == "file":
                path = _check_path(value.get("path"))
                content = value.get("content") or ""
                if value.get("encoding", "base64") == "base64":
                    try:
                        data = base64.b64decode(content, validate=True)
                    except ValueError:
                        raise _HubError(400, f"Invalid base64 content for {path}") from None
                else:
                    data = content.encode()
                if any(p.startswith(path + "/") for p in tree):
                    raise _HubError(400, f"Cannot create file {path}: a folder with this name exists")
                tree[path] = data
            elif key == "deletedFile":
                path = _check_path(value.get("path"))
                if path not in tree:
                    raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del tree[path]
            elif key == "deletedFolder":
                path = _check_path(str(value.get("path") or "").rstrip("/"))
                doomed = [p for p in tree if p.startswith(path + "/")]
                if not doomed:
                    raise _HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del tree[p]
            elif key == "lfsFile":
                raise _HubError(422, "This fake hub stores regular files only (preupload never asks for LFS)")
            else:
                raise _HubError(400, f"Unknown commit operation key: {key!r}")
        description = header.get("description") or ""
        pr_url = None
        target = revision
        if create_pr:
            number = 1 + max((int(m.group(1)) for b in repo.branches if (m := _PR_REF_RE.match(b))), default=0)
            target = f"refs/pr/{number}"
            repo.branches[target] = list(repo.branches[revision])
            pr_url = f"{hub._repo_url(repo)}/discussions/{number}"
        commit = hub._append(repo, target, summary, description, tree, user)
        return 200, {
            "success": True, "commitOid": commit.oid, "commitUrl": f"{hub._repo_url(repo)}/commit/{commit.oid}",
            "hookOutput": "", "pullRequestUrl": pr_url,
        }, {}

    def _branch(self, *, repo_type, repo_id, branch, user, body, **_):
        repo = self._writable_repo(repo_type, repo_id, user)
        if self.command == "DELETE":
            if branch not in repo.branches:
                raise _HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == "main":
                raise _HubError(403, "Cannot delete the default branch")
            del repo.branches[branch]
            return 200, {}, {}
        payload = _json(body) if body.strip() else {}
        if not branch or branch.startswith("refs/") or ".." in branch:
            raise _HubError(400, f"Invalid branch name: {branch}")
        if branch in repo.branches:
            raise _HubError(409, "Reference already exists")
        start = payload.get("startingPoint") or "main"
        repo.branches[branch] = self.hub._history(repo, start)
        return 200, {}, {}

    def _refs(self, *, repo_type, repo_id, user, query, **_):
        repo = self._readable_repo(repo_type, repo_id, user)
        branches, prs = [], []
        for name, history in sorted(repo.branches.items()):
            if _PR_REF_RE.match(name):
                prs.append({"name": name, "ref": name, "targetCommit": history[-1].oid})
            else:
                branches.append({"name": name, "ref": f"refs/heads/{name}", "targetCommit": history[-1].oid})
        out: dict[str, Any] = {"branches": branches, "converts": [], "tags": []}
        out["pullRequests"] = prs if query.get("include_prs") in ("1", "true", "True") else []
        return 200, out, {}

    def _list_commits(self, *, repo_type, repo_id, revision, user, **_):
        repo = self._readable_repo(repo_type, repo_id, user)
        history = self.hub._history(repo, revision)
        return 200, [
            {"id": c.oid, "title": c.summary, "message": c.description, "date": _iso(c.date),
             "authors": [{"user": c.author or repo.owner}]}
            for c in reversed(history)
        ], {}

    def _resolve_file(self, *, repo_type, repo_id, revision, path, user, **_):
        repo = self._readable_repo(repo_type, repo_id, user)
        commit = self.hub._resolve(repo, revision)
        if path not in commit.files:
            raise _HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        data = commit.files[path]
        headers = {
            "X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_oid(data)}"', "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        wanted = self.headers.get("Range")
        if wanted:
            span = _parse_range(wanted, len(data))
            if span is None:
                raise _HubError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            start, end = span
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, data[start:end + 1], headers
        return 200, data, headers


def _json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError:
        raise _HubError(400, "Invalid JSON body") from None
    if not isinstance(value, dict):
        raise _HubError(400, "Invalid JSON body: expected an object")
    return value


def _check_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        raise _HubError(400, f"Invalid path: {path!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise _HubError(400, f"Invalid path: {path!r}")
    return path


def _split_revision(segments: list[str]) -> tuple[str, str]:
    """Split ``<revision>/<path...>``; the revision is one (URL-encoded) segment or a refs/pr|convert/X ref."""
    if len(segments) >= 3 and segments[0] == "refs" and segments[1] in ("pr", "convert"):
        return "/".join(segments[:3]), "/".join(segments[3:])
    return segments[0], "/".join(segments[1:])


def _file_entry(path: str, data: bytes) -> dict[str, Any]:
    return {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": path}


def _dir_entry(commit: Commit, path: str) -> dict[str, Any]:
    prefix = path + "/"
    listing = json.dumps(sorted((p, git_blob_oid(d)) for p, d in commit.files.items() if p.startswith(prefix)))
    return {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}


def _last_change(history: list[Commit], path: str) -> Commit:
    """The oldest commit of the run, ending at the head, during which ``path`` kept its content."""
    data = history[-1].files.get(path)
    last = history[-1]
    for commit in reversed(history):
        if commit.files.get(path) != data:
            break
        last = commit
    return last


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # suffix: the last N bytes
        n = int(m.group(2))
        return (max(size - n, 0), size - 1) if n and size else None
    start = int(m.group(1))
    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    return (start, end) if start <= end and start < size else None


@contextlib.contextmanager
def fake_hub(users: dict[str, str] | None = None) -> Iterator[FakeHub]:
    """A started :class:`FakeHub` (stopped on exit)."""
    hub = FakeHub(users)
    with hub:
        yield hub


def configure_client(monkeypatch: Any, url: str, home: Any = None) -> None:
    """Point ``huggingface_hub`` at ``url`` for one test (pytest ``monkeypatch``), and keep it off the
    network and off the user's own Hugging Face home.

    ``huggingface_hub.constants`` copies the environment at import time, so setting the env vars alone
    does not work once the library is imported: the constants are patched as well. ``home`` (e.g.
    ``tmp_path``) receives the default download cache and an empty token path, so no real token or
    cache of the developer is ever used. Pass ``endpoint=url`` to ``HfApi`` too (harmless, explicit).
    """
    from pathlib import Path

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_ENABLE_HF_TRANSFER"):
        monkeypatch.delenv(var, raising=False)

    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent, _http

    monkeypatch.setattr(constants, "ENDPOINT", url)
    # hf_hub_url() builds download URLs from this template (computed from ENDPOINT at import time).
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # is_offline_mode() reads this
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # upload_folder -> plain create_commit
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    # The user-agent's agent detection would otherwise fetch /api/agent-harnesses and cache it in HF_HOME.
    monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
    if home is not None:
        home = Path(home)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hf-cache"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "hf-token-absent"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "hf-stored-tokens-absent"))
    # Fresh connection pool: the shared client may hold keep-alive connections to an earlier fake hub.
    _http.close_session()
