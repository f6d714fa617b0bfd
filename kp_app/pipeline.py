"""kp's OpenFlow 1.3 pipeline, and the switch programming it needs, as plain data.

Table 0, SERVICES (what a kube-proxy node does to a packet):
    1000  ARP, IPv6 neighbour discovery           -> controller (learn hosts, answer for
                                                     node, gateway and VIP addresses)
     900  session, client -> service (exact 5-tuple) -> DNAT to the pod, output
     900  session, pod -> client (exact 5-tuple)     -> SNAT to the service, output
     700  node address + node_port, per protocol   -> controller (a new NodePort session)
     500+prefix length: VIP (prefix, protocol, port) -> controller (a new session)
     400  a pod's reply from its target port with no session flow -> controller
       0  -> FORWARDING
Table 1, FORWARDING (plain L2 among the hosts):
     100  eth_dst = a learned host                 -> output to its port
       0  -> flood

Every flow carries a cookie: a kp tag, the VIP id, the pod id and the flow's kind, so a
VIP's or a pod's flows go with one cookie-masked delete, and flow-removed messages say
whose flow ended.
"""
from dataclasses import dataclass, field
from typing import Optional, Tuple

SERVICES, FORWARDING = 0, 1

PRIO_CONTROL = 1000
PRIO_SESSION = 900
PRIO_NODE_PORT = 700
PRIO_VIP = 500
PRIO_REPLY_MISS = 400
PRIO_HOST = 100
PRIO_MISS = 0

COOKIE_TAG = 0x6B
KIND_BASE, KIND_VIP, KIND_FORWARD, KIND_REVERSE, KIND_HOST, KIND_REPLY_MISS, KIND_NODE_PORT = (
    range(1, 8))
MASK_TAG = 0xFF << 56
MASK_VIP = MASK_TAG | (0xFFFF << 40)
MASK_POD = MASK_VIP | (0xFFFFFF << 16)
MASK_ALL = (1 << 64) - 1

OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_FLOOD = 0xFFFFFFFB
OFPP_IN_PORT = 0xFFFFFFF8


def cookie(kind: int, vip_id: int = 0, pod_id: int = 0) -> int:
    return (COOKIE_TAG << 56) | ((vip_id & 0xFFFF) << 40) | ((pod_id & 0xFFFFFF) << 16) | kind


def cookie_parts(value: int) -> Optional[Tuple[int, int, int]]:
    """(kind, vip_id, pod_id), or None for a cookie that is not kp's."""
    if value >> 56 != COOKIE_TAG:
        return None
    return value & 0xFFFF, (value >> 40) & 0xFFFF, (value >> 16) & 0xFFFFFF


def _items(match: dict) -> Tuple:
    return tuple(sorted(match.items()))


@dataclass(frozen=True)
class FlowAdd:
    table: int
    priority: int
    match: Tuple            # sorted (OXM name, value or (value, mask)) pairs
    actions: Tuple = ()     # ("output", port) | ("set_field", name, value)
    goto: Optional[int] = None
    cookie: int = 0
    idle_timeout: int = 0
    notify_removed: bool = False

    @property
    def match_dict(self) -> dict:
        return dict(self.match)


@dataclass(frozen=True)
class FlowDelete:
    cookie: int
    cookie_mask: int
    table: Optional[int] = None     # None: every table
    match: Tuple = ()


@dataclass(frozen=True)
class PacketOut:
    data: bytes
    actions: Tuple
    in_port: Optional[int] = None


@dataclass(frozen=True)
class SetCacheBuckets:
    """For the bundled switch's flow cache (an experimenter message; others ignore it)."""
    buckets: int


@dataclass(frozen=True)
class FlowStatsRequest:
    cookie: int = COOKIE_TAG << 56
    cookie_mask: int = MASK_TAG
    table: Optional[int] = None


@dataclass(frozen=True)
class CacheStatsRequest:
    pass


def flow(table: int, priority: int, match: dict, actions=(), **kw) -> FlowAdd:
    return FlowAdd(table, priority, _items(match), tuple(actions), **kw)


def base_flows() -> list:
    """What every switch gets on connect, before any service."""
    to_controller = (("output", OFPP_CONTROLLER),)
    base = cookie(KIND_BASE)
    return [
        flow(SERVICES, PRIO_CONTROL, {"eth_type": 0x0806}, to_controller, cookie=base),
        flow(SERVICES, PRIO_CONTROL, {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 135},
             to_controller, cookie=base),
        flow(SERVICES, PRIO_CONTROL, {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 136},
             to_controller, cookie=base),
        flow(SERVICES, PRIO_MISS, {}, goto=FORWARDING, cookie=base),
        flow(FORWARDING, PRIO_MISS, {}, (("output", OFPP_FLOOD),), cookie=base),
    ]


def ip_match(version: int, proto: int) -> dict:
    return {"eth_type": 0x0800 if version == 4 else 0x86DD, "ip_proto": proto}


def addr_field(version: int, which: str) -> str:
    return f"ipv4_{which}" if version == 4 else f"ipv6_{which}"


def port_field(proto: int, which: str) -> str:
    return f"{'tcp' if proto == 6 else 'udp'}_{which}"


def network_match(network) -> object:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return (str(network.network_address), str(network.netmask))


def vip_flows(vip, node_addresses) -> list:
    """The classifier flows that send a VIP's new flows to the controller."""
    flows = []
    to_controller = (("output", OFPP_CONTROLLER),)
    for proto in vip.ip_protos:
        destinations = [network_match(vip.prefix)] + [str(a) for a in vip.external_ips]
        for index, destination in enumerate(destinations):
            match = ip_match(vip.version, proto)
            match[addr_field(vip.version, "dst")] = destination
            if vip.port:
                match[port_field(proto, "dst")] = vip.port
            prefixlen = vip.prefix.prefixlen if index == 0 else vip.prefix.max_prefixlen
            flows.append(flow(SERVICES, PRIO_VIP + prefixlen, match, to_controller,
                              cookie=cookie(KIND_VIP, vip.id)))
        node_address = node_addresses.for_version(vip.version)
        if vip.node_port and node_address is not None:
            match = ip_match(vip.version, proto)
            match[addr_field(vip.version, "dst")] = str(node_address)
            match[port_field(proto, "dst")] = vip.node_port
            flows.append(flow(SERVICES, PRIO_NODE_PORT, match, to_controller,
                              cookie=cookie(KIND_NODE_PORT, vip.id)))
        if vip.target_port:  # a port-0 VIP would send all of a pod's traffic up
            for pod in vip.pods.values():
                flows.append(reply_miss_flow(vip, pod, proto))
    return flows


def reply_miss_flow(vip, pod, proto: int) -> FlowAdd:
    """A pod's packet from the service's target port that matched no session flow."""
    match = ip_match(vip.version, proto)
    match[addr_field(vip.version, "src")] = str(pod.address)
    match[port_field(proto, "src")] = vip.target_port
    return flow(SERVICES, PRIO_REPLY_MISS, match, (("output", OFPP_CONTROLLER),),
                cookie=cookie(KIND_REPLY_MISS, vip.id, pod.id))


def session_flows(session, vip, pod_id: int, gateway_mac: str, pod_mac: str, pod_port: int,
                  service_address, service_port: int, idle_timeout: int) -> Tuple[FlowAdd, FlowAdd]:
    """The DNAT flow (client -> pod) and the SNAT flow (pod -> client) of one session."""
    f, r = session.forward, session.reverse
    version = f.src.version

    def exact(t) -> dict:
        match = ip_match(version, t.proto)
        match[addr_field(version, "src")] = str(t.src)
        match[addr_field(version, "dst")] = str(t.dst)
        match[port_field(t.proto, "src")] = t.src_port
        match[port_field(t.proto, "dst")] = t.dst_port
        return match

    dnat = [("set_field", "eth_src", gateway_mac), ("set_field", "eth_dst", pod_mac),
            ("set_field", addr_field(version, "dst"), str(session.pod))]
    if session.pod_port != f.dst_port:
        dnat.append(("set_field", port_field(f.proto, "dst"), session.pod_port))
    dnat.append(("output", pod_port))
    snat = [("set_field", "eth_src", gateway_mac), ("set_field", "eth_dst", session.client_mac),
            ("set_field", addr_field(version, "src"), str(service_address))]
    if service_port != r.src_port:
        snat.append(("set_field", port_field(f.proto, "src"), service_port))
    snat.append(("output", session.client_port))
    common = dict(idle_timeout=idle_timeout, notify_removed=True)
    return (flow(SERVICES, PRIO_SESSION, exact(f), dnat,
                 cookie=cookie(KIND_FORWARD, vip.id, pod_id), **common),
            flow(SERVICES, PRIO_SESSION, exact(r), snat,
                 cookie=cookie(KIND_REVERSE, vip.id, pod_id), **common))


def host_flow(mac: str, port: int) -> FlowAdd:
    return flow(FORWARDING, PRIO_HOST, {"eth_dst": mac}, (("output", port),),
                cookie=cookie(KIND_HOST))
