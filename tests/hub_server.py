"""A local Hugging Face Hub-compatible HTTP server, so Hub code paths are tested without network.

It implements the part of the Hub API that `huggingface_hub` 2.x uses for `create_repo`,
`create_commit` / `upload_file` / `upload_folder` (every file is a "regular" upload, never LFS or
Xet), `repo_info`, `list_repo_tree`, `hf_hub_download` and `snapshot_download`, which is all that
`transformers`' `push_to_hub` and `from_pretrained` need. Repo state lives in memory, file
contents under a directory. Anything else answers 501 so that a missing route is obvious.
"""

import base64
import hashlib
import json
import os
import re
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

API_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
# Owner of repos created without an organization (the real Hub uses the token's user).
DEFAULT_NAMESPACE = "test-user"

# Repo ids are "name" or "namespace/name"; the regexes backtrack to the one-segment form if needed.
_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_API_ROUTE = re.compile(
    rf"^/api/(?P<kind>models|datasets|spaces|kernels)/{_REPO}"
    r"(?:/(?P<action>revision|tree|preupload|commit|branch)/(?P<revision>[^/]+)(?:/(?P<path>.*))?)?$"
)
_RESOLVE_ROUTE = re.compile(
    rf"^/(?:(?P<kind>datasets|spaces|kernels)/)?{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)$"
)


class HubError(Exception):
    """An HTTP error as the Hub sends it: `huggingface_hub` maps `X-Error-Code` to its exceptions."""

    def __init__(self, status, message, code=None, headers=None):
        super().__init__(message)
        self.status, self.message = status, message
        self.headers = dict(headers or {})
        if code is not None:
            self.headers["X-Error-Code"] = code
            self.headers["X-Error-Message"] = message


@dataclass
class Repo:
    branches: dict = field(default_factory=dict)  # branch name -> commit sha
    commits: dict = field(default_factory=dict)  # commit sha -> {path in repo: blob sha}


def git_blob_sha(content):
    """The git object id of a file, which the Hub uses as ETag and tree `oid` of non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _new_commit_sha():
    return hashlib.sha1(uuid.uuid4().bytes).hexdigest()


def _json_response(payload, status=200):
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


class LocalHub:
    """The server; run it with `with LocalHub(tmp_dir) as hub:` and point clients at `hub.endpoint`."""

    def __init__(self, storage_dir):
        self.blob_dir = Path(storage_dir) / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.repos = {}  # (repo_type, repo_id) -> Repo
        self.requests = []  # (method, path) of every request: lets tests check what really went over HTTP
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RequestHandler)
        self._server.daemon_threads = True
        self._server.hub = self
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def handle(self, method, path, query, body):
        """Route one request; returns (status, headers, body) or raises HubError."""
        with self._lock:
            if method == "POST" and path == "/api/repos/create":
                return self._create_repo(json.loads(body))
            if method == "POST" and path == "/api/validate-yaml":
                return _json_response({"errors": [], "warnings": []})
            match = _API_ROUTE.match(path)
            if match:
                route = (method, match["action"])
                repo_type, repo_id = API_REPO_TYPES[match["kind"]], match["repo"]
                revision = unquote(match["revision"] or "main")
                if route in (("GET", None), ("GET", "revision")):
                    return self._repo_info(repo_type, repo_id, revision)
                if route == ("GET", "tree"):
                    recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
                    return self._tree(repo_type, repo_id, revision, unquote(match["path"] or ""), recursive)
                if route == ("POST", "preupload"):
                    return self._preupload(repo_type, repo_id, revision, json.loads(body))
                if route == ("POST", "branch"):
                    return self._create_branch(repo_type, repo_id, revision, json.loads(body or b"{}"))
                if route == ("POST", "commit"):
                    create_pr = query.get("create_pr", ["0"])[0].lower() in ("true", "1")
                    return self._commit(repo_type, repo_id, revision, body, create_pr)
            match = _RESOLVE_ROUTE.match(path)
            if match and method in ("GET", "HEAD"):
                repo_type = API_REPO_TYPES[match["kind"]] if match["kind"] else "model"
                return self._resolve(repo_type, match["repo"], unquote(match["revision"]), unquote(match["path"]))
        raise HubError(501, f"{method} {path} is not implemented by the local test hub.")

    # -- repo state ------------------------------------------------------------------------------

    def _repo(self, repo_type, repo_id):
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _files_at(self, repo_type, repo_id, revision):
        """(commit sha, {path: blob sha}) of a branch name or full commit sha."""
        repo = self._repo(repo_type, repo_id)
        commit = repo.branches.get(revision, revision)
        if commit not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit, repo.commits[commit]

    def _repo_url(self, repo_type, repo_id):
        return f"{self.endpoint}/{URL_PREFIXES[repo_type]}{repo_id}"

    # -- endpoints -------------------------------------------------------------------------------

    def _create_repo(self, payload):
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or DEFAULT_NAMESPACE}/{payload['name']}"
        url = self._repo_url(repo_type, repo_id)
        if (repo_type, repo_id) in self.repos:
            return _json_response({"error": f"You already created this {repo_type} repo", "url": url}, 409)
        initial_commit = _new_commit_sha()
        self.repos[repo_type, repo_id] = Repo(branches={"main": initial_commit}, commits={initial_commit: {}})
        return _json_response({"url": url, "name": repo_id, "id": repo_id})

    def _repo_info(self, repo_type, repo_id, revision):
        commit, files = self._files_at(repo_type, repo_id, revision)
        siblings = [
            {"rfilename": path, "size": self._blob_path(blob).stat().st_size, "blobId": blob}
            for path, blob in sorted(files.items())
        ]
        return _json_response(
            {"id": repo_id, "sha": commit, "private": False, "gated": False, "disabled": False, "siblings": siblings}
        )

    def _tree(self, repo_type, repo_id, revision, folder, recursive):
        _, files = self._files_at(repo_type, repo_id, revision)
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries = {}
        for path, blob in files.items():
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folder_path = prefix + "/".join(parts[:depth])
                tree_id = hashlib.sha1(folder_path.encode()).hexdigest()  # stable; nothing checks it
                entries[folder_path] = {"type": "directory", "oid": tree_id, "path": folder_path}
            if recursive or len(parts) == 1:
                size = self._blob_path(blob).stat().st_size
                entries[path] = {"type": "file", "oid": blob, "size": size, "path": path}
        if prefix and not entries:
            raise HubError(404, f"{folder} does not exist on {revision}", code="EntryNotFound")
        return _json_response([entries[path] for path in sorted(entries)])

    def _preupload(self, repo_type, repo_id, revision, payload):
        _, files = self._files_at(repo_type, repo_id, revision)
        # "regular" for every file: contents then travel base64-encoded inside the commit call.
        # `oid` lets the client skip files whose content is already on the Hub, like the real one.
        return _json_response(
            {
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(f["path"])}
                    for f in payload["files"]
                ]
            }
        )

    def _create_branch(self, repo_type, repo_id, branch, payload):
        repo = self._repo(repo_type, repo_id)
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch], _ = self._files_at(repo_type, repo_id, payload.get("startingPoint") or "main")
        return _json_response({})

    def _commit(self, repo_type, repo_id, branch, body, create_pr=False):
        """A commit on `branch`; with `create_pr`, on a new pull-request ref "refs/pr/N" that starts from it."""
        repo = self._repo(repo_type, repo_id)
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
        parent = repo.branches[branch]
        pr_url = None
        if create_pr:
            number = 1 + sum(name.startswith("refs/pr/") for name in repo.branches)
            branch = f"refs/pr/{number}"
            repo.branches[branch] = parent
            pr_url = f"{self._repo_url(repo_type, repo_id)}/discussions/{number}"
        files = dict(repo.commits[parent])
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                if value.get("parentCommit") not in (None, parent):
                    raise HubError(412, f"Parent commit {value['parentCommit']} is not the head of {branch}.")
            elif key == "file":
                files[value["path"]] = self._store_blob(base64.b64decode(value["content"]))  # always base64
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", code="EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {path: blob for path, blob in files.items() if not path.startswith(folder)}
            else:  # "lfsFile" included: preupload never asks for LFS, so no LFS object can exist here.
                raise HubError(400, f"Commit operation {key!r} is not supported by the local test hub.")
        commit = _new_commit_sha()
        repo.commits[commit] = files
        repo.branches[branch] = commit
        url = f"{self._repo_url(repo_type, repo_id)}/commit/{commit}"
        return _json_response({"success": True, "commitOid": commit, "commitUrl": url, "pullRequestUrl": pr_url})

    def _resolve(self, repo_type, repo_id, revision, path):
        commit, files = self._files_at(repo_type, repo_id, revision)
        if path not in files:
            raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit})
        blob = files[path]
        headers = {"Content-Type": "application/octet-stream", "X-Repo-Commit": commit, "ETag": f'"{blob}"'}
        return 200, headers, self._blob_path(blob).read_bytes()

    # -- blob storage ----------------------------------------------------------------------------

    def _blob_path(self, blob):
        return self.blob_dir / blob

    def _store_blob(self, content):
        blob = git_blob_sha(content)
        self._blob_path(blob).write_bytes(content)
        return blob


class _RequestHandler(BaseHTTPRequestHandler):
    """HTTP plumbing only; the Hub logic is in `LocalHub.handle`."""

    def do_GET(self):
        self._respond()

    def do_HEAD(self):
        self._respond()

    def do_POST(self):
        self._respond()

    def _respond(self):
        hub = self.server.hub
        url = urlsplit(self.path)
        hub.requests.append((self.command, url.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            status, headers, payload = hub.handle(self.command, url.path, parse_qs(url.query), body)
        except HubError as error:
            status, headers, payload = error.status, error.headers, json.dumps({"error": error.message}).encode()
            headers.setdefault("Content-Type", "application/json")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format, *args):
        """Silence the per-request stderr log; `LocalHub.requests` records the traffic."""


def configure_hf_env(monkeypatch, *, endpoint=None, hf_home=None, offline=None):
    """Point `huggingface_hub` and `transformers` at an endpoint, an HF home and/or offline mode.

    Environment variables cover subprocesses, but both libraries copied them into module
    constants at import time, so those are patched too; the shared HTTP session and the cached
    `HfApi` clients are dropped so that nothing keeps the previous endpoint.
    """
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import close_session

    if endpoint is not None:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        url_template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url_template)
        monkeypatch.setattr(hf_api.api, "endpoint", endpoint)  # the instance behind the module-level functions
    if hf_home is not None:
        paths = {
            "HF_HOME": str(hf_home),
            "HF_HUB_CACHE": os.path.join(hf_home, "hub"),
            "HF_ASSETS_CACHE": os.path.join(hf_home, "assets"),
            "HF_XET_CACHE": os.path.join(hf_home, "xet"),
        }
        for name, value in paths.items():
            monkeypatch.setenv(name, value)
            monkeypatch.setattr(constants, name, value)
        monkeypatch.setattr(constants, "HUGGINGFACE_HUB_CACHE", paths["HF_HUB_CACHE"])
    if offline is not None:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    if "transformers.utils.hub" in sys.modules:  # caches an HfApi, built with the endpoint of its time
        monkeypatch.setattr(sys.modules["transformers.utils.hub"], "_hf_api", None)
    close_session()
