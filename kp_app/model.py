"""The service model: global conf, node addresses, VIPs and their pods.

This is the single source of truth; every switch's flows are derived from it. Each
mutation validates all of its input first and only then changes anything, so an
error (KpError) always leaves the model as it was.

(Over 500 lines: the VIPs' indexes, by id, address, node port, a pod's reply key and
draining pods, are kept up to date by the very mutations that change what they index;
they are read together or not at all. Vip, Pod and the value parsers come first.)
"""
import functools
import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple, Union

from kp_app.errors import Conflict, InvalidInput, NotFound
from kp_app.maglev import MaglevTable, TableStore
from kp_app.pipeline import reply_key

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# "any" is TCP and UDP (a Service port served over both, as DNS is); SCTP is only ever
# asked for by name (kube-proxy proxies it as its own protocol).
PROTOCOLS = {"tcp": (6,), "udp": (17,), "sctp": (132,), "any": (6, 17)}
NAT_FOR_VERSION = {4: "nat44", 6: "nat66"}
MAX_BUCKETS = 1 << 24
MAX_NEW_LEN = 1 << 20
DEFAULT_NEW_LEN = 1024      # as VPP's
MAX_TIMEOUT = 86400
MAX_AFFINITY_TIMEOUT = 86400
MAX_VIPS = 0xFFFF


def _is_power_of_2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def parse_int(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidInput(f"{value!r} is not an integer", name)
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not an integer", name) from None
    if not low <= number <= high:
        raise InvalidInput(f"{number} is out of range {low}-{high}", name)
    return number


def parse_power_of_2(value, name: str, high: int) -> int:
    number = parse_int(value, name, 1, high)
    if not _is_power_of_2(number):
        raise InvalidInput(f"{number} is not a power of 2", name)
    return number


@functools.lru_cache(maxsize=1 << 14)   # (an apply's batch of addresses)
def ip_address_of(text: str) -> Address:
    """ipaddress.ip_address, remembered: applying Services reads each pod address a
    few times (the manifest, the plan, the model), 10,000s of them at a time, and
    addresses are immutable. ValueError as ip_address raises it."""
    return ipaddress.ip_address(text)


def parse_address(value, name: str, version: Optional[int] = None) -> Address:
    if not isinstance(value, str):
        raise InvalidInput(f"{value!r} is not an IP address", name)
    try:
        address = ip_address_of(value.strip())
    except ValueError:
        raise InvalidInput(f"{value!r} is not an IP address", name) from None
    if version is not None and address.version != version:
        raise InvalidInput(f"{address} is IPv{address.version}, expected IPv{version}", name)
    return address


def parse_prefix(value, name: str = "prefix") -> Network:
    if not isinstance(value, str):
        raise InvalidInput(f"{value!r} is not an IP prefix", name)
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as error:
        raise InvalidInput(f"{value!r} is not an IP prefix ({error})", name) from None


def parse_affinity(value) -> int:
    """ClientIP affinity timeout in seconds, 0 for none (Kubernetes allows up to a day)."""
    return parse_int(value, "affinity_timeout", 0, MAX_AFFINITY_TIMEOUT)


TRAFFIC_POLICIES = ("cluster", "local")


def parse_policies(affinity_timeout, external_policy, internal_policy,
                   source_ranges=()) -> dict:
    """The keywords of Vip.policies(), checked (source_ranges as networks)."""
    for name, value in (("external_policy", external_policy),
                        ("internal_policy", internal_policy)):
        if value not in TRAFFIC_POLICIES:
            raise InvalidInput(f"{value!r} is not cluster or local", name)
    if isinstance(source_ranges, str) or not isinstance(source_ranges, (list, tuple)):
        raise InvalidInput("must be a list of prefixes", "source_ranges")
    ranges = sorted({parse_prefix(r, "source_ranges") for r in source_ranges},
                    key=lambda n: (n.version, n))
    return {"affinity_timeout": parse_affinity(affinity_timeout),
            "external_policy": external_policy, "internal_policy": internal_policy,
            "source_ranges": tuple(ranges)}


TCP_CLOSING_TIMEOUT = 120     # Linux conntrack's TIME_WAIT: a closing TCP session's idle limit


@dataclass
class Conf:
    """The session table: buckets, and idle timeouts in seconds. `timeout` is every
    session's unless one below says otherwise (0: as `timeout`): `udp_timeout` for UDP
    sessions (kube-proxy's conntrack.udpTimeout), `tcp_close_wait` for TCP sessions that
    have seen a FIN or RST (conntrack.tcpCloseWaitTimeout; only where the switch follows
    TCP's state: kp-switch in lb mode; elsewhere such a session keeps `timeout`)."""
    buckets: int = 1024
    timeout: int = 40
    udp_timeout: int = 0
    tcp_close_wait: int = 0

    def idle_timeout(self, ip_proto: int) -> int:
        """A session's idle timeout by IP protocol (17: UDP)."""
        return self.udp_timeout or self.timeout if ip_proto == 17 else self.timeout

    def closing_timeout(self) -> int:
        return self.tcp_close_wait or min(TCP_CLOSING_TIMEOUT, self.timeout)


DEFAULT_NODE_PREFIXLEN = {4: 24, 6: 64}


def parse_node_address(value, name: str, version: int):
    """`10.0.1.1/24` (the node's address on its pod subnet) or `10.0.1.1` (a /24; /64)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{value!r} is not an IP address", name)
    text = value.strip()
    if "/" not in text:
        text = f"{text}/{DEFAULT_NODE_PREFIXLEN[version]}"
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidInput(f"{value!r} is not an IP address (with an optional /prefix length)",
                           name) from None
    if interface.version != version:
        raise InvalidInput(f"{interface.ip} is IPv{interface.version}, expected IPv{version}",
                           name)
    return interface


@dataclass
class NodeAddresses:
    """A node's own address per family, on its pod subnet (the interface's network).
    `announced`: the families (4, 6) whose address the switch announced, rather than
    someone set by hand (see ServiceModel.announce_node)."""
    ipv4_if: Optional[ipaddress.IPv4Interface] = None
    ipv6_if: Optional[ipaddress.IPv6Interface] = None
    announced: Set[int] = field(default_factory=set)

    @property
    def ipv4(self) -> Optional[ipaddress.IPv4Address]:
        return None if self.ipv4_if is None else self.ipv4_if.ip

    @property
    def ipv6(self) -> Optional[ipaddress.IPv6Address]:
        return None if self.ipv6_if is None else self.ipv6_if.ip

    def for_version(self, version: int) -> Optional[Address]:
        return self.ipv4 if version == 4 else self.ipv6

    def subnet(self, version: int) -> Optional[Network]:
        interface = self.ipv4_if if version == 4 else self.ipv6_if
        return None if interface is None else interface.network

    def subnets(self) -> List[Network]:
        return [i.network for i in (self.ipv4_if, self.ipv6_if) if i is not None]

    def to_dict(self) -> dict:
        return {"node_ip": _str(self.ipv4), "node_ip6": _str(self.ipv6),
                "node_subnet": _str(self.subnet(4)), "node_subnet6": _str(self.subnet(6))}

    def to_dict_with_source(self) -> dict:
        """to_dict, and `announced`: which of node_ip, node_ip6 the switch announced."""
        return {**self.to_dict(), "announced": [
            name for version, name in ((4, "node_ip"), (6, "node_ip6"))
            if version in self.announced]}


def _str(value) -> Optional[str]:
    return None if value is None else str(value)


@dataclass(slots=True)      # (one per pod: 100,000s of them in a big cluster)
class Counters:
    """Per VIP and per pod. packets/bytes are those of sessions that have ended; the live
    sessions' figures are added when they are shown."""
    new_sessions: int = 0
    packets: int = 0
    bytes: int = 0
    no_pod: int = 0
    untracked: int = 0
    table_full: int = 0
    no_local_pod: int = 0   # externalTrafficPolicy local, entering a node with none
    filtered: int = 0       # new sessions to an external IP from outside source_ranges


@dataclass(slots=True)
class Pod:
    address: Address
    id: int
    active: bool = True
    counters: Counters = field(default_factory=Counters)


@dataclass
class Vip:
    """A service: a prefix and port, its pods, and its new-connection table.

    `id` is small and stable for the VIP's life; it travels in every flow's cookie so one
    cookie-masked delete removes all of the VIP's flows from a switch.
    """
    id: int
    prefix: Network
    port: int
    target_port: int
    node_port: Optional[int]
    protocol: str
    new_len: int
    external_ips: Tuple[Address, ...] = ()
    service: Optional[str] = None   # "namespace/name" of the Kubernetes Service it serves
    affinity_timeout: int = 0       # ClientIP session affinity, seconds (0: none)
    # externalTrafficPolicy: "local" sends NodePort and external-IP clients only to the
    # pods of the node they entered (no SNAT: the pod sees the client), "cluster" anywhere
    external_policy: str = "cluster"
    # internalTrafficPolicy: "local" does the same for clients of the ClusterIP itself
    internal_policy: str = "cluster"
    # loadBalancerSourceRanges: the clients its external IPs take (none: every client)
    source_ranges: Tuple[Network, ...] = ()
    pods: Dict[Address, Pod] = field(default_factory=dict)
    table: Optional[MaglevTable] = None
    # With a "local" traffic policy: the table of the pods on each node's subnets (the
    # node's subnets -> its table), made with `table`, at a change, for kp_app.node
    local_tables: Optional[Dict[tuple, MaglevTable]] = None
    counters: Counters = field(default_factory=Counters)

    @property
    def key(self) -> Tuple[Network, int]:
        return (self.prefix, self.port)

    @property
    def version(self) -> int:
        return self.prefix.version

    @property
    def nat(self) -> str:
        return NAT_FOR_VERSION[self.version]

    @property
    def ip_protos(self) -> Tuple[int, ...]:
        return PROTOCOLS[self.protocol]

    def policies(self) -> dict:
        """What may change in place (set_policies): the keywords add_vip takes them as."""
        return {"affinity_timeout": self.affinity_timeout,
                "external_policy": self.external_policy,
                "internal_policy": self.internal_policy,
                "source_ranges": [str(n) for n in self.source_ranges]}

    def admits(self, client: Address) -> bool:
        """May `client` reach the external IPs (loadBalancerSourceRanges)?"""
        return not self.source_ranges or any(
            client.version == n.version and client in n for n in self.source_ranges)

    def active_pods(self) -> List[Address]:
        return [a for a, p in self.pods.items() if p.active]

    def has_local_policy(self) -> bool:
        return "local" in (self.internal_policy, self.external_policy)

    def dnat_port(self, dst_port: int) -> int:
        """The pod port for a packet sent to `dst_port` (port 0 VIPs keep the port)."""
        return self.target_port or dst_port

    def label(self) -> str:
        return f"{self.prefix} port {self.port}"


def _pod_ports(vip: Vip, address: Address) -> List[Tuple[Address, int, int]]:
    """What a pod of the VIP makes reply flows for (none for a port-0 VIP)."""
    return [reply_key(vip, address, proto) for proto in vip.ip_protos] if vip.target_port \
        else []


def _on(address: Address, subnets: tuple) -> bool:
    return any(address.version == s.version and address in s for s in subnets)


def _unlist(index: dict, key, vip: Vip) -> None:
    """Take `vip` itself (not an equal one) from index[key]; no empty lists are kept."""
    kept = [v for v in index[key] if v is not vip]
    if kept:
        index[key] = kept
    else:
        del index[key]


class ServiceModel:
    """Conf, node addresses, VIPs: validated mutations, lookups for the data path."""

    def __init__(self, tables: Optional[TableStore] = None) -> None:
        """`tables`: where the VIPs' tables come from (a scratch model that tries a
        change shares the real one's, so that the change finds the tables it built)."""
        self.tables = TableStore() if tables is None else tables
        self.conf = Conf()
        self.default_node = NodeAddresses()
        self.nodes: Dict[int, NodeAddresses] = {}
        self.vips: Dict[Tuple[Network, int], Vip] = {}
        self.interfaces: Dict[str, List[str]] = {"nat4": [], "nat6": []}
        # Kubernetes Services applied ("namespace/name"), with or without VIPs (headless)
        self.services: Set[str] = set()
        # Their spec.healthCheckNodePort, where kube-proxy would serve one (LoadBalancer
        # with externalTrafficPolicy Local): "namespace/name" -> port
        self.health_check_ports: Dict[str, int] = {}
        self._next_vip_id = 1
        self._next_pod_id = 1
        # Indexes of self.vips, so that a packet finds its VIP in the time of a dict probe
        # however many Services there are (a Kubernetes cluster has thousands).
        self._by_id: Dict[int, Vip] = {}
        self._by_address: Dict[Address, List[Vip]] = {}   # host prefixes, external IPs
        self._wide: List[Vip] = []                        # prefixes of several addresses
        self._by_node_port: Dict[int, List[Vip]] = {}
        # How many VIPs have each (pod, target port, IP protocol): the pods' reply flows
        # (kp_app.pipeline.reply_key) are shared by all of them, and go with the last.
        self._pod_ports: Counter = Counter()
        # VIP id -> its removed pods that still have sessions (draining), so that what
        # ends a session looks at those alone, not at every pod of every VIP.
        self._draining: Dict[int, Set[Address]] = {}

    # -- conf and node addresses ------------------------------------------------------

    def set_conf(self, buckets=None, timeout=None, udp_timeout=None,
                 tcp_close_wait=None) -> None:
        new_buckets = self.conf.buckets if buckets is None else parse_power_of_2(
            buckets, "buckets", MAX_BUCKETS)
        new_timeout = self.conf.timeout if timeout is None else parse_int(
            timeout, "timeout", 1, MAX_TIMEOUT)
        udp = self.conf.udp_timeout if udp_timeout is None else parse_int(
            udp_timeout, "udp_timeout", 0, MAX_TIMEOUT)
        close_wait = self.conf.tcp_close_wait if tcp_close_wait is None else parse_int(
            tcp_close_wait, "tcp_close_wait", 0, MAX_TIMEOUT)
        self.conf = Conf(new_buckets, new_timeout, udp, close_wait)

    def set_node(self, node_ip=None, node_ip6=None, dpid=None) -> None:
        ipv4 = None if node_ip is None else parse_node_address(node_ip, "node_ip", 4)
        ipv6 = None if node_ip6 is None else parse_node_address(node_ip6, "node_ip6", 6)
        if dpid is not None:
            dpid = parse_int(dpid, "dpid", 0, (1 << 64) - 1)
        target = self.default_node if dpid is None else self.nodes.setdefault(
            dpid, NodeAddresses())
        if ipv4 is not None:
            target.ipv4_if = ipv4
            target.announced.discard(4)
        if ipv6 is not None:
            target.ipv6_if = ipv6
            target.announced.discard(6)
        if ipv4 is not None or ipv6 is not None:
            self._node_addresses_changed()

    def announce_node(self, dpid: int, ipv4_if: Optional[ipaddress.IPv4Interface],
                      ipv6_if: Optional[ipaddress.IPv6Interface]) -> bool:
        """What switch `dpid` announces as its node addresses now (None: nothing for that
        family), taken where `set_node(..., dpid=dpid)` puts them, but never over an
        address set by hand; an address it announced before and no longer does goes.
        True if the node's addresses changed. dpid None: the default node's (those of
        every switch without its own), as a cluster's Node object gives them."""
        target = self.default_node if dpid is None else self.nodes.get(dpid, NodeAddresses())
        changed = False
        for version, attr, value in ((4, "ipv4_if", ipv4_if), (6, "ipv6_if", ipv6_if)):
            current = getattr(target, attr)
            if current is not None and version not in target.announced:
                continue                       # set by hand: that wins
            if value is None:
                if version in target.announced:
                    setattr(target, attr, None)
                    target.announced.discard(version)
                    changed = True
            elif value != current or version not in target.announced:
                setattr(target, attr, value)
                target.announced.add(version)
                changed = True
        if dpid is None:
            pass
        elif target.ipv4_if is None and target.ipv6_if is None:
            self.nodes.pop(dpid, None)
        elif changed:
            self.nodes[dpid] = target
        if changed:
            self._node_addresses_changed()
        return changed

    def node_addresses(self, dpid: int) -> NodeAddresses:
        own = self.nodes.get(dpid, NodeAddresses())
        return NodeAddresses(own.ipv4_if or self.default_node.ipv4_if,
                             own.ipv6_if or self.default_node.ipv6_if)

    # -- VIPs ------------------------------------------------------------------------

    def add_vip(self, prefix, port=0, target_port=None, node_port=None, protocol="any",
                nat=None, new_len=DEFAULT_NEW_LEN, external_ips=(), service=None,
                affinity_timeout=0, external_policy="cluster",
                internal_policy="cluster", source_ranges=()) -> Vip:
        network = parse_prefix(prefix)
        port = parse_int(port, "port", 0, 65535)
        target_port = port if target_port is None else parse_int(
            target_port, "target_port", 0, 65535)
        if port and not target_port:
            raise InvalidInput("must be set (1-65535) when port is set", "target_port")
        if not port and target_port:
            raise InvalidInput("must be 0 when port is 0 (every port keeps its number)",
                               "target_port")
        if node_port is not None:
            node_port = parse_int(node_port, "node_port", 1, 65535)
            if not port:
                raise InvalidInput("needs a VIP port (port 0 means every port)", "node_port")
        if protocol not in PROTOCOLS:
            raise InvalidInput(f"{protocol!r} is not one of tcp, udp, sctp, any", "protocol")
        expected_nat = NAT_FOR_VERSION[network.version]
        if nat is not None and nat != expected_nat:
            if nat not in NAT_FOR_VERSION.values():
                raise InvalidInput(f"{nat!r} is not nat44 or nat66", "nat")
            raise InvalidInput(f"{nat} does not match the IPv{network.version} prefix "
                               f"{network} (use {expected_nat})", "nat")
        new_len = parse_power_of_2(new_len, "new_len", MAX_NEW_LEN)
        policies = parse_policies(affinity_timeout, external_policy, internal_policy,
                                  source_ranges)
        if isinstance(external_ips, str) or not isinstance(external_ips, (list, tuple)):
            raise InvalidInput("must be a list of addresses", "external_ips")
        externals = tuple(dict.fromkeys(
            parse_address(a, "external_ips", network.version) for a in external_ips))
        if (network, port) in self.vips:
            raise Conflict(f"VIP {network} port {port} already exists")
        self._check_overlaps(network, port, node_port, externals, protocol)
        vip = Vip(self._free_vip_id(), network, port, target_port, node_port, protocol,
                  new_len, externals, service, **policies)
        self._rebuild_table(vip)
        self.adopt(vip)
        return vip

    def adopt(self, vip: Vip) -> None:
        """Add a VIP that is already whole (add_vip's, or a copy of another model's)."""
        self.vips[vip.key] = vip
        self._by_id[vip.id] = vip
        for address in self._addresses_of(vip):
            self._by_address.setdefault(address, []).append(vip)
        if vip.prefix.prefixlen != vip.prefix.max_prefixlen:
            self._wide.append(vip)
        if vip.node_port is not None:
            self._by_node_port.setdefault(vip.node_port, []).append(vip)
        for address, pod in vip.pods.items():
            self._pod_ports.update(_pod_ports(vip, address))
            if not pod.active:
                self._draining.setdefault(vip.id, set()).add(address)

    def _drop(self, vip: Vip) -> None:
        del self.vips[vip.key]
        del self._by_id[vip.id]
        for address in self._addresses_of(vip):
            _unlist(self._by_address, address, vip)
        self._wide = [v for v in self._wide if v is not vip]
        if vip.node_port is not None:
            _unlist(self._by_node_port, vip.node_port, vip)
        for address in vip.pods:
            self._pod_ports.subtract(_pod_ports(vip, address))
        self._pod_ports += Counter()     # (drops the keys at 0)
        self._draining.pop(vip.id, None)

    @staticmethod
    def _addresses_of(vip: Vip) -> List[Address]:
        own = ([vip.prefix.network_address]
               if vip.prefix.prefixlen == vip.prefix.max_prefixlen else [])
        return list(dict.fromkeys(own + list(vip.external_ips)))

    def _vips_for(self, address: Address) -> List[Vip]:
        """The VIPs whose prefix or external IPs hold `address` (of its family)."""
        return self._by_address.get(address, []) + [
            v for v in self._wide if v.version == address.version and address in v.prefix]

    def serves(self, address: Address) -> bool:
        return bool(self._vips_for(address))

    def _free_vip_id(self) -> int:
        """The VIP id travels in 16 bits of every flow cookie: reuse freed ids."""
        used = self._by_id
        if len(used) >= MAX_VIPS:
            raise Conflict(f"already {MAX_VIPS} VIPs")
        while self._next_vip_id in used:
            self._next_vip_id = self._next_vip_id % MAX_VIPS + 1
        vip_id = self._next_vip_id
        self._next_vip_id = vip_id % MAX_VIPS + 1
        return vip_id

    def _check_overlaps(self, network, port, node_port, externals, protocol) -> None:
        protos = set(PROTOCOLS[protocol])

        def sharing(others):
            return [o for o in others if protos & set(o.ip_protos)]
        for other in sharing(self._by_node_port.get(node_port, [])):
            raise Conflict(f"node_port {node_port} is already used by VIP {other.label()}")
        # A prefix of several addresses may hold any other; one address, only those.
        others = (self.vips.values() if network.prefixlen != network.max_prefixlen
                  else self._vips_for(network.network_address))
        for other in sharing(others):
            if other.port == port and other.prefix.version == network.version and (
                    other.prefix.overlaps(network)) and other.prefix != network:
                raise Conflict(f"{network} port {port} overlaps VIP {other.label()}")
        for address in externals:
            for other in sharing(self._by_address.get(address, [])):
                if other.port == port and address in other.external_ips:
                    raise Conflict(f"external_ip {address} port {port} is already used by "
                                   f"VIP {other.label()}")

    def find_vip(self, prefix, port=None) -> Vip:
        network = parse_prefix(prefix)
        if port is not None:
            port = parse_int(port, "port", 0, 65535)
            try:
                return self.vips[(network, port)]
            except KeyError:
                raise NotFound(f"no VIP {network} port {port}") from None
        matches = [v for (n, _), v in self.vips.items() if n == network]
        if not matches:
            raise NotFound(f"no VIP {network}")
        if len(matches) > 1:
            ports = ", ".join(str(v.port) for v in matches)
            raise InvalidInput(f"{network} has several VIPs (ports {ports}): give the port",
                               "port")
        return matches[0]

    def set_policies(self, vip: Vip, affinity_timeout=0, external_policy="cluster",
                     internal_policy="cluster", source_ranges=()) -> None:
        """Session affinity, traffic policies and source ranges, which a VIP may change
        in place: sessions already open keep their pods; new ones follow the new
        settings."""
        for name, value in parse_policies(affinity_timeout, external_policy,
                                          internal_policy, source_ranges).items():
            setattr(vip, name, value)
        self._rebuild_local_tables(vip)

    def del_vip(self, prefix, port=None) -> Vip:
        vip = self.find_vip(prefix, port)
        self._drop(vip)
        return vip

    # -- pods ------------------------------------------------------------------------

    def add_pods(self, vip: Vip, addresses: Iterable) -> List[Address]:
        return self._change_pods(vip, self._parse_pod_list(vip, addresses), [])[0]

    def del_pods(self, vip: Vip, addresses: Iterable) -> List[Address]:
        """Stop choosing these pods; they stay (draining) while they have sessions."""
        return self._change_pods(vip, [], self._parse_pod_list(vip, addresses))[1]

    def change_pods(self, vip: Vip, add: Iterable, remove: Iterable
                    ) -> Tuple[List[Address], List[Address]]:
        """Add some pods and remove others (as del_pods) in one change: one new table.
        Either list may be empty; both are checked in full before any change."""
        return self._change_pods(vip, self._parse_pod_list(vip, add, empty_ok=True),
                                 self._parse_pod_list(vip, remove, empty_ok=True))

    def _change_pods(self, vip: Vip, added: List[Address], removed: List[Address]
                     ) -> Tuple[List[Address], List[Address]]:
        for address in added:
            pod = vip.pods.get(address)
            if pod is not None and pod.active:
                raise Conflict(f"{address} is already a pod of VIP {vip.label()}")
        for address in removed:
            pod = vip.pods.get(address)
            if pod is None or not pod.active:
                raise NotFound(f"{address} is not a pod of VIP {vip.label()}")
        for address in added:
            pod = vip.pods.get(address)
            if pod is not None:  # a draining pod comes back with its counters
                pod.active = True
                self._undrain(vip, address)
            else:
                vip.pods[address] = Pod(address, self._next_pod_id)
                self._next_pod_id = self._next_pod_id % 0xFFFFFF + 1
                self._pod_ports.update(_pod_ports(vip, address))
        for address in removed:
            vip.pods[address].active = False
            self._draining.setdefault(vip.id, set()).add(address)
        self._rebuild_table(vip)
        return added, removed

    def pods_after(self, vip: Vip, addresses, remove: bool = False) -> Optional[List[Address]]:
        """The active pods a pod change would leave (None when the list is invalid: the
        change itself will say why), for building its table ahead."""
        try:
            parsed = set(self._parse_pod_list(vip, addresses))
        except InvalidInput:
            return None
        active = set(vip.active_pods())
        return sorted(active - parsed if remove else active | parsed, key=str)

    def _rebuild_table(self, vip: Vip) -> None:
        """The VIP's table of its active pods (and its local tables), from the store:
        swapped in whole, so lookups never see a half-filled table."""
        vip.table = self.tables.table(vip.active_pods(), vip.new_len)
        self._rebuild_local_tables(vip)

    def _rebuild_local_tables(self, vip: Vip) -> None:
        """A VIP with a local traffic policy picks among the pods of the node the client
        entered: one table per node's subnets, made here at the change, never when a
        packet asks."""
        if not vip.has_local_policy():
            vip.local_tables = None
            return
        active = vip.active_pods()
        vip.local_tables = {
            subnets: self.tables.table([p for p in active if _on(p, subnets)], vip.new_len)
            for subnets in self._node_subnets()}

    def _node_subnets(self) -> Set[tuple]:
        return {tuple(self.default_node.subnets())} | {
            tuple(self.node_addresses(dpid).subnets()) for dpid in self.nodes}

    def _node_addresses_changed(self) -> None:
        for vip in self.vips.values():
            if vip.has_local_policy():
                self._rebuild_local_tables(vip)

    def local_table(self, vip: Vip, subnets: tuple) -> MaglevTable:
        """The table of the VIP's pods on these subnets (a node's): made at the change."""
        table = (vip.local_tables or {}).get(subnets)
        if table is None:   # (a node the change did not know: every change knows them all)
            table = self.tables.table([p for p in vip.active_pods() if _on(p, subnets)],
                                      vip.new_len)
        return table

    def forget_pod(self, vip: Vip, address: Address) -> None:
        """A drained pod's last session ended (or it was flushed)."""
        pod = vip.pods.get(address)
        if pod is not None and not pod.active:
            del vip.pods[address]
            self._undrain(vip, address)
            for key in _pod_ports(vip, address):
                self._pod_ports[key] -= 1
                if self._pod_ports[key] <= 0:
                    del self._pod_ports[key]

    def _undrain(self, vip: Vip, address: Address) -> None:
        draining = self._draining.get(vip.id)
        if draining is not None:
            draining.discard(address)
            if not draining:
                del self._draining[vip.id]

    def draining_pods(self) -> List[Tuple[Vip, Address]]:
        """Every removed pod that still has sessions, with its VIP."""
        return [(self._by_id[vip_id], address) for vip_id, addresses in self._draining.items()
                for address in sorted(addresses, key=str)]

    def has_reply_key(self, key: tuple) -> bool:
        """Does a VIP still have this pod, target port and protocol
        (kp_app.pipeline.reply_key: its reply flows are then in use)?"""
        return self._pod_ports.get(key, 0) > 0

    def _parse_pod_list(self, vip: Vip, addresses, empty_ok: bool = False) -> List[Address]:
        if isinstance(addresses, str) or not isinstance(addresses, (list, tuple)):
            raise InvalidInput("must be a list of addresses", "addresses")
        if not addresses and not empty_ok:
            raise InvalidInput("give at least one pod address", "addresses")
        parsed = [parse_address(a, "addresses", vip.version) for a in addresses]
        seen = set()
        for address in parsed:
            if address in seen:
                raise InvalidInput(f"{address} is listed twice", "addresses")
            seen.add(address)
        return parsed

    # -- SNAT interfaces (the seed's `set interface nat4 in <intfc>`) ---------------------

    def set_interface(self, nat, port_name, delete=False) -> None:
        if nat not in self.interfaces:
            raise InvalidInput(f"{nat!r} is not nat4 or nat6", "nat")
        # Linux's rules for interface names (dev_valid_name): 1-15 bytes, no '/' or space.
        if (not isinstance(port_name, str) or not 0 < len(port_name.encode()) <= 15
                or port_name in (".", "..") or any(c == "/" or c.isspace() for c in port_name)):
            raise InvalidInput(f"{port_name!r} is not an interface name", "interface")
        names = self.interfaces[nat]
        if delete:
            if port_name not in names:
                raise NotFound(f"{port_name} has no {nat} feature")
            names.remove(port_name)
        else:
            if port_name in names:
                raise Conflict(f"{port_name} already has {nat}")
            names.append(port_name)

    # -- data-path lookups -----------------------------------------------------------

    def vip_for_destination(self, ip_proto: int, dst: Address, dst_port: int) -> Optional[Vip]:
        """The VIP a client packet is for, or None: the most specific prefix (as the
        switch's flow priorities rank them), then a VIP of that port over one of every
        port."""
        best, best_rank = None, None
        for vip in self._vips_for(dst):
            if ip_proto not in vip.ip_protos or (vip.port and vip.port != dst_port):
                continue
            rank = (vip.prefix.prefixlen, bool(vip.port))
            if best is None or rank > best_rank:
                best, best_rank = vip, rank
        return best

    def vip_for_node_port(self, version: int, ip_proto: int, node_port: int) -> Optional[Vip]:
        for vip in self._by_node_port.get(node_port, []):
            if ip_proto in vip.ip_protos and vip.version == version:
                return vip
        return None

    def vip_by_id(self, vip_id: int) -> Optional[Vip]:
        return self._by_id.get(vip_id)
