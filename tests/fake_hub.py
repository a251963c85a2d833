"""A fake Hugging Face Hub for tests: standard library only, on 127.0.0.1. It is a test fake, NOT a Hub.

It speaks just enough of the Hub's HTTP API for the real `huggingface_hub` (2.4) and `diffusers` clients to create
a repo, commit files (small text files inline, large or binary files through the Git LFS batch API) and download
them back by repo id, at a branch or at a commit sha. Repos live in a temporary folder, one folder per commit.

Two servers run in background threads:

* the "hub" (``FakeHub.url``, what ``HF_ENDPOINT`` points at);
* a "cdn" on another port, standing in for the object storage behind LFS: the hub hands out signed upload URLs on
  it and redirects LFS downloads to it. It is another origin, so the client does not send its ``Authorization``
  header there (as with the real Hub); the CDN checks a signature in the URL instead.

Endpoints (``{t}`` is ``models``/``datasets``/``spaces``; ``{repo}`` is ``namespace/name``, with a ``datasets/`` or
``spaces/`` prefix outside ``/api``), and the client functions that call them:

  hub  GET  /api/whoami-v2                           HfApi.whoami
       POST /api/repos/create                        create_repo (namespace defaults to the token's user; 409 + url
                                                     if it exists, which exist_ok=True accepts)
       POST /api/validate-yaml                       create_commit when README.md is committed (valid, unless
                                                     ``FakeHub.reject_model_card`` holds a message: then HTTP 400
                                                     with it, and a commit of README.md gets the same 400)
       GET  /api/{t}/{repo}[/revision/{rev}]         model_info/repo_info (sha, siblings; blobs=1 adds sizes + lfs),
                                                     resolve_revision, snapshot_download, DiffusionPipeline.download
       GET  /api/{t}/{repo}/tree/{rev}[/{path}]      list_repo_tree/list_repo_files, snapshot_download
       POST /api/{t}/{repo}/branch/{branch}          create_branch (startingPoint)
       POST /api/{t}/{repo}/preupload/{branch}       create_commit: upload mode per file ("regular" or "lfs")
       POST /api/{t}/{repo}/commit/{branch}          create_commit: NDJSON lines header/file/lfsFile/deletedFile/
                                                     deletedFolder (parentCommit checked)
       POST /{repo}.git/info/lfs/objects/batch       LFS batch API, "basic" transfer: a signed CDN upload URL and a
                                                     verify URL per object not stored yet
       POST /{repo}.git/info/lfs/objects/verify      LFS verify after the upload
       HEAD|GET /{repo}/resolve/{rev}/{path}         hf_hub_download (and everything built on it): regular files are
                                                     served here (ETag = git blob sha1); LFS files get a 302 to the
                                                     CDN with X-Linked-Etag = sha256 and X-Linked-Size.
                                                     X-Repo-Commit always; X-Error-Code on 4xx (RepoNotFound,
                                                     RevisionNotFound, EntryNotFound) as the client expects.
  cdn  PUT  /upload/{sha256}?size=&sig=              LFS upload (content checked against the oid and size)
       HEAD|GET /lfs/{sha256}?sig=                   LFS download (Range supported)

Not implemented, on purpose: Xet storage. Downloads use Xet only when the HEAD answer carries X-Xet-Hash, which the
fake never sends, so they take plain HTTP as for a non-Xet repo. Uploads are another matter: with `hf_xet` installed,
`huggingface_hub` 2.4 uploads through Xet without asking the server first (``GET /api/{t}/{repo}/xet-write-token/
{rev}``, a 404 here, so the upload fails at once); only HF_HUB_DISABLE_XET=1 sends it down the LFS path, and the
`fake_hub` fixture sets it. Also not implemented: pull requests, tags, multipart LFS, gated repos, card data in
model_info, pagination, squash/super-squash, deletes of repos or branches.
Faults on request: ``FakeHub.cut_connections`` cuts the connection of the next matching requests half-way through
their body, with no answer (a network drop in the middle of a push).
Anything else gets a 404 and is recorded in ``FakeHub.unhandled``. Errors are always 4xx: a 5xx would make the
client retry with backoff. A bug in the fake answers 400 and is recorded in ``FakeHub.errors``.

In-process callers: `huggingface_hub` reads HF_ENDPOINT, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_HUB_DISABLE_XET, ... into
`huggingface_hub.constants` at import time, and its module-level `HfApi()` (behind `create_repo`, `model_info`,
`upload_folder`, ...) keeps the endpoint it saw then. The fixture patches those (see `_patch_in_process`), which is
enough for `huggingface_hub` calls and for `diffusers`' ``push_to_hub``. `diffusers` keeps copies of its own
(e.g. ``HUGGINGFACE_CO_RESOLVE_ENDPOINT``): load pipelines in a subprocess with ``env=fake_hub.subprocess_env()``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

FAKE_USER = "acme"
FAKE_TOKEN = "hf_fakehub_acme_write_token"
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub's limit for regular (non-LFS) files
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.bin", "*.ckpt", "*.h5", "*.msgpack", "*.npz", "*.onnx", "*.pkl", "*.pt", "*.pth",
                    "*.safetensors", "*.tar.gz", "*.zip", "*tfevents*")
)
API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}  # /api/{plural}/...
URL_PREFIXES = {"datasets": "dataset", "spaces": "space"}  # /{prefix}/{repo}/resolve/..., /{prefix}/{repo}.git/...


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub uses as the ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


@dataclass
class RepoFileEntry:
    size: int
    oid: str  # git blob sha1 of the content, or of the LFS pointer for LFS files
    sha256: str | None = None  # set for LFS files


@dataclass
class Commit:
    sha: str
    parent: str | None
    title: str
    date: str
    files: dict[str, RepoFileEntry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    folder: Path  # one sub-folder per commit sha, holding that commit's files
    created: str = field(default_factory=_now)
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)

    @property
    def url_path(self) -> str:
        prefix = {"dataset": "datasets/", "space": "spaces/"}.get(self.repo_type, "")
        return prefix + self.repo_id


@dataclass
class LoggedRequest:
    server: str  # "hub" or "cdn"
    method: str
    path: str  # unquoted, without the query string
    query: str
    status: int
    token: bool  # the request carried the fake token
    auth_header: bool  # the request carried an Authorization header at all

    def __str__(self) -> str:
        return f"{self.server} {self.method} {self.path} -> {self.status}"


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class FakeHub:
    """The fake Hub: ``start()`` it (or use it as a context manager), point HF_ENDPOINT at ``url``."""

    def __init__(self, root: str | os.PathLike, *, user: str = FAKE_USER, token: str = FAKE_TOKEN,
                 require_token: bool = False):
        self.root = Path(root)
        self.user, self.token = user, token
        self.require_token = require_token  # when True, every hub request needs the token (the CDN never does)
        self.reject_model_card: str | None = None  # a message: README.md metadata is refused with HTTP 400
        # ``{"METHOD /path-prefix": n}``: the next n matching requests (on either server) have their connection cut
        # after half of the request body was read, with no answer; each cut is logged with status 0
        self.cut_connections: dict[str, int] = {}
        self.requests: list[LoggedRequest] = []
        self.unhandled: list[LoggedRequest] = []
        self.errors: list[str] = []
        self.env: dict[str, str] = {}  # filled in by the fixture
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.RLock()
        self._secret = secrets.token_bytes(16)
        self._servers: list[ThreadingHTTPServer] = []
        self.url = self.cdn_url = ""

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> "FakeHub":
        (self.root / "lfs").mkdir(parents=True, exist_ok=True)
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.fake, server.role, server.connections = self, role, set()
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-{role}",
                             daemon=True).start()
            self._servers.append(server)
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
            # Close the kept-alive connections too: their handler threads would otherwise linger, and the client's
            # connection pool could reuse one if a later server got the same port.
            for connection in list(server.connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._servers.clear()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- helpers for tests ---------------------------------------------------------------------------------

    def calls(self, server: str = "hub") -> list[str]:
        """The request log as ``"METHOD /path"`` strings, for one server."""
        return [f"{r.method} {r.path}" for r in self.requests if r.server == server]

    def clear_log(self) -> None:
        self.requests.clear()
        self.unhandled.clear()

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self._repos[(repo_type, repo_id)]

    def commit_sha(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        return self.repo(repo_id, repo_type).resolve(revision).sha

    def list_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        """The files of a repo at a branch or commit sha, read from the commit's folder on disk."""
        repo = self.repo(repo_id, repo_type)
        folder = repo.folder / repo.resolve(revision).sha
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    def read_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        repo = self.repo(repo_id, repo_type)
        return (repo.folder / repo.resolve(revision).sha / path).read_bytes()

    def subprocess_env(self, **overrides: str | None) -> dict[str, str]:
        """``os.environ`` plus the fake's variables plus ``overrides`` (a value of None removes the variable)."""
        env = {**os.environ, **self.env}
        for key, value in overrides.items():
            env.pop(key, None) if value is None else env.__setitem__(key, value)
        return env

    # ---- storage --------------------------------------------------------------------------------------------

    def _sign(self, action: str, oid: str) -> str:
        return hmac.new(self._secret, f"{action} {oid}".encode(), hashlib.sha256).hexdigest()[:32]

    def _lfs_path(self, oid: str) -> Path:
        return self.root / "lfs" / oid

    def _create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type, repo_id, private, self.root / "repos" / f"{repo_type}s" / repo_id)
        self._repos[(repo_type, repo_id)] = repo
        # Like the Hub, a new repo has one commit on main, with a .gitattributes that routes binaries to LFS.
        self._commit(repo, "main", "initial commit", [("file", ".gitattributes", GITATTRIBUTES.encode())])
        return repo

    def _commit(self, repo: Repo, branch: str, title: str, ops: list[tuple]) -> Commit:
        """Apply ``ops`` (("file", path, bytes) | ("lfs", path, sha256) | ("delete", path) | ("delete_folder", path))
        on top of ``branch`` and move the branch to the new commit."""
        parent = repo.resolve(branch) if branch in repo.branches else None
        files = dict(parent.files) if parent else {}
        for op in ops:
            kind, path = op[0], op[1]
            if kind == "file":
                files[path] = RepoFileEntry(len(op[2]), git_blob_sha1(op[2]))
            elif kind == "lfs":
                size = self._lfs_path(op[2]).stat().st_size
                files[path] = RepoFileEntry(size, git_blob_sha1(lfs_pointer(op[2], size)), op[2])
            elif kind == "delete":
                del files[path]
            else:
                for name in [p for p in files if p.startswith(path.rstrip("/") + "/")]:
                    del files[name]
        manifest = {p: [f.oid, f.sha256] for p, f in sorted(files.items())}
        seed = json.dumps([parent.sha if parent else None, title, manifest, len(repo.commits), time.time_ns()])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent.sha if parent else None, title, _now(), files)
        # The commit's folder: a copy of the parent's, with the operations applied.
        folder = repo.folder / commit.sha
        if parent:
            shutil.copytree(repo.folder / parent.sha, folder)
        folder.mkdir(parents=True, exist_ok=True)
        for op in ops:
            target = folder / op[1]
            if op[0] in ("file", "lfs"):
                target.parent.mkdir(parents=True, exist_ok=True)
                if op[0] == "file":
                    target.write_bytes(op[2])
                else:
                    shutil.copyfile(self._lfs_path(op[2]), target)
            elif op[0] == "delete":
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit

    def _upload_mode(self, repo: Repo, head: Commit, path: str, size: int, sample: bytes) -> str:
        attributes = (repo.folder / head.sha / ".gitattributes")
        patterns = [line.split()[0] for line in (attributes.read_text().splitlines() if attributes.exists() else [])
                    if "filter=lfs" in line]
        tracked = any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in patterns)
        return "lfs" if tracked or size >= LFS_SIZE_THRESHOLD or b"\0" in sample else "regular"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response sets Content-Length

    # ---- plumbing --------------------------------------------------------------------------------------------

    def log_message(self, *args) -> None:  # silence the default stderr log
        pass

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = lambda self: self._dispatch()

    def _cut(self, fake: FakeHub, path: str) -> bool:
        """Whether to drop this request's connection half-way through its body (`FakeHub.cut_connections`)."""
        with fake._lock:
            for key, count in fake.cut_connections.items():
                method, _, prefix = key.partition(" ")
                if count > 0 and self.command == method and path.startswith(prefix):
                    fake.cut_connections[key] = count - 1
                    break
            else:
                return False
            fake.requests.append(LoggedRequest(self.server.role, self.command, path, "", 0, False, False))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length // 2)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def _dispatch(self) -> None:
        fake: FakeHub = self.server.fake
        split = urlsplit(self.path)
        if fake.cut_connections and self._cut(fake, unquote(split.path)):
            return
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.segments = [unquote(s) for s in split.path.split("/")[1:]]
        authorization = self.headers.get("Authorization", "")
        self.has_token = authorization == f"Bearer {fake.token}"
        self.body = self._read_body()
        status, headers, body = 404, {}, b""
        handled = True
        try:
            route = self._route_cdn if self.server.role == "cdn" else self._route_hub
            result = route(fake)
            if result is None:
                handled = False
                raise HubError(404, f"fake hub: no route for {self.command} {split.path}")
            status, headers, body = result
        except HubError as e:
            status, headers = e.status, {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            body = json.dumps({"error": e.message}).encode()
            headers.setdefault("Content-Type", "application/json")
        except Exception as e:  # a bug in the fake: answer 4xx (no client retries), keep it for the fixture
            fake.errors.append(f"{self.command} {self.path}: {type(e).__name__}: {e}")
            status, headers, body = 400, {"X-Error-Message": f"fake hub internal error: {e}"}, b"{}"
        entry = LoggedRequest(self.server.role, self.command, unquote(split.path), split.query, status,
                              self.has_token, bool(authorization))
        with fake._lock:
            fake.requests.append(entry)
            if not handled:
                fake.unhandled.append(entry)
        self._send(status, headers, body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, headers: dict, body: bytes) -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **headers}
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json_body(self):
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise HubError(400, "fake hub: the request body is not JSON")

    @staticmethod
    def _json(data, status: int = 200, content_type: str = "application/json") -> tuple:
        return status, {"Content-Type": content_type}, json.dumps(data).encode()

    # ---- auth ------------------------------------------------------------------------------------------------

    def _check_auth(self, fake: FakeHub, *, write: bool = False, repo: Repo | None = None) -> None:
        """Writes always need the token; reads need it in require-token mode or for a private repo. A wrong token is
        a 401 everywhere; a read without a token is a 401 with X-Error-Code RepoNotFound, which the client turns
        into RepositoryNotFoundError (its comments say the Hub does this for private repos)."""
        if "Authorization" in self.headers and not self.has_token:
            raise HubError(401, "Invalid credentials in Authorization header")
        if not self.has_token and (write or fake.require_token or (repo is not None and repo.private)):
            raise HubError(401, "Invalid username or password.", "RepoNotFound" if repo or not write else None)

    def _get_repo(self, fake: FakeHub, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
        repo = fake._repos.get((repo_type, repo_id))
        if repo is None:
            self._check_auth(fake, write=write)
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        self._check_auth(fake, write=write, repo=repo)
        return repo

    @staticmethod
    def _revision(repo: Repo, revision: str, *, branch: bool = False) -> Commit:
        commit = repo.resolve(revision)
        if commit is None or (branch and revision not in repo.branches):
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ---- the CDN -----------------------------------------------------------------------------------------------

    def _route_cdn(self, fake: FakeHub):
        s, method = self.segments, self.command
        if len(s) != 2 or (s[0], method) not in {("upload", "PUT"), ("lfs", "GET"), ("lfs", "HEAD")}:
            return None
        oid = s[1]
        if not hmac.compare_digest(self.query.get("sig", ""), fake._sign(s[0], oid)):
            raise HubError(403, "fake cdn: bad signature")
        path = fake._lfs_path(oid)
        if s[0] == "upload":
            if len(self.body) != int(self.query.get("size", -1)) or hashlib.sha256(self.body).hexdigest() != oid:
                raise HubError(400, "fake cdn: the uploaded content does not match the oid/size of the upload URL")
            tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(self.body)
            tmp.replace(path)
            return 200, {"ETag": f'"{hashlib.md5(self.body).hexdigest()}"'}, b""
        if not path.exists():
            raise HubError(404, "fake cdn: no such object")
        data = path.read_bytes()
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{oid}"', "Accept-Ranges": "bytes"}
        ranges = self.headers.get("Range", "")
        if ranges.startswith("bytes=") and method == "GET":
            start, _, end = ranges[len("bytes="):].partition("-")
            end = int(end) if end else len(data) - 1
            headers["Content-Range"] = f"bytes {int(start)}-{end}/{len(data)}"
            return 206, headers, data[int(start):end + 1]
        return 200, headers, data

    # ---- the hub -----------------------------------------------------------------------------------------------

    def _route_hub(self, fake: FakeHub):
        s, method = self.segments, self.command
        with fake._lock:
            if s[:1] == ["api"]:
                return self._route_api(fake, s[1:], method)
            repo_type = URL_PREFIXES.get(s[0], "model") if s else "model"
            s = s[1:] if s and s[0] in URL_PREFIXES else s
            if method == "POST" and len(s) == 6 and s[1].endswith(".git") and s[2:5] == ["info", "lfs", "objects"]:
                repo = self._get_repo(fake, repo_type, f"{s[0]}/{s[1][:-4]}", write=True)
                if s[5] == "batch":
                    return self._lfs_batch(fake, repo)
                return self._lfs_verify(fake) if s[5] == "verify" else None
            if method in ("GET", "HEAD") and len(s) >= 5 and s[2] == "resolve":
                return self._resolve(fake, self._get_repo(fake, repo_type, f"{s[0]}/{s[1]}"), s[3], "/".join(s[4:]))
        return None

    def _route_api(self, fake: FakeHub, s: list[str], method: str):
        if (method, s) == ("GET", ["whoami-v2"]):
            if not self.has_token:
                raise HubError(401, "Invalid credentials in Authorization header")
            return self._json({"type": "user", "id": "0" * 24, "name": fake.user, "fullname": fake.user.title(),
                               "email": None, "orgs": [], "isPro": False,
                               "auth": {"type": "access_token",
                                        "accessToken": {"displayName": "fake", "role": "write"}}})
        if (method, s) == ("POST", ["repos", "create"]):
            return self._create_repo(fake)
        if (method, s) == ("POST", ["validate-yaml"]):
            self._check_auth(fake)
            if fake.reject_model_card:
                return self._json({"errors": [{"message": fake.reject_model_card}], "warnings": []}, status=400)
            return self._json({"errors": [], "warnings": []})
        if len(s) < 3 or s[0] not in API_TYPES:
            return None
        repo_type, repo_id, rest = API_TYPES[s[0]], f"{s[1]}/{s[2]}", s[3:]
        write = method == "POST"
        repo = self._get_repo(fake, repo_type, repo_id, write=write)
        if method == "GET" and (rest == [] or (len(rest) == 2 and rest[0] == "revision")):
            return self._info(fake, repo, self._revision(repo, rest[1] if rest else "main"))
        if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            return self._tree(repo, self._revision(repo, rest[1]), "/".join(rest[2:]))
        if method == "POST" and len(rest) == 2 and rest[0] in ("preupload", "commit", "branch"):
            if rest[0] == "branch":
                return self._create_branch(repo, rest[1])
            if self.query.get("create_pr") == "1":
                raise HubError(400, "fake hub: pull requests are not supported")
            commit = self._revision(repo, rest[1], branch=True)
            return self._preupload(fake, repo, commit) if rest[0] == "preupload" else self._commit(fake, repo, rest[1])
        return None

    def _create_repo(self, fake: FakeHub):
        self._check_auth(fake, write=True)
        payload = self._json_body()
        namespace, name = payload.get("organization") or fake.user, payload.get("name")
        repo_type = payload.get("type") or "model"
        if not name or "/" in name or repo_type not in API_TYPES.values():
            raise HubError(400, f"fake hub: bad repo name or type: {name!r}, {repo_type!r}")
        if namespace != fake.user:
            raise HubError(403, f"You don't have the rights to create a {repo_type} under the namespace {namespace!r}")
        repo = fake._repos.get((repo_type, f"{namespace}/{name}"))
        if repo is not None:
            return self._json({"error": f"You already created this {repo_type} repo",
                               "url": f"{fake.url}/{repo.url_path}"}, 409)
        private = payload.get("visibility", "public") != "public" or bool(payload.get("private"))
        repo = fake._create_repo(repo_type, f"{namespace}/{name}", private)
        return self._json({"url": f"{fake.url}/{repo.url_path}", "name": repo.repo_id, "id": repo.repo_id})

    def _info(self, fake: FakeHub, repo: Repo, commit: Commit):
        blobs = self.query.get("blobs", "").lower() == "true"
        siblings = []
        for path, f in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=f.size, blobId=f.oid)
                if f.sha256:
                    pointer_size = len(lfs_pointer(f.sha256, f.size))
                    sibling["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": pointer_size}
            siblings.append(sibling)
        namespace = repo.repo_id.split("/")[0]
        return self._json({"_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                           "author": namespace, "sha": commit.sha, "lastModified": commit.date,
                           "createdAt": repo.created, "private": repo.private, "disabled": False, "gated": False,
                           "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                           **({"modelId": repo.repo_id} if repo.repo_type == "model" else {})})

    def _tree(self, repo: Repo, commit: Commit, path: str):
        recursive = self.query.get("recursive", "").lower() == "true"
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        files, folders = [], set()
        for name, f in sorted(commit.files.items()):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            if len(parts) > 1:
                depth = len(parts) - 1 if recursive else 1
                folders.update(prefix + "/".join(parts[:i]) for i in range(1, depth + 1))
                if not recursive:
                    continue
            entry = {"type": "file", "oid": f.oid, "size": f.size, "path": name}
            if f.sha256:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(lfs_pointer(f.sha256, f.size))}
            files.append(entry)
        if prefix and not files and not folders:
            raise HubError(404, f"{path} does not exist on {commit.sha}", "EntryNotFound")
        folder_entries = [{"type": "directory", "oid": hashlib.sha1(f"{commit.sha}/{d}".encode()).hexdigest(),
                           "size": 0, "path": d} for d in sorted(folders)]
        return self._json(folder_entries + files)

    def _create_branch(self, repo: Repo, branch: str):
        if branch in repo.branches:
            raise HubError(409, f"Reference {branch} already exists")
        start = self._json_body().get("startingPoint") or "main"
        repo.branches[branch] = self._revision(repo, start).sha
        return self._json({})

    def _preupload(self, fake: FakeHub, repo: Repo, head: Commit):
        answers = []
        for item in self._json_body().get("files", []):
            path, size, sample = item["path"], int(item["size"]), base64.b64decode(item.get("sample", ""))
            mode = fake._upload_mode(repo, head, path, size, sample)
            existing = head.files.get(path)
            remote_oid = None if existing is None else existing.sha256 or existing.oid
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": remote_oid})
        return self._json({"files": answers, "commitOid": head.sha})

    def _commit(self, fake: FakeHub, repo: Repo, branch: str):
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "fake hub: a commit payload starts with a header line")
        header, ops = lines[0]["value"], []
        head = repo.resolve(branch)
        parent = header.get("parentCommit")
        if parent and not head.sha.startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = set(head.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "")
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise HubError(400, f"fake hub: invalid path {path!r}")
            if path == "README.md" and fake.reject_model_card and key in ("file", "lfsFile"):
                raise HubError(400, f"Invalid metadata in README.md: {fake.reject_model_card}")
            if key == "file":
                content = value.get("content", "")
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                if len(data) >= LFS_SIZE_THRESHOLD:
                    raise HubError(400, f"{path}: files larger than 10 MiB must go through LFS")
                ops.append(("file", path, data))
                files.add(path)
            elif key == "lfsFile":
                oid, stored = value.get("oid", ""), fake._lfs_path(value.get("oid", "") or "missing")
                if value.get("algo", "sha256") != "sha256" or not stored.exists() or (
                        "size" in value and stored.stat().st_size != value["size"]):
                    raise HubError(422, f"{path}: LFS object {oid} was never uploaded (or has another size)")
                ops.append(("lfs", path, oid))
                files.add(path)
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                ops.append(("delete", path))
                files.discard(path)
            elif key == "deletedFolder":
                ops.append(("delete_folder", path))
                files = {f for f in files if not f.startswith(path.rstrip("/") + "/")}
            else:
                raise HubError(400, f"fake hub: unsupported commit operation {key!r}")
        commit = fake._commit(repo, branch, header.get("summary", ""), ops)
        return self._json({"success": True, "commitOid": commit.sha, "hookOutput": "", "pullRequestUrl": None,
                           "commitUrl": f"{fake.url}/{repo.url_path}/commit/{commit.sha}"})

    def _lfs_batch(self, fake: FakeHub, repo: Repo):
        payload = self._json_body()
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "fake hub: the LFS batch API only does 'upload' with the 'basic' transfer")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            answer = {"oid": oid, "size": size}
            stored = fake._lfs_path(oid)
            if not (stored.exists() and stored.stat().st_size == size):  # already stored: no actions, no upload
                answer["authenticated"] = True
                answer["actions"] = {
                    "upload": {"href": f"{fake.cdn_url}/upload/{oid}?size={size}&sig={fake._sign('upload', oid)}"},
                    "verify": {"href": f"{fake.url}/{repo.url_path}.git/info/lfs/objects/verify", "header": {}},
                }
            objects.append(answer)
        return self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                          content_type="application/vnd.git-lfs+json")

    def _lfs_verify(self, fake: FakeHub):
        payload = self._json_body()
        stored = fake._lfs_path(payload.get("oid") or "missing")
        if not stored.exists() or stored.stat().st_size != payload.get("size"):
            raise HubError(404, f"LFS object {payload.get('oid')} not found (or another size)")
        return self._json({"success": True}, content_type="application/vnd.git-lfs+json")

    def _resolve(self, fake: FakeHub, repo: Repo, revision: str, path: str):
        commit = self._revision(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{entry.oid}"', "Accept-Ranges": "bytes"}
        if entry.sha256:  # LFS: the metadata is on the redirect itself, the bytes come from the CDN
            location = f"{fake.cdn_url}/lfs/{entry.sha256}?sig={fake._sign('lfs', entry.sha256)}"
            headers.update({"Location": location, "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": entry.size})
            return 302, headers, b""
        data = (repo.folder / commit.sha / path).read_bytes()
        return 200, {**headers, "Content-Type": "text/plain; charset=utf-8"}, data


# ---- the pytest fixture ---------------------------------------------------------------------------------------

# Variables that would point the client elsewhere or change what it does; the fixture removes them.
_CLEARED_ENV = ("HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HF_ASSETS_CACHE",
                "HF_TOKEN_PATH", "HF_XET_CACHE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN",
                "HUGGINGFACE_CO_STAGING", "HF_OIDC_RESOURCE", "HF_MODULES_CACHE", "DIFFUSERS_CACHE",
                "http_proxy", "https_proxy", "all_proxy", "no_proxy")  # lowercase proxies would win over ours


def _patch_in_process(monkeypatch, url: str, home: Path, cache: Path) -> None:
    """Point the already-imported `huggingface_hub` at the fake (it read the environment at import time)."""
    from huggingface_hub import constants, hf_api

    for name, value in {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
    }.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", url)  # the HfApi() behind create_repo, model_info, upload_folder...


@pytest.fixture
def fake_hub(tmp_path_factory, monkeypatch):
    """A running `FakeHub`, with the environment (for subprocesses) and `huggingface_hub`'s constants (in process)
    pointing at it: HF_ENDPOINT, fresh HF_HOME and HF_HUB_CACHE, HF_TOKEN = the fake token, telemetry and Xet off,
    and proxies that make any request to another host fail at once (the client reads them when it starts).
    Yields the hub: ``.url``, ``.token``, ``.user``, ``.requests``, ``.env``, ``.list_files(repo_id, revision)``..."""
    base = tmp_path_factory.mktemp("fake_hub")
    home, cache = base / "hf_home", base / "hf_home" / "hub"
    cache.mkdir(parents=True)
    hub = FakeHub(base / "storage").start()
    hub.env = {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_TOKEN": hub.token,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ENABLE_HF_TRANSFER": "0",
        "HF_HUB_DISABLE_XET": "1",  # huggingface_hub 2.4 + hf_xet uploads through Xet unless told not to
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        # Subprocesses: anything not addressed to 127.0.0.1 goes to a closed local port and fails at once.
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for key in _CLEARED_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in hub.env.items():
        monkeypatch.setenv(key, value)
    _patch_in_process(monkeypatch, hub.url, home, cache)
    hub.home, hub.cache = home, cache
    try:
        yield hub
    finally:
        hub.stop()
    assert not hub.errors, f"the fake hub failed on some requests: {hub.errors}"


__all__ = ["FAKE_TOKEN", "FAKE_USER", "FakeHub", "LoggedRequest", "fake_hub", "git_blob_sha1", "lfs_pointer"]
