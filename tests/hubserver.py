"""A fake Hugging Face Hub on loopback, for tests that exercise the real `huggingface_hub` client.

`FakeHub` serves repos from a dict with `http.server.ThreadingHTTPServer` on 127.0.0.1:0 and
records every request, so tests can assert what was (and was not) downloaded. It answers the
requests `huggingface_hub` 2.4 makes, with the headers the real Hub sends:

- ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}`` (``?blobs=True``): the
  repo's JSON info (``sha``, ``gated``, ``siblings`` with ``size``/``blobId``/``lfs``).
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: small ("regular") files answer 200 with
  ``X-Repo-Commit``, ``ETag`` (git blob sha1) and ``Content-Length``. LFS files (weights,
  ``.model``) answer 302 to a signed "CDN" URL on another host name (``localhost`` instead of
  ``127.0.0.1``, so the client treats it as off-Hub and drops its ``Authorization`` header, as it
  does for the real CDN) with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``.
- ``GET /cdn/{sha256}``: the LFS payload; needs no token (the URL is "signed").
- ``GET /api/agent-harnesses``: an empty registry (the client fetches it once per process for its
  user-agent string).

Errors mirror the real Hub (``X-Error-Code`` / ``X-Error-Message`` headers):

- unknown repo: 401 ``RepoNotFound`` without a token, 404 ``RepoNotFound`` with a valid one (the Hub
  hides private repos from anonymous users the same way);
- any request with a token the hub does not know: 401 "Invalid credentials in Authorization header";
- gated repo, file download without a token: 401 ``GatedRepo`` ("... Please log in.");
- gated repo, valid token whose user has not accepted the license: 403 ``GatedRepo`` ("... Visit
  https://huggingface.co/{repo} to ask for access."). The repo's info (``/api/models``) stays
  public, as on the real Hub;
- unknown file (or one in `FakeRepo.lost`): 404 ``EntryNotFound`` (with ``X-Repo-Commit``);
  unknown revision: 404 ``RevisionNotFound``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".model", ".pt", ".h5", ".msgpack", ".ot")


@dataclass
class FakeRepo:
    """One model repo: its files at a single commit, and whether it is gated."""

    files: dict[str, bytes]
    sha: str = ""
    gated: bool = False
    # listed in the repo info but 404 on download, as if deleted between listing and download
    lost: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.sha:
            self.sha = hashlib.sha1(repr(sorted(self.files)).encode()).hexdigest()


@dataclass(frozen=True)
class Request:
    """One request the fake hub received."""

    method: str
    path: str  # URL path, unquoted, without the query string
    host: str
    authorization: str | None


def is_lfs(path: str) -> bool:
    """Tell whether the real Hub would store this file with LFS (weights, sentencepiece models)."""
    return path.endswith(LFS_SUFFIXES)


def git_blob_sha1(data: bytes) -> str:
    """Return git's object id of a blob (what the Hub sends as ETag for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeHub:
    """A loopback HTTP server that plays the Hub; use as a context manager."""

    repos: dict[str, FakeRepo]
    # token -> repo ids whose license that user accepted (every token may read non-gated repos)
    tokens: dict[str, set[str]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _server: _Server | None = None
    _thread: threading.Thread | None = None
    _port: int = 0

    @property
    def port(self) -> int:
        """The TCP port the server listens (or listened) on."""
        assert self._port, "FakeHub was never started"
        return self._port

    @property
    def url(self) -> str:
        """The endpoint to put in HF_ENDPOINT."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeHub:
        """Bind 127.0.0.1:0 and serve in a daemon thread."""
        hub = self

        class Handler(_HubHandler):
            fake_hub = hub

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every socket (later requests get "connection refused")."""
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()  # kept-alive ones too, or clients could still talk
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def downloaded(self) -> list[str]:
        """Return the ``repo/path`` of every file whose content was fetched (GET resolve or CDN)."""
        out = []
        for req in self.requests:
            if req.method == "GET" and "/resolve/" in req.path:
                repo, _, rest = req.path.lstrip("/").partition("/resolve/")
                out.append(f"{repo}/{rest.partition('/')[2]}")
            elif req.method == "GET" and req.path.startswith("/cdn/"):
                out.append(self._cdn_names[req.path.removeprefix("/cdn/")])
        return out

    @property
    def _cdn_names(self) -> dict[str, str]:
        return {
            hashlib.sha256(data).hexdigest(): f"{repo_id}/{path}"
            for repo_id, repo in self.repos.items()
            for path, data in repo.files.items()
        }

    def find_blob(self, sha256: str) -> bytes | None:
        """Return the LFS payload with this sha256, if any repo has it."""
        for repo in self.repos.values():
            for data in repo.files.values():
                if hashlib.sha256(data).hexdigest() == sha256:
                    return data
        return None


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that can close its open (keep-alive) connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection, so handler threads see EOF and clients a reset."""
        with self._lock:
            open_sockets, self._open = list(self._open), set()
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler


class _HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class _HubHandler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms stalls

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass  # keep pytest output clean; requests are recorded in FakeHub.requests

    def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
        self._handle(body=False)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._handle(body=True)

    def _handle(self, *, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        auth = self.headers.get("Authorization")
        self.fake_hub.requests.append(Request(self.command, path, self.headers["Host"], auth))
        try:
            if path == "/api/agent-harnesses":
                self._send_json({"standardEnvVars": [], "harnesses": {}}, body=body)
            elif path.startswith("/api/models/"):
                self._api_model(path.removeprefix("/api/models/"), body=body)
            elif path.startswith("/cdn/"):
                self._cdn(path.removeprefix("/cdn/"), body=body)
            elif "/resolve/" in path:
                self._resolve(path.lstrip("/"), body=body)
            else:
                raise _HubError(404, None, "Not Found")
        except _HubError as e:
            self._send_error(e)

    # --- auth -----------------------------------------------------------------------------------

    def _user_token(self) -> str | None:
        """Return the bearer token, None without one; raise 401 for a token the hub doesn't know."""
        auth = self.headers.get("Authorization")
        if auth is None:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.fake_hub.tokens:
            raise _HubError(401, None, "Invalid credentials in Authorization header")
        return token

    def _repo(self, repo_id: str) -> FakeRepo:
        token = self._user_token()
        repo = self.fake_hub.repos.get(repo_id)
        if repo is None:
            status = 401 if token is None else 404
            raise _HubError(status, "RepoNotFound", "Repository not found")
        return repo

    def _check_gate(self, repo_id: str, repo: FakeRepo) -> None:
        if not repo.gated:
            return
        token = self._user_token()
        if token is None:
            raise _HubError(
                401,
                "GatedRepo",
                f"Access to model {repo_id} is restricted. You must have access to it and be"
                " authenticated to access it. Please log in.",
            )
        if repo_id not in self.fake_hub.tokens[token]:
            raise _HubError(
                403,
                "GatedRepo",
                f"Access to model {repo_id} is restricted and you are not in the authorized list."
                f" Visit https://huggingface.co/{repo_id} to ask for access.",
            )

    @staticmethod
    def _check_revision(repo: FakeRepo, revision: str) -> None:
        if revision not in ("main", repo.sha):
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    # --- routes ---------------------------------------------------------------------------------

    def _api_model(self, rest: str, *, body: bool) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        repo = self._repo(repo_id)
        self._check_revision(repo, revision or "main")
        siblings = []
        for name, data in sorted(repo.files.items()):
            entry: dict[str, object] = {
                "rfilename": name,
                "size": len(data),
                "blobId": git_blob_sha1(data),
            }
            if is_lfs(name):
                sha256 = hashlib.sha256(data).hexdigest()
                entry["lfs"] = {"sha256": sha256, "size": len(data), "pointerSize": 134}
            siblings.append(entry)
        info = {
            "_id": repo.sha[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
        self._send_json(info, body=body)

    def _resolve(self, rest: str, *, body: bool) -> None:
        repo_id, _, rev_path = rest.partition("/resolve/")
        revision, _, file_path = rev_path.partition("/")
        repo = self._repo(repo_id)
        self._check_revision(repo, revision)
        self._check_gate(repo_id, repo)
        data = repo.files.get(file_path)
        if data is None or file_path in repo.lost:
            raise _HubError(404, "EntryNotFound", "Entry not found", commit=repo.sha)
        headers = {"X-Repo-Commit": repo.sha}
        if is_lfs(file_path):
            sha256 = hashlib.sha256(data).hexdigest()
            headers |= {
                "ETag": f'"{git_blob_sha1(data)}"',
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(data)),
                "Location": f"http://localhost:{self.fake_hub.port}/cdn/{sha256}?sig=fake",
            }
            self._send(302, b"", headers, body=body)
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
            self._send(200, data, headers, body=body)

    def _cdn(self, sha256: str, *, body: bool) -> None:
        data = self.fake_hub.find_blob(sha256)
        if data is None:
            raise _HubError(404, None, "NoSuchKey")
        self._send(200, data, {"ETag": f'"{sha256}"'}, body=body)

    # --- responses ------------------------------------------------------------------------------

    def _send_json(self, obj: object, *, body: bool) -> None:
        data = json.dumps(obj).encode()
        self._send(200, data, {"Content-Type": "application/json"}, body=body)

    def _send_error(self, e: _HubError) -> None:
        headers = {"X-Error-Message": e.message, "Content-Type": "application/json"}
        if e.code is not None:
            headers["X-Error-Code"] = e.code
        if e.commit is not None:
            headers["X-Repo-Commit"] = e.commit
        data = json.dumps({"error": e.message}).encode()
        self._send(e.status, data, headers, body=self.command != "HEAD")

    def _send(self, status: int, data: bytes, headers: dict[str, str], *, body: bool) -> None:
        self.send_response(status)
        headers.setdefault("Content-Type", "application/octet-stream")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)
