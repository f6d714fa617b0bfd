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
# The request that starts an apply job reads and checks the whole manifest before it
# answers (10,000 Services: a few seconds); the job then goes on, followed by polls.
JOB_START_TIMEOUT_S = 120.0
JOB_POLL_S = 0.25
JOB_UNREACHABLE_S = 30.0     # polls that fail this long: stop following, say so
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


def request(api: str, call: Call, token: Optional[str] = None,
            timeout: float = TIMEOUT_S) -> Any:
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
        with opener.open(req, timeout=timeout) as response:
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


def follow_job(api: str, job: Dict[str, Any], token: Optional[str],
               progress=None) -> Dict[str, Any]:
    """Polls an apply job until it ends; its report. `progress(done, total)` is told
    how far it got. A job that failed raises ApiError with its error; polls that cannot
    reach the API for JOB_UNREACHABLE_S raise ApiError saying the job may go on."""
    import time

    path = f"/v1/jobs/{job['job']}"
    unreachable_since = None
    while job.get("state") == "running":
        if progress is not None:
            progress(job.get("done", 0), job.get("total", 0))
        time.sleep(JOB_POLL_S)
        try:
            job = request(api, Call("GET", path), token)
            unreachable_since = None
        except ApiError as error:
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            if now - unreachable_since > JOB_UNREACHABLE_S:
                raise ApiError(f"{error} (the apply may still be going on: "
                               f"GET {path} tells how it ended)") from None
    if job.get("state") != "done":
        error = job.get("error") or {}
        field = error.get("field")
        message = error.get("error", f"the apply ended {job.get('state')!r}")
        raise ApiError(f"{field}: {message}" if field else message)
    return job["result"]


def _progress_line(done: int, total: int) -> None:
    """On a terminal, one line that a long apply rewrites as it goes."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\rku: applying: {done}/{total} changes")
        sys.stderr.flush()


def _json_documents(text: str) -> Optional[List[Any]]:
    """The document when it is one JSON value (`kubectl get -o json`): read as JSON,
    which is YAML, 20 times faster than the YAML reader; None otherwise."""
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return [value] if value is not None else []


def read_manifest(path: str) -> Dict[str, Any]:
    """A file (or stdin for "-") of YAML or JSON documents, as one Kubernetes List."""
    import yaml   # only here: the other commands need no YAML

    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        documents = _json_documents(text)
        if documents is None:
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
        answers = {}
        for name, call in command.calls:
            if call.job:     # an apply job: followed to its report
                job = request(api, call, token, timeout=JOB_START_TIMEOUT_S)
                answers[name] = follow_job(api, job, token, _progress_line)
                if sys.stderr.isatty():
                    sys.stderr.write("\n")
            else:
                answers[name] = request(api, call, token)
    except ApiError as error:
        print(f"ku: {error}", file=sys.stderr)
        return EXIT_API_ERROR
    text = render_json(answers) if options.json else render(command, answers)
    if text:
        emit(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
