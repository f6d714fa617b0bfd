"""ku's syntax: every command form into its REST calls, every malformed line into its
one-line error. Values are not judged here (that is the API's job): a port of 70000 is
good syntax and travels to the API."""
import pytest

from kp_app.cli_syntax import Call, UsageError, parse, split_options, vip_path


def calls(*words: str):
    return [call for _, call in parse(list(words)).calls]


def error(*words: str) -> str:
    with pytest.raises(UsageError) as raised:
        parse(list(words))
    return str(raised.value)


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, words, api, as_json", [
    (["show"], ["show"], None, False),
    (["--json", "show", "vip"], ["show", "vip"], None, True),
    (["show", "--json", "vip"], ["show", "vip"], None, True),
    (["show", "vip", "--json"], ["show", "vip"], None, True),
    (["--api", "http://h:1", "show"], ["show"], "http://h:1", False),
    (["show", "--api=https://h:2/x"], ["show"], "https://h:2/x", False),
    (["vip", "10.0.0.0/8", "--api", "http://h:1", "del", "--json"],
     ["vip", "10.0.0.0/8", "del"], "http://h:1", True),
])
def test_options_anywhere(argv, words, api, as_json):
    options = split_options(argv)
    assert (options.words, options.api, options.json, options.help) == (
        words, api, as_json, False)


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["vip", "--help"]])
def test_help(argv):
    assert split_options(argv).help


@pytest.mark.parametrize("argv, message", [
    (["show", "--api"], "--api: missing URL"),
    (["--api", "localhost:8080", "show"],
     "--api: 'localhost:8080' is not an http:// or https:// URL"),
    (["--api=", "show"], "--api: '' is not an http:// or https:// URL"),
    (["--yaml", "show"], "unknown option '--yaml' (expected --api, --token-file, --json, --help)"),
])
def test_option_errors(argv, message):
    with pytest.raises(UsageError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        split_options(argv)


# -- conf ---------------------------------------------------------------------------------


def test_conf_alone_reads():
    command = parse(["conf"])
    assert [c for _, c in command.calls] == [Call("GET", "/v1/conf")]
    assert command.view == "conf"


def test_conf_sets():
    assert calls("conf", "buckets", "2048", "timeout", "30") == [
        Call("PUT", "/v1/conf", {"buckets": 2048, "timeout": 30})]
    assert calls("conf", "udp_timeout", "30", "tcp_close_wait", "3600") == [
        Call("PUT", "/v1/conf", {"udp_timeout": 30, "tcp_close_wait": 3600})]
    assert calls("conf", "node_ip", "10.0.0.1", "node_ip6", "fd00::1", "dpid", "0x1f") == [
        Call("PUT", "/v1/conf", {"node_ip": "10.0.0.1", "node_ip6": "fd00::1", "dpid": 31})]
    assert calls("conf", "dpid", "7", "node_ip", "10.0.0.1") == [
        Call("PUT", "/v1/conf", {"dpid": 7, "node_ip": "10.0.0.1"})]


def test_conf_values_are_the_apis_business():
    # Not a power of 2, negative, not an address: all good syntax.
    assert calls("conf", "buckets", "1000", "timeout", "-1", "node_ip", "nope") == [
        Call("PUT", "/v1/conf", {"buckets": 1000, "timeout": -1, "node_ip": "nope"})]


@pytest.mark.parametrize("words, message", [
    (["conf", "buckets"], "buckets: missing value"),
    (["conf", "buckets", "many"], "buckets: 'many' is not an integer"),
    (["conf", "timeout", "1.5"], "timeout: '1.5' is not an integer"),
    (["conf", "timeout", "0x10"], "timeout: '0x10' is not an integer"),
    (["conf", "dpid", "0xzz"], "dpid: '0xzz' is not an integer"),
    (["conf", "node_ip"], "node_ip: missing value"),
    (["conf", "buckets", "1", "buckets", "2"], "buckets: given twice"),
    (["conf", "bucket", "2"], "conf: unknown keyword 'bucket' (expected buckets, timeout, "
                              "udp_timeout, tcp_close_wait, node_ip, node_ip6, dpid)"),
])
def test_conf_errors(words, message):
    assert error(*words) == message


# -- vip ----------------------------------------------------------------------------------


def test_vip_add_every_keyword():
    assert calls("vip", "10.96.0.10/32", "protocol", "tcp", "port", "80", "target_port",
                 "8080", "node_port", "30080", "nat44", "new_len", "2048", "external_ip",
                 "192.0.2.1", "external_ip", "192.0.2.2") == [
        Call("POST", "/v1/vips", {"prefix": "10.96.0.10/32", "protocol": "tcp", "port": 80,
                                  "target_port": 8080, "node_port": 30080, "nat": "nat44",
                                  "new_len": 2048,
                                  "external_ips": ["192.0.2.1", "192.0.2.2"]})]


def test_vip_add_minimal_and_seed_examples():
    assert calls("vip", "10.96.0.0/16") == [Call("POST", "/v1/vips", {"prefix": "10.96.0.0/16"})]
    assert calls("vip", "90.0.0.0/8", "nat44", "new_len", "2048") == [
        Call("POST", "/v1/vips", {"prefix": "90.0.0.0/8", "nat": "nat44", "new_len": 2048})]
    assert calls("vip", "2003::/16", "nat66", "new_len", "2048") == [
        Call("POST", "/v1/vips", {"prefix": "2003::/16", "nat": "nat66", "new_len": 2048})]
    # The seed's usage line spells them nat4|nat6.
    assert calls("vip", "2003::/16", "nat6")[0].body["nat"] == "nat66"
    assert calls("vip", "90.0.0.0/8", "nat4")[0].body["nat"] == "nat44"


def test_vip_values_are_the_apis_business():
    assert calls("vip", "10.96.0.10/32", "port", "70000", "protocol", "sctp") == [
        Call("POST", "/v1/vips", {"prefix": "10.96.0.10/32", "port": 70000,
                                  "protocol": "sctp"})]
    assert calls("vip", "999.1.1.1/99")[0].body == {"prefix": "999.1.1.1/99"}


def test_vip_del():
    command = parse(["vip", "10.96.0.10/32", "port", "80", "del"])
    assert [c for _, c in command.calls] == [Call("DELETE", "/v1/vips/10.96.0.10/32/80")]
    assert (command.view, command.subject) == ("deleted", "VIP 10.96.0.10/32 port 80")
    assert calls("vip", "10.96.0.10/32", "del") == [Call("DELETE", "/v1/vips/10.96.0.10/32")]
    assert calls("vip", "fd00:96::/64", "port", "0", "del") == [
        Call("DELETE", "/v1/vips/fd00:96::/64/0")]
    # The seed's habit: repeat the add line with `del`; the other options are ignored.
    assert calls("vip", "90.0.0.0/8", "nat44", "new_len", "2048", "del") == [
        Call("DELETE", "/v1/vips/90.0.0.0/8")]


@pytest.mark.parametrize("words, message", [
    (["vip"], "vip: missing <prefix>"),
    (["vip", "port", "80"], "vip: missing <prefix>"),
    (["vip", "10.96.0.10"], "prefix: expected <address>/<length>, got '10.96.0.10'"),
    (["vip", "10.96.0.10/"], "prefix: expected <address>/<length>, got '10.96.0.10/'"),
    (["vip", "/32"], "prefix: expected <address>/<length>, got '/32'"),
    (["vip", "10.0.0.0/8/8"], "prefix: expected <address>/<length>, got '10.0.0.0/8/8'"),
    (["vip", "10.0.0.0/eight"], "prefix: expected <address>/<length>, got '10.0.0.0/eight'"),
    (["vip", "10.96.0.10/32", "port"], "port: missing value"),
    (["vip", "10.96.0.10/32", "port", "http"], "port: 'http' is not an integer"),
    (["vip", "10.96.0.10/32", "target_port", "80a"], "target_port: '80a' is not an integer"),
    (["vip", "10.96.0.10/32", "node_port", ""], "node_port: '' is not an integer"),
    (["vip", "10.96.0.10/32", "new_len", "1k"], "new_len: '1k' is not an integer"),
    (["vip", "10.96.0.10/32", "protocol"], "protocol: missing value"),
    (["vip", "10.96.0.10/32", "external_ip"], "external_ip: missing value"),
    (["vip", "10.96.0.10/32", "port", "80", "port", "81"], "port: given twice"),
    (["vip", "10.96.0.10/32", "nat44", "nat66"], "nat: given twice"),
    (["vip", "10.96.0.10/32", "port", "80", "dle"],
     "vip: unknown keyword 'dle' (expected protocol, port, target_port, node_port, new_len, "
     "affinity_timeout, nat44, nat66, external_ip, source_range, external_policy, "
     "internal_policy, del)"),
])
def test_vip_errors(words, message):
    assert error(*words) == message


# -- pod ----------------------------------------------------------------------------------


def test_pod_add():
    assert calls("pod", "10.96.0.10/32", "10.1.0.1") == [
        Call("POST", "/v1/vips/10.96.0.10/32/pods", {"addresses": ["10.1.0.1"]})]
    assert calls("pod", "2002::/16", "2001::2", "2001::3", "2001::4") == [
        Call("POST", "/v1/vips/2002::/16/pods", {"addresses": ["2001::2", "2001::3",
                                                               "2001::4"]})]
    assert calls("pod", "10.96.0.10/32", "port", "80", "10.1.0.1", "10.1.0.2") == [
        Call("POST", "/v1/vips/10.96.0.10/32/80/pods", {"addresses": ["10.1.0.1", "10.1.0.2"]})]
    assert calls("pod", "10.96.0.10/32", "10.1.0.1", "port", "80") == [
        Call("POST", "/v1/vips/10.96.0.10/32/80/pods", {"addresses": ["10.1.0.1"]})]
    assert parse(["pod", "10.96.0.10/32", "10.1.0.1"]).view == "vip"


def test_pod_del():
    assert calls("pod", "10.96.0.10/32", "10.1.0.1", "del") == [
        Call("DELETE", "/v1/vips/10.96.0.10/32/pods",
             {"addresses": ["10.1.0.1"], "flush": False})]
    assert calls("pod", "10.96.0.10/32", "port", "80", "10.1.0.1", "10.1.0.2", "del",
                 "flush") == [
        Call("DELETE", "/v1/vips/10.96.0.10/32/80/pods",
             {"addresses": ["10.1.0.1", "10.1.0.2"], "flush": True})]


def test_pod_addresses_are_the_apis_business():
    assert calls("pod", "10.96.0.10/32", "fd00::1", "not-an-address")[0].body == {
        "addresses": ["fd00::1", "not-an-address"]}


@pytest.mark.parametrize("words, message", [
    (["pod"], "pod: missing <prefix>"),
    (["pod", "del"], "pod: missing <prefix>"),
    (["pod", "10.96.0.10"], "prefix: expected <address>/<length>, got '10.96.0.10'"),
    (["pod", "10.96.0.10/32"], "pod: missing <address> (give one or more pod addresses)"),
    (["pod", "10.96.0.10/32", "del"],
     "pod: missing <address> (give one or more pod addresses)"),
    (["pod", "10.96.0.10/32", "port", "80"],
     "pod: missing <address> (give one or more pod addresses)"),
    (["pod", "10.96.0.10/32", "port"], "port: missing value"),
    (["pod", "10.96.0.10/32", "port", "x", "10.1.0.1"], "port: 'x' is not an integer"),
    (["pod", "10.96.0.10/32", "port", "1", "port", "2", "10.1.0.1"], "port: given twice"),
    (["pod", "10.96.0.10/32", "10.1.0.1", "flush"],
     "flush: only with del (ku pod <prefix> <address>... del flush)"),
])
def test_pod_errors(words, message):
    assert error(*words) == message


# -- set interface ------------------------------------------------------------------------


def test_set_interface():
    assert calls("set", "interface", "nat4", "in", "s1-eth1") == [
        Call("PUT", "/v1/interfaces/nat4/s1-eth1")]
    assert calls("set", "interface", "nat6", "in", "eth0", "del") == [
        Call("DELETE", "/v1/interfaces/nat6/eth0")]
    # An odd name is escaped, not refused: the API judges names.
    assert calls("set", "interface", "nat4", "in", "a b/c") == [
        Call("PUT", "/v1/interfaces/nat4/a%20b%2Fc")]


@pytest.mark.parametrize("words, message", [
    (["set"], "set: expected 'interface', got nothing"),
    (["set", "iface"], "set: expected 'interface', got 'iface'"),
    (["set", "interface"], "set interface: expected nat4 or nat6, got nothing"),
    (["set", "interface", "nat44", "in", "eth0"],
     "set interface: expected nat4 or nat6, got 'nat44'"),
    (["set", "interface", "nat4"], "set interface: expected 'in <interface>', got nothing"),
    (["set", "interface", "nat4", "eth0"],
     "set interface: expected 'in <interface>', got 'eth0'"),
    (["set", "interface", "nat4", "in"], "in: missing value"),
    (["set", "interface", "nat4", "in", "eth0", "remove"],
     "set interface: unknown keyword 'remove' (expected del)"),
])
def test_set_interface_errors(words, message):
    assert error(*words) == message


# -- show ---------------------------------------------------------------------------------


def test_show_forms():
    command = parse(["show"])
    assert command.view == "show"
    assert dict(command.calls) == {"show": Call("GET", "/v1/show"),
                                   "vips": Call("GET", "/v1/vips"),
                                   "counters": Call("GET", "/v1/counters")}
    command = parse(["show", "vip"])
    assert (command.view, command.verbose, calls("show", "vip")) == (
        "vips", False, [Call("GET", "/v1/vips")])
    assert parse(["show", "vip", "verbose"]).verbose
    one = parse(["show", "vip", "fd00::10/128", "port", "53", "verbose"])
    assert one.verbose and calls("show", "vip", "fd00::10/128", "port", "53") == [
        Call("GET", "/v1/vips/fd00::10/128/53")]
    assert calls("show", "vip", "10.96.0.10/32") == [Call("GET", "/v1/vips/10.96.0.10/32")]
    assert calls("show", "sessions") == [Call("GET", "/v1/sessions")]
    assert calls("show", "sessions", "limit", "5") == [Call("GET", "/v1/sessions?limit=5")]
    assert calls("show", "sessions", "fd00::10/128", "port", "80", "limit", "5") == [
        Call("GET", "/v1/sessions?prefix=fd00%3A%3A10%2F128&port=80&limit=5")]
    assert calls("show", "interfaces") == [Call("GET", "/v1/interfaces")]
    assert calls("show", "counters") == [Call("GET", "/v1/counters")]


@pytest.mark.parametrize("words, message", [
    (["show", "vips"], "show: unknown keyword 'vips' (expected vip, sessions, interfaces, "
                       "counters, services)"),
    (["show", "vip", "verbos"], "show vip: unknown keyword 'verbos' (expected verbose)"),
    (["show", "vip", "10.96.0.10"], "prefix: expected <address>/<length>, got '10.96.0.10'"),
    (["show", "vip", "10.96.0.10/32", "port"], "port: missing value"),
    (["show", "vip", "10.96.0.10/32", "port", "x"], "port: 'x' is not an integer"),
    (["show", "sessions", "limit"], "limit: missing value"),
    (["show", "sessions", "limit", "all"], "limit: 'all' is not an integer"),
    (["show", "sessions", "limit", "1", "limit", "2"], "limit: given twice"),
    (["show", "sessions", "max", "1"],
     "show sessions: unknown keyword 'max' (expected <vip-prefix>, limit)"),
    (["show", "sessions", "port", "80"],
     "show sessions: unknown keyword 'port' (expected <vip-prefix>, limit)"),
    (["show", "sessions", "10.96.0.10/32", "port", "80", "port", "81"], "port: given twice"),
    (["show", "sessions", "limit", "1", "10.96.0.10/32"],
     "show sessions: unknown keyword '10.96.0.10/32' (expected limit)"),
    (["show", "sessions", "10.96.0.10"], "prefix: expected <address>/<length>, got "
                                         "'10.96.0.10'"),
    (["show", "interfaces", "eth0"], "show interfaces: unexpected 'eth0'"),
    (["show", "counters", "reset"], "show counters: unexpected 'reset'"),
])
def test_show_errors(words, message):
    assert error(*words) == message


# -- the line as a whole ------------------------------------------------------------------


@pytest.mark.parametrize("words, message", [
    ([], "missing command (expected conf, vip, pod, set, show, apply, delete; see ku --help)"),
    (["kube-proxy"],
     "unknown command 'kube-proxy' (expected conf, vip, pod, set, show, apply, delete)"),
    (["VIP", "10.0.0.0/8"],
     "unknown command 'VIP' (expected conf, vip, pod, set, show, apply, delete)"),
])
def test_command_errors(words, message):
    assert error(*words) == message


@pytest.mark.parametrize("prefix, port, path", [
    ("10.96.0.10/32", None, "/v1/vips/10.96.0.10/32"),
    ("10.96.0.10/32", 80, "/v1/vips/10.96.0.10/32/80"),
    ("fd00:96::10/128", 53, "/v1/vips/fd00:96::10/128/53"),
    ("fe80::1%eth0/64", 0, "/v1/vips/fe80%3A%3A1%25eth0/64/0".replace("%3A", ":")),
])
def test_vip_path(prefix, port, path):
    assert vip_path(prefix, port) == path
