"""`ku`: the kube-proxy command line, a plain HTTP client of kp_app's REST API.

It imports neither Ryu nor eventlet nor any kp_app module that does, so it starts fast
and runs anywhere that can reach the API. Exit status: 0 done, 1 the API refused the
command or could not be reached (or its file could not be read), 2 the line is not a ku
command (nothing was sent).
Errors are one line on stderr: "ku: <field>: <why>".
"""
import json
import os
import sys
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence

from kp_app import cli_tables
from kp_app.cli_syntax import DEFAULT_API, USAGE, Call, Command, UsageError, parse, split_options

TIMEOUT_S = 10.0
EXIT_API_ERROR = 1
EXIT_USAGE = 2


class ApiError(Exception):
    """The API answered with an error or could not be reached, or the command's file
    could not be read."""


def _error_text(status: int, reason: str, raw: bytes, url: str) -> str:
    try:
        body = json.loads(raw.decode("utf-8"))
        message = body["error"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        # Not our API's JSON (a proxy, another server on that port): say who answered.
        return f"HTTP {status} {reason} from {url}"
    field = body.get("field")
    return f"{field}: {message}" if field else str(message)


TOKEN_FILE_ENV = "KP_TOKEN_FILE"


def read_token(path: str) -> str:
    """The bearer token in a file (--token-file, $KP_TOKEN_FILE)."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ApiError(f"{path}: {getattr(error, 'strerror', None) or error}") from None
    if not token:
        raise ApiError(f"{path}: the token file is empty")
    return token


def request(api: str, call: Call, token: Optional[str] = None) -> Any:
    """Sends one call; returns the decoded JSON answer (None for 204)."""
    # Imported here, not at the top: usage errors and --help need no HTTP machinery.
    import urllib.error
    import urllib.request

    url = api.rstrip("/") + call.path
    # default=str: YAML reads an unquoted timestamp as a datetime, which JSON has not
    data = None if call.body is None else json.dumps(call.body, default=str).encode("utf-8")
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=call.method, headers=headers)
    # The controller is usually on this node: a proxy configured for the outside world
    # (http_proxy) must not intercept it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=TIMEOUT_S) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        raise ApiError(_error_text(error.code, error.reason, error.read(), url)) from None
    except urllib.error.URLError as error:
        reason = getattr(error.reason, "strerror", None) or error.reason
        raise ApiError(f"cannot reach the API at {api}: {reason}") from None
    except (TimeoutError, OSError) as error:
        raise ApiError(f"cannot reach the API at {api}: {error}") from None
    if not raw.strip():
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(f"{url} answered with something that is not JSON") from None


def read_manifest(path: str) -> Dict[str, Any]:
    """A file (or stdin for "-") of YAML or JSON documents, as one Kubernetes List."""
    import yaml   # only here: the other commands need no YAML

    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, UnicodeDecodeError) as error:
        raise ApiError(f"{path}: {getattr(error, 'strerror', None) or error}") from None
    except yaml.YAMLError as error:
        raise ApiError(f"{path}: not YAML or JSON ({' '.join(str(error).split())})") from None
    return {"apiVersion": "v1", "kind": "List", "items": documents}


def render(command: Command, answers: Dict[str, Any]) -> str:
    """The human text for a command's answers."""
    first = next(iter(answers.values()))
    if command.view == "show":
        return cli_tables.show(answers)
    if command.view == "vips":   # every VIP (a list), or one
        return cli_tables.vips(first if isinstance(first, list) else [first],
                               verbose=command.verbose)
    if command.view == "deleted":
        return cli_tables.deleted(command.subject)
    return getattr(cli_tables, command.view)(first)


def render_json(answers: Dict[str, Any]) -> Optional[str]:
    """The answer as the API gave it; several answers (ku show) as one object by name."""
    if len(answers) > 1:
        return json.dumps(answers, indent=2)
    answer = next(iter(answers.values()))
    return None if answer is None else json.dumps(answer, indent=2)


def emit(text: str) -> None:
    """Writes to stdout; a reader that stopped early (`ku show | head`) is not an error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it at null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    try:
        options = split_options(args)
        if options.help:
            emit(USAGE)
            return 0
        command = parse(options.words)
    except UsageError as error:
        print(f"ku: {error}", file=sys.stderr)
        return EXIT_USAGE
    api = options.api or os.environ.get("KP_API") or DEFAULT_API
    if not api.startswith(("http://", "https://")):
        print(f"ku: KP_API: {api!r} is not an http:// or https:// URL", file=sys.stderr)
        return EXIT_USAGE
    token_file = options.token_file or os.environ.get(TOKEN_FILE_ENV) or None
    try:
        token = read_token(token_file) if token_file else None
        if command.manifest is not None:
            body = read_manifest(command.manifest)
            command = replace(command, calls=tuple((name, replace(call, body=body))
                                                   for name, call in command.calls))
        answers = {name: request(api, call, token) for name, call in command.calls}
    except ApiError as error:
        print(f"ku: {error}", file=sys.stderr)
        return EXIT_API_ERROR
    text = render_json(answers) if options.json else render(command, answers)
    if text:
        emit(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
