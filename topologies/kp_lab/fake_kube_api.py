"""A fake Kubernetes API server on 127.0.0.1 (tests and labs) that speaks the real list/watch protocol,
for the official client to be driven against unchanged (no kube-apiserver can be
installed here).

What it serves, as kube-apiserver does:
- GET /api/v1/services, /apis/discovery.k8s.io/v1/endpointslices, /api/v1/nodes: a
  List with metadata.resourceVersion, the current objects each with its own;
- the same with ?watch=true&resourceVersion=N: HTTP/1.1 chunked, one JSON event a line
  (ADDED, MODIFIED, DELETED after N, then the new ones as they come; BOOKMARK events
  when allowWatchBookmarks=true and `bookmark()` is called), ending after
  timeoutSeconds;
- a resourceVersion older than the history kept (`compact()`): 410 Gone, either as the
  HTTP status (a Status body) or, with `gone_as_event`, as an ERROR event of code 410 in
  a 200 stream, as the API server does for a watch already under way;
- `cut_watches()`: every open watch connection is closed in the middle of a chunk;
- `failures[kind] = N`: its next N requests are answered 500 Internal Server Error.
One resourceVersion counter for every kind, as etcd's. Every request is logged
(`requests`) so that a test can tell a list from a watch.
"""
import copy
import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

PATHS = {"/api/v1/services": ("Service", "ServiceList", "v1"),
         "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSlice", "EndpointSliceList",
                                                      "discovery.k8s.io/v1"),
         "/api/v1/nodes": ("Node", "NodeList", "v1")}
KIND_PATH = {kind: path for path, (kind, _, _) in PATHS.items()}


class FakeKubeApi:
    def __init__(self) -> None:
        self.version = 100
        self.objects: Dict[str, Dict[str, dict]] = {k: {} for k, _, _ in PATHS.values()}
        self.history: List[Tuple[int, str, str, dict]] = []    # (rv, kind, type, object)
        self.oldest = 0                 # resourceVersions below this are gone (410)
        self.gone_as_event = False
        self.failures: Dict[str, int] = {}  # kind -> how many of its requests fail
        self.requests: List[Tuple[str, dict]] = []
        self._snapshots: Dict[str, tuple] = {}  # continue token -> (rv, items, offset)
        self._changed = threading.Condition()
        self._cut = 0                   # generation: watches of an older one are cut
        self._bookmarks = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> "FakeKubeApi":
        self._thread.start()
        return self

    def close(self) -> None:
        self.cut_watches()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def kubeconfig(self, path: str) -> str:
        with open(path, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                       "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                       "users": [{"name": "kp", "user": {"token": "fake-token"}}],
                       "contexts": [{"name": "fake", "context": {"cluster": "fake",
                                                                 "user": "kp"}}]}, f)
        return path

    # -- changing the cluster ----------------------------------------------------------

    def put(self, obj: dict) -> int:
        """Create or replace an object (its kind says which); returns its resourceVersion."""
        kind = obj["kind"]
        key = _key(obj)
        with self._changed:
            self.version += 1
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
            event = "MODIFIED" if key in self.objects[kind] else "ADDED"
            self.objects[kind][key] = obj
            self.history.append((self.version, kind, event, obj))
            self._changed.notify_all()
            return self.version

    def delete(self, kind: str, key: str) -> None:
        with self._changed:
            self.version += 1
            obj = copy.deepcopy(self.objects[kind].pop(key))
            obj["metadata"]["resourceVersion"] = str(self.version)
            self.history.append((self.version, kind, "DELETED", obj))
            self._changed.notify_all()

    def compact(self) -> None:
        """Forget the history: every resourceVersion before now is too old (410)."""
        with self._changed:
            self.version += 1
            self.oldest = self.version
            self.history = []
            self._changed.notify_all()

    def cut_watches(self) -> None:
        with self._changed:
            self._cut += 1
            self._changed.notify_all()

    def bookmark(self) -> None:
        with self._changed:
            self.version += 1
            self._bookmarks += 1
            self._changed.notify_all()

    def lists(self, kind: Optional[str] = None) -> int:
        """How many lists (not watches; a list's later pages not counted) were made."""
        return sum(1 for path, query in self.requests if "watch" not in query
                   and "continue" not in query and (kind is None or path == KIND_PATH[kind]))

    def watches(self, kind: str) -> List[dict]:
        return [query for path, query in self.requests
                if "watch" in query and path == KIND_PATH[kind]]


def _key(obj: dict) -> str:
    metadata = obj["metadata"]
    return f"{metadata['namespace']}/{metadata['name']}" if metadata.get(
        "namespace") else metadata["name"]


def _handler(api: FakeKubeApi):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True     # each event goes out as it is written

        def log_message(self, *args) -> None:
            pass

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):     # a client that went
                pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            api.requests.append((url.path, query))
            kind = PATHS.get(url.path, ("",))[0]
            with api._changed:
                failing = api.failures.get(kind, 0) > 0
                if failing:
                    api.failures[kind] -= 1
            if failing:
                return self._json(500, _status(500, "InternalError", "the fake is failing"))
            if url.path not in PATHS:
                return self._json(404, _status(404, "NotFound", f"{url.path} not found"))
            if query.get("watch") in ("true", "1"):
                return self._watch(PATHS[url.path], query)
            kind, list_kind, version = PATHS[url.path]
            with api._changed:
                token = query.get("continue")
                if token and token not in api._snapshots:
                    return self._json(410, _status(410, "Expired", "continue token expired"))
                if token:
                    at, items, offset = api._snapshots.pop(token)
                else:
                    items = [copy.deepcopy(o) for _, o in sorted(api.objects[kind].items())]
                    for item in items:      # a List's items carry no kind
                        item.pop("kind", None)
                        item.pop("apiVersion", None)
                    at, offset = api.version, 0
                limit = int(query.get("limit") or 0) or len(items)
                page = items[offset:offset + limit]
                metadata = {"resourceVersion": str(at)}
                if offset + limit < len(items):
                    token = f"{kind}-{at}-{offset + limit}-{len(api._snapshots)}"
                    api._snapshots[token] = (at, items, offset + limit)
                    metadata["continue"] = token
                body = {"kind": list_kind, "apiVersion": version, "metadata": metadata,
                        "items": page}
            self._json(200, body)

        def _json(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, event: dict) -> None:
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _watch(self, what, query: dict) -> None:
            kind, _, version = what
            since = int(query.get("resourceVersion") or 0)
            deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
            bookmarks = query.get("allowWatchBookmarks") == "true"
            with api._changed:
                too_old = since < api.oldest
                cut, marks = api._cut, api._bookmarks
            if too_old and not api.gone_as_event:
                return self._json(410, _status(410, "Expired",
                                               f"too old resource version: {since}"))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if too_old:
                self._chunk({"type": "ERROR", "object": _status(
                    410, "Expired", f"too old resource version: {since}")})
                return self._end()
            sent = since
            while True:
                with api._changed:
                    while True:
                        new = [h for h in api.history if h[0] > sent and h[1] == kind]
                        left = deadline - time.monotonic()
                        if new or api._cut != cut or left <= 0 or (
                                bookmarks and api._bookmarks != marks):
                            break
                        api._changed.wait(min(left, 0.2))
                    if api._cut != cut:
                        # in the middle of a chunk: a size, half the data, then close
                        try:
                            self.wfile.write(b"40\r\n{\"type\": \"MODI")
                            self.wfile.flush()
                            self.connection.shutdown(socket.SHUT_RDWR)
                        except OSError:     # the client went first
                            pass
                        self.close_connection = True
                        return
                    mark = bookmarks and api._bookmarks != marks
                    marks, current = api._bookmarks, api.version
                for rv, _, event_type, obj in new:
                    self._chunk({"type": event_type, "object": obj})
                    sent = rv
                if mark:
                    self._chunk({"type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": version,
                        "metadata": {"resourceVersion": str(current)}}})
                    sent = max(sent, current)
                if not new and not mark and time.monotonic() >= deadline:
                    return self._end()

        def _end(self) -> None:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
