"""kp_app's configuration file (`ryu-manager kp_app --kp-config kp.yaml`): read and checked
in full at start, modelled on kube-proxy's KubeProxyConfiguration where a field means the
same, with kp's own settings under `kp:`.

    apiVersion: kubeproxy.config.k8s.io/v1alpha1
    kind: KubeProxyConfiguration
    bindAddress: 127.0.0.1              # where switches reach kp_app (--ofp-listen-host)
    healthzBindAddress: 127.0.0.1:10256 # /healthz, /livez ("" turns it off)
    metricsBindAddress: 127.0.0.1:10249 # /metrics ("" turns it off)
    syncPeriod: 30s                     # health: a change waiting 2 x this is late
    nodePortAddresses: [10.0.1.1/32]    # where health check node ports listen
    conntrack:                          # sessions' idle timeouts (ku conf):
      tcpEstablishedTimeout: 24h        #   timeout: TCP, and what the others leave
      tcpCloseWaitTimeout: 1h           #   tcp_close_wait: TCP after FIN/RST (lb mode)
      udpTimeout: 30s                   #   udp_timeout (0s: as tcpEstablishedTimeout)
    clientConnection:
      kubeconfig: /var/lib/kp/kubeconfig   # --kubeconfig (the Kubernetes watch)
    kp:
      mode: auto                        # --kp-mode
      stateFile: /var/lib/kp/state.json # --kp-state-file
      authTokenFile: /etc/kp/token      # --auth-token-file
      apiBindAddress: 127.0.0.1:8080    # the REST API (--wsapi-host, --wsapi-port)
      sessionTableBuckets: 1024         # session table buckets (ku conf buckets)

Every problem is a ConfigError naming the field path and the reason: an unknown field, a
kube-proxy field kp does not implement, a wrong type, a value out of range. Addresses
are IP literals (no name is ever looked up). Pure: `parse` takes the text.
"""
import dataclasses
import ipaddress
import re
from typing import Any, Dict, Optional, Tuple

import yaml

from kp_app.model import MAX_BUCKETS, MAX_TIMEOUT

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"
DEFAULT_HEALTHZ = "127.0.0.1:10256"
DEFAULT_METRICS = "127.0.0.1:10249"
DEFAULT_HEALTHZ_PORT = 10256
DEFAULT_METRICS_PORT = 10249
MAX_SYNC_PERIOD = 86400.0
MODES = ("auto", "packet-in", "ct", "lb")
# KubeProxyConfiguration's fields that kp has no equivalent of: named so that a file
# written for kube-proxy gets a reason, not "unknown field".
NOT_IMPLEMENTED = {
    "": ("mode", "iptables", "ipvs", "nftables", "winkernel", "clusterCIDR",
         "detectLocalMode", "detectLocal", "hostnameOverride", "featureGates", "portRange",
         "oomScoreAdj", "configSyncPeriod", "enableProfiling", "showHiddenMetricsForVersion",
         "logging", "minSyncPeriod", "bindAddressHardFail"),
    "conntrack": ("maxPerCore", "min", "tcpBeLiberal", "udpStreamTimeout"),
    "clientConnection": ("acceptContentTypes", "contentType", "qps", "burst"),
}
WHY_NOT = {
    "udpStreamTimeout": "kp has one UDP timeout (conntrack.udpTimeout)",
    "mode": "kp's own mode is kp.mode (auto, packet-in, ct, lb)",
    "minSyncPeriod": "kp applies each change as it comes",
}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}


class ConfigError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class KpConfig:
    """What a file sets (only what it sets: the rest stays the command line's or the
    defaults). `options`: ryu-manager options by their names in ryu.cfg.CONF; `conf`:
    KubeProxy.set_conf keywords; `health_check_hosts`: nodePortAddresses' addresses."""
    options: Dict[str, Any]
    conf: Dict[str, int]
    sync_period: Optional[float] = None
    health_check_hosts: Tuple[str, ...] = ()


def _type_name(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"),
                       (str, "a string"), (list, "a list"), (dict, "a mapping")):
        if isinstance(value, kind):
            return name
    return "null"


def _expect(value: Any, kind: type, field: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(field, f"expected {_type_name(kind())}, got {_type_name(value)}")
    return value


def parse_ip(value: Any, field: str) -> str:
    text = _expect(value, str, field).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(field, f"{value!r} is not an IP address (names are not "
                                 "looked up)") from None


def parse_bind_address(value: Any, field: str, default_port: int) -> Optional[Tuple[str, int]]:
    """kube-proxy's "IP:port", "[IPv6]:port" or a bare IP (the default port); "" is
    off (None)."""
    text = _expect(value, str, field).strip()
    if not text:
        return None
    host, port = text, str(default_port)
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1:] and not text[end + 1:].startswith(":")):
            raise ConfigError(field, f"{value!r} is not IP:port")
        host, port = text[1:end], text[end + 2:] or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(field, f"port {port!r} is not a port number 1-65535")
    return parse_ip(host, field), int(port)


def parse_duration(value: Any, field: str, low: float, high: float) -> float:
    """Seconds of a Go duration ("30s", "1h0m0s", "500ms"), in low..high."""
    text = _expect(value, str, field).strip()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ConfigError(field, f"{value!r} is not a duration (such as 30s, 5m, 1h30m)")
    if not low <= total <= high:
        raise ConfigError(field, f"{value} is out of range {low:g}s-{high:g}s")
    return total


def _whole_seconds(value: Any, field: str, low: int, high: int) -> int:
    seconds = parse_duration(value, field, low, high)
    if seconds != int(seconds):
        raise ConfigError(field, f"{value} is not a whole number of seconds")
    return int(seconds)


def _check_fields(mapping: dict, path: str, known: Tuple[str, ...]) -> None:
    for name in mapping:
        field = f"{path}.{name}" if path else str(name)
        if name in NOT_IMPLEMENTED.get(path, ()):
            why = WHY_NOT.get(name, "kp has no equivalent")
            raise ConfigError(field, f"a kube-proxy field kp does not implement: {why}")
        if name not in known:
            raise ConfigError(field, f"unknown field (expected one of {', '.join(known)})")


# conntrack's timeouts -> KubeProxy.set_conf's (keyword, least value; 0s: kp's default)
CONNTRACK = {"tcpEstablishedTimeout": ("timeout", 1), "tcpCloseWaitTimeout": ("tcp_close_wait", 0),
             "udpTimeout": ("udp_timeout", 0)}
TOP = ("apiVersion", "kind", "bindAddress", "healthzBindAddress", "metricsBindAddress",
       "syncPeriod", "nodePortAddresses", "conntrack", "clientConnection", "kp")
KP_FIELDS = ("mode", "stateFile", "authTokenFile", "apiBindAddress", "sessionTableBuckets")


def parse(text: str) -> KpConfig:
    """The settings of a configuration file's text; ConfigError for any problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError("(file)", f"not YAML: {error}") from None
    data = _expect(data, dict, "(file)")
    _check_fields(data, "", TOP)
    if data.get("apiVersion") != API_VERSION:
        raise ConfigError("apiVersion", f"{data.get('apiVersion')!r}: expected {API_VERSION}")
    if data.get("kind") != KIND:
        raise ConfigError("kind", f"{data.get('kind')!r}: expected {KIND}")
    options: Dict[str, Any] = {}
    conf: Dict[str, int] = {}
    if "bindAddress" in data:
        options["ofp_listen_host"] = parse_ip(data["bindAddress"], "bindAddress")
    for name, option, port in (("healthzBindAddress", "healthz_bind_address",
                                DEFAULT_HEALTHZ_PORT),
                               ("metricsBindAddress", "metrics_bind_address",
                                DEFAULT_METRICS_PORT)):
        if name in data:
            parse_bind_address(data[name], name, port)       # checked; kept as written
            options[option] = data[name].strip()
    sync_period = None
    if "syncPeriod" in data:
        sync_period = parse_duration(data["syncPeriod"], "syncPeriod", 0.001, MAX_SYNC_PERIOD)
    hosts = _node_port_addresses(data.get("nodePortAddresses"))
    conntrack = _section(data, "conntrack")
    _check_fields(conntrack, "conntrack", tuple(CONNTRACK))
    for name, (key, low) in CONNTRACK.items():
        if name in conntrack:
            conf[key] = _whole_seconds(conntrack[name], f"conntrack.{name}", low, MAX_TIMEOUT)
    client = _section(data, "clientConnection")
    _check_fields(client, "clientConnection", ("kubeconfig",))
    if "kubeconfig" in client:
        path = _expect(client["kubeconfig"], str, "clientConnection.kubeconfig")
        if path:
            options["kubeconfig"] = path
    kp = _section(data, "kp")
    _check_fields(kp, "kp", KP_FIELDS)
    if "mode" in kp:
        mode = _expect(kp["mode"], str, "kp.mode")
        if mode not in MODES:
            raise ConfigError("kp.mode", f"{mode!r} is not one of {', '.join(MODES)}")
        options["kp_mode"] = mode
    for name, option in (("stateFile", "kp_state_file"), ("authTokenFile", "auth_token_file")):
        if name in kp:
            path = _expect(kp[name], str, f"kp.{name}")
            if not path:
                raise ConfigError(f"kp.{name}", "is empty: leave the field out instead")
            options[option] = path
    if "apiBindAddress" in kp:
        address = parse_bind_address(kp["apiBindAddress"], "kp.apiBindAddress", 8080)
        if address is None:
            raise ConfigError("kp.apiBindAddress", "is empty: the REST API cannot be off")
        options["wsapi_host"], options["wsapi_port"] = address
    if "sessionTableBuckets" in kp:
        buckets = _expect(kp["sessionTableBuckets"], int, "kp.sessionTableBuckets")
        if buckets < 1 or buckets & (buckets - 1) or buckets > MAX_BUCKETS:
            raise ConfigError("kp.sessionTableBuckets",
                              f"{buckets} is not a power of 2 in 1-{MAX_BUCKETS}")
        conf["buckets"] = buckets
    return KpConfig(options, conf, sync_period, hosts)


def _section(data: dict, name: str) -> dict:
    """A nested mapping (absent or null: empty)."""
    value = data.get(name)
    return {} if value is None else _expect(value, dict, name)


def _node_port_addresses(value: Any) -> Tuple[str, ...]:
    """kube-proxy's nodePortAddresses: CIDRs of the node's addresses to serve on. kp
    cannot list the node's addresses itself yet, so each must be one address (/32,
    /128): the health check node ports listen there."""
    if value is None:
        return ()
    hosts = []
    for i, entry in enumerate(_expect(value, list, "nodePortAddresses")):
        field = f"nodePortAddresses[{i}]"
        text = _expect(entry, str, field).strip()
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError:
            raise ConfigError(field, f"{entry!r} is not a CIDR") from None
        if network.num_addresses != 1:
            raise ConfigError(field, f"{entry}: kp needs the node's addresses one by one "
                                     "(a /32 or /128 each)")
        hosts.append(str(network.network_address))
    return tuple(hosts)


def read(path: str) -> KpConfig:
    """`parse` of a file; ConfigError also when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError("(file)", f"cannot read {path}: {error}") from None
    return parse(text)
