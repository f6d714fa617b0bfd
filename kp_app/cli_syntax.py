"""The `ku` command line, read into the REST calls it stands for.

The syntax is the seed's (`kube-proxy` spelled `ku`). This module checks only the form
of a line: known keywords, a value after each keyword that takes one, integers where a
number is expected, `<address>/<length>` where a prefix is expected. Whether a value is
acceptable (a port in 0-65535, a pod of the VIP's family, a power of 2) is the API's
business, so that there is one source of truth for it; an out-of-range number therefore
travels to the API and comes back as its 400.

Pure: no I/O, no HTTP; `kp_app.cli` does that. Importing this module must stay cheap.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote, urlencode

DEFAULT_API = "http://127.0.0.1:8080"

USAGE = """\
usage: ku [--api URL] [--token-file FILE] [--json] <command>

  ku conf [buckets <n>] [timeout <s>] [udp_timeout <s>] [tcp_close_wait <s>]
          [node_ip <v4>] [node_ip6 <v6>] [dpid <n>]
  ku vip <prefix> [protocol tcp|udp|sctp|any] [port <n>] [target_port <n>] [node_port <n>]
         [nat44|nat66] [new_len <n>] [external_ip <addr>]... [source_range <prefix>]...
         [affinity_timeout <s>] [external_policy cluster|local]
         [internal_policy cluster|local] [del]
  ku pod <vip-prefix> [port <n>] <address>... [del [flush]]
  ku set interface nat4|nat6 in <interface> [del]
  ku show
  ku show vip [<prefix> [port <n>]] [verbose]
  ku show sessions [<vip-prefix> [port <n>]] [limit <n>]
  ku show interfaces
  ku show counters
  ku show services
  ku apply -f <file>|- [prune]
  ku delete -f <file>|-

  --api URL   the controller's REST API (default: $KP_API, else {default})
  --token-file FILE
              send the bearer token in FILE, for a controller started with
              --auth-token-file (default: $KP_TOKEN_FILE, else no token)
  --json      print the API's JSON answer instead of tables (for `ku show`, its three
              answers as {"show": .., "vips": .., "counters": ..})

`timeout <s>` is every session's idle timeout (kube-proxy's
conntrack.tcpEstablishedTimeout) but UDP's with `udp_timeout <s>` (conntrack.udpTimeout)
and closing TCP's with `tcp_close_wait <s>` (conntrack.tcpCloseWaitTimeout; on kp-switch
in lb mode); 0 gives them back timeout's.
`affinity_timeout <s>` is kube-proxy's ClientIP session affinity: a client's new
connections go to the pod of its last one, until <s> seconds pass without one.
`external_policy local` is externalTrafficPolicy Local: clients of the node port and
external IPs reach only the pods of the node they entered, and the pods see them;
`internal_policy local`, internalTrafficPolicy Local, the same for the ClusterIP.
`source_range <prefix>` (loadBalancerSourceRanges): only clients in these prefixes reach
the external IPs.

A VIP without `port` (or `port 0`) takes every port. With `del`, only the prefix and
`port` matter; without `port`, `del` removes the only VIP on that prefix.

`apply -f` reads Kubernetes Services with their Endpoints or EndpointSlices (YAML or
JSON, several documents or a List; `-` is standard input, e.g. from `kubectl get
svc,endpointslices -o yaml`) and gives each Service the VIPs it asks for; applying again
updates them. With `prune`, the file is every Service there is: the applied Services it
does not have are deleted (`kubectl get svc,endpointslices -A -o yaml | ku apply -f -
prune`, run again and again, keeps kp in step with a cluster). `delete -f` removes the
VIPs of the Services named in the file.
""".replace("{default}", DEFAULT_API)


class UsageError(Exception):
    """A line that is not a ku command; the message names the word that is wrong."""


@dataclass(frozen=True)
class Call:
    """One HTTP request to the API (path relative to the API's base URL)."""

    method: str
    path: str
    body: Optional[Dict[str, Any]] = None
    job: bool = False   # it starts a job (kp_app.apply_jobs) that ku follows to its end


@dataclass(frozen=True)
class Command:
    """What a line asks for: the calls to make (named, so `--json` can label several
    answers) and how `kp_app.cli_tables` should print their answers."""

    calls: Tuple[Tuple[str, Call], ...]
    view: str
    verbose: bool = False
    subject: str = ""  # what a delete removed, for its one-line confirmation
    manifest: Optional[str] = None  # a file of Kubernetes objects: the calls' body


@dataclass
class Options:
    words: List[str] = field(default_factory=list)
    api: Optional[str] = None
    token_file: Optional[str] = None
    json: bool = False
    help: bool = False


def split_options(argv: Sequence[str]) -> Options:
    """Takes `--api URL`, `--token-file FILE` (or `--opt=value`), `--json` and
    `-h/--help` from anywhere on the line."""
    options = Options()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--json":
            options.json = True
        elif arg in ("-h", "--help"):
            options.help = True
        elif arg == "--api" or arg.startswith("--api="):
            if arg == "--api":
                if not args:
                    raise UsageError("--api: missing URL")
                url = args.pop(0)
            else:
                url = arg[len("--api="):]
            if not url.startswith(("http://", "https://")):
                raise UsageError(f"--api: {url!r} is not an http:// or https:// URL")
            options.api = url
        elif arg == "--token-file" or arg.startswith("--token-file="):
            if arg == "--token-file":
                if not args:
                    raise UsageError("--token-file: missing file name")
                options.token_file = args.pop(0)
            else:
                options.token_file = arg[len("--token-file="):]
        elif arg.startswith("--"):
            raise UsageError(f"unknown option {arg!r} (expected --api, --token-file, --json, "
                             f"--help)")
        else:
            options.words.append(arg)
    return options


# -- the words of a line ------------------------------------------------------------------


class _Words:
    """The remaining words of a line, with the errors ku reports about them."""

    def __init__(self, command: str, words: Sequence[str]) -> None:
        self.command = command
        self.words = list(words)

    def __bool__(self) -> bool:
        return bool(self.words)

    def peek(self) -> str:
        return self.words[0]

    def next(self) -> str:
        return self.words.pop(0)

    def value(self, keyword: str) -> str:
        if not self.words:
            raise UsageError(f"{keyword}: missing value")
        return self.words.pop(0)

    def integer(self, keyword: str, hex_ok: bool = False) -> int:
        return parse_integer(self.value(keyword), keyword, hex_ok)


def parse_integer(text: str, name: str, hex_ok: bool = False) -> int:
    """A decimal integer (or 0x-hex where `hex_ok`, for datapath ids); the sign is kept so
    that the API, not ku, says "-1 is out of range"."""
    try:
        if hex_ok and text.lower().startswith("0x"):
            return int(text, 16)
        return int(text, 10)
    except ValueError:
        raise UsageError(f"{name}: {text!r} is not an integer") from None


def _set_once(values: Dict[str, Any], name: str, value: Any) -> None:
    if name in values:
        raise UsageError(f"{name}: given twice")
    values[name] = value


def _unknown(command: str, word: str, expected: Sequence[str]) -> UsageError:
    return UsageError(f"{command}: unknown keyword {word!r} (expected {', '.join(expected)})")


def split_prefix(text: str) -> Tuple[str, str]:
    """`<address>/<length>` into its two parts, as they go into a URL path."""
    address, slash, length = text.partition("/")
    if not slash or not address or not length.isdigit():
        raise UsageError(f"prefix: expected <address>/<length>, got {text!r}")
    return address, length


def _segment(text: str) -> str:
    # ":" stays readable (IPv6); anything else odd is escaped so the URL stays valid.
    return quote(text, safe=":")


def vip_path(prefix: str, port: Optional[int]) -> str:
    address, length = split_prefix(prefix)
    path = f"/v1/vips/{_segment(address)}/{_segment(length)}"
    return path if port is None else f"{path}/{port}"


def _prefix_word(command: str, words: _Words, keywords: Sequence[str]) -> str:
    if not words or words.peek() in keywords:
        raise UsageError(f"{command}: missing <prefix>")
    prefix = words.next()
    split_prefix(prefix)
    return prefix


# -- the commands -------------------------------------------------------------------------


def parse(words: Sequence[str]) -> Command:
    """The command a line (without its options) stands for; UsageError if it is none."""
    if not words:
        raise UsageError("missing command (expected conf, vip, pod, set, show, apply, delete; "
                         "see ku --help)")
    name, rest = words[0], _Words(words[0], words[1:])
    parser = _COMMANDS.get(name)
    if parser is None:
        raise UsageError(f"unknown command {name!r} (expected {', '.join(_COMMANDS)})")
    return parser(rest)


_CONF_KEYWORDS = ("buckets", "timeout", "udp_timeout", "tcp_close_wait", "node_ip",
                  "node_ip6", "dpid")


def _conf(words: _Words) -> Command:
    body: Dict[str, Any] = {}
    while words:
        word = words.next()
        if word in ("buckets", "timeout", "udp_timeout", "tcp_close_wait"):
            _set_once(body, word, words.integer(word))
        elif word in ("node_ip", "node_ip6"):
            _set_once(body, word, words.value(word))
        elif word == "dpid":
            _set_once(body, word, words.integer(word, hex_ok=True))
        else:
            raise _unknown("conf", word, _CONF_KEYWORDS)
    if not body:
        return Command((("conf", Call("GET", "/v1/conf")),), "conf")
    return Command((("conf", Call("PUT", "/v1/conf", body)),), "conf")


_VIP_INT_KEYWORDS = ("port", "target_port", "node_port", "new_len", "affinity_timeout")
_NAT_FLAGS = {"nat44": "nat44", "nat66": "nat66", "nat4": "nat44", "nat6": "nat66"}
_VIP_KEYWORDS = ("protocol",) + _VIP_INT_KEYWORDS + ("nat44", "nat66", "external_ip",
                                                     "source_range", "external_policy",
                                                     "internal_policy", "del")


def _vip(words: _Words) -> Command:
    prefix = _prefix_word("vip", words, _VIP_KEYWORDS)
    body: Dict[str, Any] = {"prefix": prefix}
    delete = False
    while words:
        word = words.next()
        if word in _VIP_INT_KEYWORDS:
            _set_once(body, word, words.integer(word))
        elif word in ("protocol", "external_policy", "internal_policy"):
            _set_once(body, word, words.value(word))
        elif word in _NAT_FLAGS:  # the seed spells them nat44/nat66 and nat4/nat6
            _set_once(body, "nat", _NAT_FLAGS[word])
        elif word == "external_ip":
            body.setdefault("external_ips", []).append(words.value(word))
        elif word == "source_range":
            body.setdefault("source_ranges", []).append(words.value(word))
        elif word == "del":
            delete = True
        else:
            raise _unknown("vip", word, _VIP_KEYWORDS)
    if delete:
        # The seed's habit is to repeat the add line with `del`: the rest is ignored.
        port = body.get("port")
        subject = f"VIP {prefix}" + ("" if port is None else f" port {port}")
        return Command((("vip", Call("DELETE", vip_path(prefix, port))),), "deleted",
                       subject=subject)
    return Command((("vip", Call("POST", "/v1/vips", body)),), "vip")


_POD_KEYWORDS = ("port", "del", "flush")


def _pod(words: _Words) -> Command:
    prefix = _prefix_word("pod", words, _POD_KEYWORDS)
    port: Optional[int] = None
    addresses: List[str] = []
    delete = flush = False
    while words:
        word = words.next()
        if word == "port":
            if port is not None:
                raise UsageError("port: given twice")
            port = words.integer(word)
        elif word == "del":
            delete = True
        elif word == "flush":
            flush = True
        else:
            # Anything else is a pod address; the API says if it is not one.
            addresses.append(word)
    if not addresses:
        raise UsageError("pod: missing <address> (give one or more pod addresses)")
    if flush and not delete:
        raise UsageError("flush: only with del (ku pod <prefix> <address>... del flush)")
    path = vip_path(prefix, port) + "/pods"
    if delete:
        call = Call("DELETE", path, {"addresses": addresses, "flush": flush})
    else:
        call = Call("POST", path, {"addresses": addresses})
    return Command((("vip", call),), "vip")


def _set(words: _Words) -> Command:
    if not words or words.peek() != "interface":
        got = repr(words.peek()) if words else "nothing"
        raise UsageError(f"set: expected 'interface', got {got}")
    words.next()
    if not words or words.peek() not in ("nat4", "nat6"):
        got = repr(words.peek()) if words else "nothing"
        raise UsageError(f"set interface: expected nat4 or nat6, got {got}")
    nat = words.next()
    if not words or words.peek() != "in":
        got = repr(words.peek()) if words else "nothing"
        raise UsageError(f"set interface: expected 'in <interface>', got {got}")
    words.next()
    name = words.value("in")
    delete = _flag(words, "set interface", "del")
    call = Call("DELETE" if delete else "PUT",
                f"/v1/interfaces/{_segment(nat)}/{quote(name, safe='')}")
    return Command((("interfaces", call),), "interfaces")


def _flag(words: _Words, command: str, flag: str) -> bool:
    """The rest of the line: nothing, or the one optional word `flag`."""
    given = False
    while words:
        word = words.next()
        if word != flag:
            raise _unknown(command, word, [flag])
        given = True
    return given


_SHOW_WHAT = ("vip", "sessions", "interfaces", "counters", "services")


def _show(words: _Words) -> Command:
    if not words:
        return Command((("show", Call("GET", "/v1/show")),
                        ("vips", Call("GET", "/v1/vips")),
                        ("counters", Call("GET", "/v1/counters"))), "show")
    what = words.next()
    if what == "vip":
        path = "/v1/vips"
        if words and any(c in words.peek() for c in "/.:"):     # one VIP, by its prefix
            prefix = words.next()
            port = None
            if words and words.peek() == "port":
                words.next()
                port = words.integer("port")
            path = vip_path(prefix, port)
        verbose = _flag(words, "show vip", "verbose")
        return Command((("vips", Call("GET", path)),), "vips", verbose=verbose)
    if what == "sessions":
        query: Dict[str, Any] = {}
        while words:
            word = words.next()
            if word == "limit" or (word == "port" and "prefix" in query):
                _set_once(query, word, words.integer(word))
            elif not query and any(c in word for c in "/.:"):     # meant as a prefix
                split_prefix(word)
                query["prefix"] = word
            else:
                expected = (["<vip-prefix>"] if not query else
                            ["port"] if "prefix" in query and "port" not in query else [])
                raise _unknown("show sessions", word, expected + ["limit"])
        path = "/v1/sessions" + (f"?{urlencode(query)}" if query else "")
        return Command((("sessions", Call("GET", path)),), "sessions")
    if what in ("interfaces", "counters", "services"):
        if words:
            raise UsageError(f"show {what}: unexpected {words.next()!r}")
        path = "/v1/kubernetes/services" if what == "services" else f"/v1/{what}"
        return Command(((what, Call("GET", path)),), what)
    raise _unknown("show", what, _SHOW_WHAT)


def _manifest_command(action: str):
    """`apply -f <file>` and `delete -f <file>`, as kubectl spells them."""
    def parse_manifest(words: _Words) -> Command:
        if not words or words.peek() != "-f":
            got = repr(words.peek()) if words else "nothing"
            raise UsageError(f"{action}: expected '-f <file>', got {got}")
        words.next()
        path = words.value("-f")
        prune = action == "apply" and _flag(words, "apply -f <file>", "prune")
        if words:
            raise UsageError(f"{action}: unexpected {words.next()!r}")
        if action == "apply":   # a job, followed to its end (kp_app.apply_jobs)
            call = Call("POST", "/v1/kubernetes/apply?wait=false"
                        + ("&prune=true" if prune else ""), job=True)
        else:
            call = Call("POST", "/v1/kubernetes/delete")
        return Command((("kubernetes", call),), "applied", manifest=path)
    return parse_manifest


_COMMANDS = {"conf": _conf, "vip": _vip, "pod": _pod, "set": _set, "show": _show,
             "apply": _manifest_command("apply"), "delete": _manifest_command("delete")}
