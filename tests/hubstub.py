"""A recording stand-in for the Hugging Face Hub API, served on 127.0.0.1.

It implements only the endpoints huggingface_hub 2.4 calls for ``whoami``,
``create_repo``, ``repo_info``, ``create_branch`` and ``upload_folder`` /
``create_commit`` (preupload, validate-yaml, NDJSON commit), keeps each repo's
files in memory and records every request, so tests can assert on exactly what
would have been uploaded. Preupload answers "regular" for every file: all
content then travels base64-encoded in the commit body, with no LFS or Xet
storage to stand in for.

The server binds to loopback only and shuts itself down after ``lifetime_s``
even if a test forgets to stop it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

import yaml

_REPO_PREFIXES = {"models": "model", "datasets": "dataset", "spaces": "space"}
# /api/<type>s/<ns>/<name>[/<action>/<revision>] ; the revision may hold %2F.
_REPO_PATH = re.compile(
    r"^/api/(?P<kind>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
    r"(?:/(?P<action>preupload|commit|branch|revision)/(?P<rev>.+))?$"
)


@dataclass
class Commit:
    revision: str
    summary: str
    description: str
    files: Dict[str, bytes]  # path -> content added by this commit
    deleted: List[str]


@dataclass
class StubRepo:
    repo_id: str
    repo_type: str
    private: bool
    files: Dict[str, bytes] = field(default_factory=dict)
    branches: Dict[str, Dict[str, bytes]] = field(default_factory=dict)
    commits: List[Commit] = field(default_factory=list)

    def sha(self) -> str:
        return hashlib.sha1(f"{self.repo_id}:{len(self.commits)}".encode()).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    authorized: bool  # carried the stub's token; the token itself is not kept


class HubStub:
    """A tiny Hub on 127.0.0.1. Use as a context manager; ``url`` is the endpoint."""

    def __init__(self, *, user: str = "tester", orgs: Tuple[str, ...] = ("team",),
                 token: str = "hf_stub_secret_token", lifetime_s: float = 300.0):
        self.user = user
        self.orgs = tuple(orgs)
        self.token = token
        self.lifetime_s = lifetime_s
        self.repos: Dict[Tuple[str, str], StubRepo] = {}
        self.requests: List[Request] = []
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._timer: Optional[threading.Timer] = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "HubStub":
        handler = type("BoundHandler", (_Handler,), {"stub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="hubstub", daemon=True).start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._timer is not None:
            self._timer.cancel()

    def __enter__(self) -> "HubStub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "stub not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- test helpers ------------------------------------------------------------
    def add_repo(self, repo_id: str, *, repo_type: str = "dataset", private: bool = True,
                 files: Optional[Dict[str, bytes]] = None) -> StubRepo:
        repo = StubRepo(repo_id, repo_type, private, dict(files or {}))
        repo.branches["main"] = repo.files
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo(self, repo_id: str, repo_type: str = "dataset") -> StubRepo:
        return self.repos[(repo_type, repo_id)]

    def writes(self) -> List[Request]:
        """Requests that would change something on the Hub."""
        return [r for r in self.requests if r.method == "POST" and not r.path.startswith("/api/validate-yaml")]


class _Handler(BaseHTTPRequestHandler):
    stub: HubStub  # set on the bound subclass

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    # -- plumbing ----------------------------------------------------------------
    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.stub.token}"

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, payload: object, error_code: Optional[str] = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error_code:
            self.send_header("X-Error-Code", error_code)
            self.send_header("X-Error-Message", str(payload.get("error", "")) if isinstance(payload, dict) else "")
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, repo_id: str) -> None:
        self._reply(404, {"error": f"Repository {repo_id} not found"}, "RepoNotFound")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        with self.stub._lock:
            self.stub.requests.append(Request(method, path, self._authorized()))
        body = self._body() if method == "POST" else b""
        if path == "/api/whoami-v2":
            return self._whoami()
        if path == "/api/validate-yaml" and method == "POST":
            return self._validate_yaml(body)
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(body)
        match = _REPO_PATH.match(path)
        if not match:
            return self._reply(404, {"error": f"stub does not implement {method} {path}"})
        repo_type = _REPO_PREFIXES[match["kind"]]
        repo_id = f"{match['ns']}/{match['name']}"
        action, revision = match["action"], unquote(match["rev"] or "main")
        with self.stub._lock:
            repo = self.stub.repos.get((repo_type, repo_id))
            if repo is None or (repo.private and not self._authorized()):
                return self._not_found(repo_id)
            if method == "GET" and action in (None, "revision"):
                return self._info(repo, revision)
            if method != "POST" or action not in ("preupload", "commit", "branch"):
                return self._reply(404, {"error": f"stub does not implement {method} {path}"})
            if not self._authorized():
                return self._reply(401, {"error": "Invalid credentials in Authorization header"})
            if action == "preupload":
                return self._preupload(repo, body)
            if action == "branch":
                return self._create_branch(repo, revision)
            return self._commit(repo, revision, body)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    # -- endpoints -----------------------------------------------------------------
    def _whoami(self) -> None:
        if not self._authorized():
            return self._reply(401, {"error": "Invalid credentials in Authorization header"})
        orgs = [{"name": org, "type": "org", "roleInOrg": "write"} for org in self.stub.orgs]
        self._reply(200, {"type": "user", "name": self.stub.user, "orgs": orgs,
                          "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    def _validate_yaml(self, body: bytes) -> None:
        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as err:
            return self._reply(400, {"errors": [{"message": f"invalid YAML: {err}"}]})
        if meta is not None and not isinstance(meta, dict):
            return self._reply(400, {"errors": [{"message": "metadata must be a mapping"}]})
        self._reply(200, {"errors": [], "warnings": []})

    def _create_repo(self, body: bytes) -> None:
        if not self._authorized():
            return self._reply(401, {"error": "Invalid credentials in Authorization header"})
        payload = json.loads(body)
        namespace = payload.get("organization") or self.stub.user
        if namespace not in (self.stub.user, *self.stub.orgs):
            return self._reply(403, {"error": f"You don't have the rights to create a repo under {namespace}"})
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        # Like the Hub: without a visibility the repo is public (the namespace default here).
        private = payload.get("visibility") == "private" or payload.get("private") is True
        with self.stub._lock:
            if (repo_type, repo_id) in self.stub.repos:
                return self._reply(409, {"error": "You already created this repo",
                                         "url": self._repo_url(repo_type, repo_id)})
            self.stub.add_repo(repo_id, repo_type=repo_type, private=private)
        self._reply(200, {"url": self._repo_url(repo_type, repo_id), "name": repo_id})

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.stub.url}/{prefix}{repo_id}"

    def _info(self, repo: StubRepo, revision: str) -> None:
        if revision not in repo.branches:
            return self._reply(404, {"error": f"Revision {revision} not found"}, "RevisionNotFound")
        siblings = [{"rfilename": name} for name in sorted(repo.branches[revision])]
        self._reply(200, {"id": repo.repo_id, "private": repo.private, "sha": repo.sha(), "siblings": siblings,
                          "tags": [], "downloads": 0, "likes": 0})

    def _preupload(self, repo: StubRepo, body: bytes) -> None:
        files = json.loads(body)["files"]
        self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                    for f in files], "commitOid": repo.sha()})

    def _create_branch(self, repo: StubRepo, branch: str) -> None:
        if branch in repo.branches:
            return self._reply(409, {"error": f"Branch {branch} already exists"})
        repo.branches[branch] = dict(repo.files)
        self._reply(200, {})

    def _commit(self, repo: StubRepo, revision: str, body: bytes) -> None:
        if revision not in repo.branches:
            return self._reply(404, {"error": f"Revision {revision} not found"}, "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        added: Dict[str, bytes] = {}
        deleted: List[str] = []
        for item in lines:
            value = item["value"]
            if item["key"] == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            elif item["key"] != "header":
                return self._reply(400, {"error": f"stub does not accept {item['key']} operations"})
        tree = repo.branches[revision]
        for path in deleted:
            for name in [n for n in tree if n == path or n.startswith(path.rstrip("/") + "/")]:
                del tree[name]
        tree.update(added)
        repo.commits.append(Commit(revision, header["summary"], header.get("description", ""), added, deleted))
        oid = repo.sha()
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._reply(200, {"success": True, "commitOid": oid,
                          "commitUrl": f"{self.stub.url}/{prefix}{repo.repo_id}/commit/{oid}"})
