"""The REST API: JSON over Ryu's WSGI (webob + Routes), everything under /v1.

Each handler parses its request (path, query, JSON body), calls one method of the
service (`kp_app.kubeproxy.KubeProxy`, see docs/service-api.md) and returns its answer
as JSON. There is no logic here: the service validates values and is the one source of
truth for them. This layer only checks the *shape* of a body (it is a JSON object, no
unknown keys, each value has the JSON type the service expects) before calling, so a
malformed request never reaches the model and nothing changes on error.

Errors are always JSON: {"error": "<why>", "field": "<which field>"} (the field when one
is to blame), with 400 for bad input, 404 for an unknown resource, 405 for a method a
path does not allow (with an Allow header), 409 for a duplicate. docs/openapi.yaml
describes every route.

Before any handler runs, `AccessPolicy.check` decides whether the request may be served
at all (issue #13: a web page could POST text/plain to /v1/kubernetes/apply?prune=true,
and DNS rebinding reached the API from a browser): 403 for a Host or Origin that is not
an address the API listens on, 401 without the bearer token when one is configured
(--auth-token-file), 415 for a body that is not application/json, 413 for a body over
MAX_BODY_BYTES; a body nested deeper than MAX_JSON_DEPTH is a 400.

Ryu's `WSGIApplication.register` connects a controller's routes in the alphabetical
order of its method names, and Routes returns the first route that matches; so the
405/404 fallbacks are connected by `register` below, after all real routes.

(Over 500 lines: the route table of the whole API, each route with the shape check of
its body, read against docs/openapi.yaml, which a test holds it to route by route.)
"""
import functools
import hmac
import ipaddress
import json
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ryu.app.wsgi import ControllerBase, Response, WSGIApplication, route

from kp_app import health, metrics
from kp_app.errors import InvalidInput, KpError

LOG = logging.getLogger("kp_app.rest")

API = "/v1"
# A VIP is (prefix, port); the prefix takes two path segments, "<address>/<length>".
# Address and length are left loose ([^/]+ also matches "fd00:96::10") so that a
# malformed prefix reaches the service and gets its precise 400 instead of a bare "no
# such route"; the port must be digits so that ".../pods" is never read as a port.
_VIP_REQ = {"addr": r"[^/]+", "plen": r"[^/]+", "port": r"\d+"}
VIP_NOPORT = API + "/vips/{addr}/{plen}"
VIP = API + "/vips/{addr}/{plen}/{port}"

# JSON types as the service wants them. bool is a subclass of int in Python, so it is
# excluded from "integer" explicitly.
_INT = "integer"
_STR = "string"
_BOOL = "boolean"
_STR_LIST = "list of strings"
Spec = Dict[str, Tuple[str, bool]]  # field -> (JSON type, null allowed)


def _type_ok(value: Any, kind: str) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind == _BOOL:
        return isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _json_type(value: Any) -> str:
    for kind, names in ((bool, "boolean"), (int, "integer"), (float, "number"),
                        (str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return names
    return "null"


def check_fields(body: Dict[str, Any], spec: Spec, required: Iterable[str] = ()) -> Dict[str, Any]:
    """`body` if it has only the fields of `spec`, each of its type; else InvalidInput."""
    for name in body:
        if name not in spec:
            raise InvalidInput(f"unknown field (expected one of {', '.join(spec)})", name)
    for name in required:
        if name not in body:
            raise InvalidInput("is required", name)
    for name, value in body.items():
        kind, nullable = spec[name]
        if value is None and nullable:
            continue
        if not _type_ok(value, kind):
            raise InvalidInput(f"expected {'an' if kind == _INT else 'a'} {kind}"
                               f"{' or null' if nullable else ''}, got {_json_type(value)}",
                               name)
    return body


# -- who may call, with what ------------------------------------------------------------

MAX_BODY_BYTES = 8 << 20   # a Kubernetes List of a few thousand Services fits
MAX_JSON_DEPTH = 64        # a Kubernetes List nests about 10 deep
JSON_MEDIA_TYPE = "application/json"
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
LOOPBACK_NAMES = ("localhost",)


class Forbidden(KpError):
    status = 403


class Unauthorized(KpError):
    status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="kp"'}


class TooLarge(KpError):
    status = 413


class UnsupportedMediaType(KpError):
    status = 415


def _host_ip(name: str) -> Optional[Any]:
    """The address of a Host name that is an IP literal ("10.0.0.1", "[fd00::1]")."""
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _split_host(value: str) -> Tuple[str, Optional[str]]:
    """("name", "port" or None) of a Host header value."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        rest = value[end + 1:]
        return value[:end + 1], (rest[1:] if rest.startswith(":") else None)
    name, sep, port = value.rpartition(":")
    return (name, port) if sep else (value, None)


class AccessPolicy:
    """Which requests the API serves.

    - Host (and Origin, when a browser sends one) must name the API by an address it
      listens on, with the port the request came in on: an IP literal, or localhost
      when it listens on loopback.  When it listens on every address (--wsapi-host
      0.0.0.0), any IP literal.  Names that DNS resolves are refused: that is what DNS
      rebinding sends.
    - With a token, every request carries `Authorization: Bearer <token>`.
    - A POST, and any request with a body, says Content-Type: application/json: the
      types a web page may send without asking (text/plain, forms) are refused.
    """

    def __init__(self, listen_host: str = "127.0.0.1", token: Optional[str] = None) -> None:
        self.listen_host = listen_host
        self.token = token.encode("utf-8") if token else None

    @classmethod
    def from_ryu_conf(cls) -> "AccessPolicy":
        """The policy for ryu-manager's --wsapi-host and kp_app's --auth-token-file."""
        from ryu import cfg
        conf = cfg.CONF
        path = getattr(conf, "auth_token_file", None)
        return cls(conf.wsapi_host, read_token_file(path) if path else None)

    def _host_ok(self, value: str, port: str) -> bool:
        name, given_port = _split_host(value.strip().lower())
        if given_port is None:
            given_port = "80"
        if given_port != port:
            return False
        ip = _host_ip(name)
        if self.listen_host in WILDCARD_HOSTS:
            return ip is not None or name in LOOPBACK_NAMES
        listen = _host_ip(self.listen_host)
        if listen is None and self.listen_host.lower() in LOOPBACK_NAMES:
            listen = ipaddress.ip_address("127.0.0.1")
        if listen is None:   # another name given to --wsapi-host: only that name
            return name == self.listen_host.lower()
        if listen.is_loopback:
            return name in LOOPBACK_NAMES or (ip is not None and ip.is_loopback)
        return ip == listen

    def check(self, req) -> None:
        """Raises the KpError a request is refused with (nothing is read or changed)."""
        port = str(req.environ.get("SERVER_PORT", ""))
        host = req.environ.get("HTTP_HOST")
        if host is None or not self._host_ok(host, port):
            raise Forbidden(f"Host {host!r} is not an address this API listens on", "Host")
        origin = req.environ.get("HTTP_ORIGIN")
        if origin is not None:
            scheme, sep, rest = origin.partition("://")
            if not sep or scheme.lower() not in ("http", "https") or not self._host_ok(rest, port):
                raise Forbidden(f"Origin {origin!r} is not this API", "Origin")
        if self.token is not None:
            auth = req.environ.get("HTTP_AUTHORIZATION", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    given.strip().encode("utf-8"), self.token):
                raise Unauthorized("a valid bearer token is required (ku --token-file)",
                                   "Authorization")
        length = req.content_length
        has_body = bool(length) or "chunked" in req.environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if req.method == "POST" or has_body:
            media = (req.content_type or "").split(";")[0].strip().lower()
            if media != JSON_MEDIA_TYPE:
                raise UnsupportedMediaType(
                    f"Content-Type must be {JSON_MEDIA_TYPE}, not {media or 'missing'!r}",
                    "Content-Type")
        if length is not None and length > MAX_BODY_BYTES:
            raise TooLarge(f"a body of {length} bytes; at most {MAX_BODY_BYTES}", "body")


def read_token_file(path: str) -> str:
    """The token in a file (surrounding whitespace dropped); ValueError when empty."""
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"{path}: the token file is empty")
    return token


def _read_body(req) -> bytes:
    """The body, at most MAX_BODY_BYTES of it (also without a Content-Length)."""
    if req.content_length is not None:
        return req.body
    if not req.is_body_readable:
        return b""
    raw = req.body_file_raw.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise TooLarge(f"a body over {MAX_BODY_BYTES} bytes", "body")
    return raw


def _json_depth_ok(value: Any) -> bool:
    """Is `value` nested at most MAX_JSON_DEPTH arrays/objects deep? (iterative)"""
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return False
            todo.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return True


def parse_body(req, optional: bool = False) -> Dict[str, Any]:
    """The request's JSON object ({} if `optional` and the body is empty)."""
    raw = _read_body(req)
    if not raw.strip():
        if optional:
            return {}
        raise InvalidInput("a JSON object is required", "body")
    too_deep = InvalidInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", "body")
    try:
        body = json.loads(raw.decode("utf-8"))
    except RecursionError:  # deeper than the interpreter's stack: deeper than the cap
        raise too_deep from None
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidInput(f"invalid JSON ({error})", "body") from None
    if not _json_depth_ok(body):
        raise too_deep
    if not isinstance(body, dict):
        raise InvalidInput(f"expected a JSON object, got {_json_type(body)}", "body")
    return body


def parse_query(req, allowed: Dict[str, str], repeatable: Iterable[str] = ()) -> Dict[str, Any]:
    """Query parameters as {name: int|str|bool|[str]} after checking names and syntax."""
    out: Dict[str, Any] = {}
    for name, text in req.GET.items():
        if name not in allowed:
            raise InvalidInput(f"unknown query parameter (expected one of "
                               f"{', '.join(allowed)})", name)
        if name in repeatable:
            out.setdefault(name, []).append(text)
            continue
        if name in out:
            raise InvalidInput("given twice", name)
        out[name] = _query_value(name, text, allowed[name])
    return out


def _query_value(name: str, text: str, kind: str) -> Any:
    if kind == _INT:
        try:
            return int(text, 10)
        except ValueError:
            raise InvalidInput(f"{text!r} is not an integer", name) from None
    if kind == _BOOL:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise InvalidInput(f"{text!r} is not a boolean (true or false)", name)
    return text


def json_response(status: int, value: Any = None,
                  headers: Optional[Dict[str, str]] = None) -> Response:
    if status == 204:
        return Response(status=204, headerlist=list((headers or {}).items()))
    body = json.dumps(value, indent=2) + "\n"
    response = Response(status=status, content_type="application/json",
                        body=body.encode("utf-8"))
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _api(handler: Callable) -> Callable:
    """Turns a handler's KpError into its JSON status, and any other exception into a
    JSON 500 (logged), so that clients always get JSON back."""
    @functools.wraps(handler)
    def wrapped(self, req, **kwargs):
        try:
            self.policy.check(req)
            return handler(self, req, **kwargs)
        except KpError as error:
            return json_response(error.status, error.to_dict(), getattr(error, "headers", None))
        except Exception as error:  # a bug: say so, keep serving
            LOG.exception("REST %s %s failed", req.method, req.path)
            return json_response(500, {"error": f"internal error: {type(error).__name__}: "
                                                f"{error}"})
    return wrapped


def _prefix(addr: str, plen: str) -> str:
    return f"{addr}/{plen}"


def _port(port: Optional[str]) -> Optional[int]:
    # The route only lets digits through.
    return None if port is None else int(port)


CONF_SPEC: Spec = {"buckets": (_INT, False), "timeout": (_INT, False),
                   "udp_timeout": (_INT, False), "tcp_close_wait": (_INT, False),
                   "node_ip": (_STR, False), "node_ip6": (_STR, False),
                   "dpid": (_INT, False)}
VIP_SPEC: Spec = {"prefix": (_STR, False), "port": (_INT, False),
                  "target_port": (_INT, True), "node_port": (_INT, True),
                  "protocol": (_STR, False), "nat": (_STR, True),
                  "new_len": (_INT, False), "external_ips": (_STR_LIST, False),
                  "affinity_timeout": (_INT, False), "external_policy": (_STR, False),
                  "internal_policy": (_STR, False), "source_ranges": (_STR_LIST, False)}
PODS_ADD_SPEC: Spec = {"addresses": (_STR_LIST, False)}
PODS_DEL_SPEC: Spec = {"addresses": (_STR_LIST, False), "flush": (_BOOL, False)}
SESSIONS_QUERY = {"limit": _INT, "prefix": _STR, "port": _INT}
PODS_DEL_QUERY = {"address": _STR, "flush": _BOOL}
APPLY_QUERY = {"prune": _BOOL, "wait": _BOOL}


class KpRestController(ControllerBase):
    """The /v1 routes; `data` is {"service": KubeProxy, "policy": AccessPolicy} (see
    `register`)."""

    def __init__(self, req, link, data, **config) -> None:
        super().__init__(req, link, data, **config)
        self.service = data["service"]
        self.policy = data["policy"]

    # -- conf -------------------------------------------------------------------------

    @route("kp_conf_get", API + "/conf", methods=["GET"])
    @_api
    def conf_get(self, req, **_):
        return json_response(200, self.service.conf())

    @route("kp_conf_put", API + "/conf", methods=["PUT"])
    @_api
    def conf_put(self, req, **_):
        body = check_fields(parse_body(req), CONF_SPEC)
        return json_response(200, self.service.set_conf(**body))

    # -- VIPs -------------------------------------------------------------------------

    @route("kp_vips_get", API + "/vips", methods=["GET"])
    @_api
    def vips_get(self, req, **_):
        return json_response(200, self.service.vips())

    @route("kp_vips_post", API + "/vips", methods=["POST"])
    @_api
    def vips_post(self, req, **_):
        body = check_fields(parse_body(req), VIP_SPEC, required=["prefix"])
        vip = self.service.add_vip(**body)
        location = f"{API}/vips/{vip['prefix']}/{vip['port']}"
        return json_response(201, vip, {"Location": location})

    @route("kp_vip_get", VIP, methods=["GET"], requirements=_VIP_REQ)
    @_api
    def vip_get(self, req, addr, plen, port, **_):
        return json_response(200, self.service.vip(_prefix(addr, plen), _port(port)))

    @route("kp_vip_noport_get", VIP_NOPORT, methods=["GET"], requirements=_VIP_REQ)
    @_api
    def vip_noport_get(self, req, addr, plen, **_):
        return json_response(200, self.service.vip(_prefix(addr, plen), None))

    @route("kp_vip_delete", VIP, methods=["DELETE"], requirements=_VIP_REQ)
    @_api
    def vip_delete(self, req, addr, plen, port, **_):
        self.service.del_vip(_prefix(addr, plen), _port(port))
        return json_response(204)

    @route("kp_vip_noport_delete", VIP_NOPORT, methods=["DELETE"], requirements=_VIP_REQ)
    @_api
    def vip_noport_delete(self, req, addr, plen, **_):
        self.service.del_vip(_prefix(addr, plen), None)
        return json_response(204)

    # -- pods -------------------------------------------------------------------------

    def _add_pods(self, req, addr: str, plen: str, port: Optional[str]):
        body = check_fields(parse_body(req), PODS_ADD_SPEC, required=["addresses"])
        return json_response(200, self.service.add_pods(
            _prefix(addr, plen), _port(port), body["addresses"]))

    def _del_pods(self, req, addr: str, plen: str, port: Optional[str]):
        # DELETE bodies are legal but some clients cannot send one: the same fields are
        # accepted as a query (?address=..&address=..&flush=true) when the body is empty.
        body = check_fields(parse_body(req, optional=True), PODS_DEL_SPEC)
        if not body:
            query = parse_query(req, PODS_DEL_QUERY, repeatable=["address"])
            body = {"addresses": query.get("address", []), "flush": query.get("flush", False)}
        elif req.GET:
            raise InvalidInput("give the pods in the body or in the query, not both",
                               next(iter(req.GET)))
        if "addresses" not in body:
            raise InvalidInput("is required", "addresses")
        return json_response(200, self.service.del_pods(
            _prefix(addr, plen), _port(port), body["addresses"],
            flush=body.get("flush", False)))

    @route("kp_pods_post", VIP + "/pods", methods=["POST"], requirements=_VIP_REQ)
    @_api
    def pods_post(self, req, addr, plen, port, **_):
        return self._add_pods(req, addr, plen, port)

    @route("kp_pods_noport_post", VIP_NOPORT + "/pods", methods=["POST"],
           requirements=_VIP_REQ)
    @_api
    def pods_noport_post(self, req, addr, plen, **_):
        return self._add_pods(req, addr, plen, None)

    @route("kp_pods_delete", VIP + "/pods", methods=["DELETE"], requirements=_VIP_REQ)
    @_api
    def pods_delete(self, req, addr, plen, port, **_):
        return self._del_pods(req, addr, plen, port)

    @route("kp_pods_noport_delete", VIP_NOPORT + "/pods", methods=["DELETE"],
           requirements=_VIP_REQ)
    @_api
    def pods_noport_delete(self, req, addr, plen, **_):
        return self._del_pods(req, addr, plen, None)

    # -- Kubernetes Services ------------------------------------------------------------
    # The body is Kubernetes objects as JSON: one object, a List (`kubectl get svc,
    # endpointslices -o json`), or {"items": [...]}; kp_app.kubernetes checks them.
    # apply?prune=true also deletes the applied Services the body does not have.

    @route("kp_kubernetes_get", API + "/kubernetes/services", methods=["GET"])
    @_api
    def kubernetes_get(self, req, **_):
        return json_response(200, self.service.kubernetes_services())

    @route("kp_kubernetes_apply", API + "/kubernetes/apply", methods=["POST"])
    @_api
    def kubernetes_apply(self, req, **_):
        query = parse_query(req, APPLY_QUERY)
        if query.pop("wait", True):
            return json_response(200, self.service.apply_kubernetes(parse_body(req), **query))
        return json_response(202, self.service.apply_kubernetes_job(parse_body(req), **query))

    @route("kp_job_get", API + "/jobs/{job_id}", methods=["GET"], requirements={"job_id": r"\d+"})
    @_api
    def job_get(self, req, job_id, **_):
        return json_response(200, self.service.job(int(job_id)))

    @route("kp_kubernetes_delete", API + "/kubernetes/delete", methods=["POST"])
    @_api
    def kubernetes_delete(self, req, **_):
        return json_response(200, self.service.delete_kubernetes(parse_body(req)))

    # -- SNAT interfaces --------------------------------------------------------------

    @route("kp_interfaces_get", API + "/interfaces", methods=["GET"])
    @_api
    def interfaces_get(self, req, **_):
        return json_response(200, self.service.interfaces())

    @route("kp_interface_put", API + "/interfaces/{nat}/{name}", methods=["PUT"])
    @_api
    def interface_put(self, req, nat, name, **_):
        return json_response(200, self.service.set_interface(nat, name))

    @route("kp_interface_delete", API + "/interfaces/{nat}/{name}", methods=["DELETE"])
    @_api
    def interface_delete(self, req, nat, name, **_):
        return json_response(200, self.service.set_interface(nat, name, delete=True))

    # -- monitoring -------------------------------------------------------------------

    @route("kp_sessions_get", API + "/sessions", methods=["GET"])
    @_api
    def sessions_get(self, req, **_):
        return json_response(200, self.service.sessions(**parse_query(req, SESSIONS_QUERY)))

    @route("kp_counters_get", API + "/counters", methods=["GET"])
    @_api
    def counters_get(self, req, **_):
        return json_response(200, self.service.counters())

    @route("kp_show_get", API + "/show", methods=["GET"])
    @_api
    def show_get(self, req, **_):
        return json_response(200, self.service.show())

    # -- operations: what the health and metrics listeners serve, behind this API's
    # access policy (its token), for a scraper that can only reach the API

    @route("kp_metrics_get", API + "/metrics", methods=["GET"])
    @_api
    def metrics_get(self, req, **_):
        body, content_type = metrics.text(self.service, req.headers.get("Accept", ""))
        return Response(status=200, content_type=content_type.split(";")[0],
                        charset="utf-8", body=body)

    @route("kp_healthz_get", API + "/healthz", methods=["GET"])
    @_api
    def healthz_get(self, req, **_):
        status, headers, body = health.proxy_health(self.service.syncs, "/healthz")
        return Response(status=status, headerlist=headers, body=body)


class KpFallbackController(ControllerBase):
    """Answers, in JSON, what Routes alone would answer with an empty 404: a known path
    with a method it does not allow (405 + Allow), and an unknown path under /v1 (404)."""

    def method_not_allowed(self, req, allow: str, **_):
        return json_response(405, {"error": f"{req.method} is not allowed on {req.path} "
                                            f"(allowed: {allow})"}, {"Allow": allow})

    def not_found(self, req, **_):
        return json_response(404, {"error": f"no such resource: {req.path}"})


def _allowed_methods() -> List[Tuple[str, Dict[str, str], str]]:
    """(path, requirements, "GET, PUT") for each path of KpRestController, in order."""
    paths: Dict[str, Tuple[Dict[str, str], List[str]]] = {}
    for attr in vars(KpRestController).values():
        info = getattr(attr, "routing_info", None)
        if info:
            entry = paths.setdefault(info["path"], (info["requirements"] or {}, []))
            entry[1].extend(info["methods"])
    return [(path, req, ", ".join(sorted(methods))) for path, (req, methods) in paths.items()]


def register(wsgi_app: WSGIApplication, service, policy: Optional[AccessPolicy] = None) -> None:
    """Serve the /v1 API of `service` (a KubeProxy) on Ryu's WSGI application, to the
    requests `policy` allows (default: from ryu-manager's configuration)."""
    if policy is None:
        policy = AccessPolicy.from_ryu_conf()
    wsgi_app.register(KpRestController, {"service": service, "policy": policy})
    # After every real route (first match wins): a known path with another method ...
    for index, (path, requirements, allow) in enumerate(_allowed_methods()):
        wsgi_app.mapper.connect(f"kp_405_{index}", path, controller=KpFallbackController,
                                action="method_not_allowed", requirements=requirements,
                                allow=allow)
    # ... and anything else under /v1.
    wsgi_app.mapper.connect("kp_404", API + "{rest:(/.*)?}", controller=KpFallbackController,
                            action="not_found")
