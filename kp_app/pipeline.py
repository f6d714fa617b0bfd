"""kp's OpenFlow 1.3 pipeline, and the switch programming it needs, as plain data.

The tables, and every class of flow in them with its priority and cookie kind, are
declared in kp_app.pipeline_layout (`python -m kp_app.pipeline_layout` prints them); the
builders here take their numbers from there. In short: SERVICES (table 0) says which
packets are a service's business (ARP/ND and link probes to the controller, VIPs and node
ports to SESSIONS, pods' replies from target ports); SESSIONS (1) holds the packet-in
mode's session flows, DNAT one way and SNAT back, and sends a new session's first packet
to the controller; FORWARDING (2) is L2 among the node's hosts and L3 between nodes.

On a switch that makes sessions itself (Open vSwitch, "ct" mode), a compiled VIP's
classifier flow goes to conntrack instead, and tables 3 (CONNTRACK) and 4 (LB) pick the
pod and commit the session there: kp_app.ct_pipeline describes them. On kp-switch ("lb"
mode) it ends in kp's own kp_lb action instead, and the switch's C data path makes the
session from the VIP's table that kp_app sent it (kp_app.lb_pipeline); it needs no table
of its own. What either leaves to the controller still comes here, to SESSIONS, as on
any switch.

A transit switch (every port goes to another switch, e.g. a cluster's fabric) gets only
the link probe flow and, per node, "eth_dst = that node's gateway MAC -> the port
towards it"; everything else is dropped.
"""
import ipaddress
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from kp_app.frames import LINK_PROBE_ETHERTYPE

from kp_app import pipeline_layout as layout
from kp_app.pipeline_layout import (CONNTRACK, FORWARDING, KIND_BASE, KIND_CT,  # noqa: F401
                                    KIND_FORWARD, KIND_HOST, KIND_LB, KIND_NODE_PORT,
                                    KIND_REPLY_MISS, KIND_REVERSE, KIND_ROUTE, KIND_VIP, LB,
                                    SERVICES, SESSIONS)

# The priorities the code here and kp_app.node use, from the declared layout.
PRIO_CONTROL = layout.CONTROL.priority
PRIO_NEIGHBOUR_GUARD = layout.NEIGHBOUR_GUARD.priority   # + 1: from the host's own port
PRIO_SESSION = layout.SESSION.priority
PRIO_NODE_PORT = layout.NODE_PORT.priority
PRIO_VIP = layout.VIP.priority            # + the prefix length
PRIO_REPLY = layout.REPLY.priority        # SERVICES; REPLY_LOCAL in SESSIONS is the same
PRIO_REPLY_ROUTED = layout.REPLY_ROUTED.priority
PRIO_REPLY_TRACKED = layout.REPLY_TRACKED.priority
PRIO_HOST_ROUTE = layout.HOST_ROUTE.priority
PRIO_ROUTE = layout.ROUTE.priority        # + the prefix length / 8
PRIO_GATEWAY = layout.GATEWAY.priority
PRIO_HOST = layout.HOST.priority
PRIO_TRANSIT_ROUTE = layout.TRANSIT_ROUTE.priority
PRIO_MISS = 0                             # every table's last flow

COOKIE_TAG = 0x6B
MASK_TAG = 0xFF << 56
MASK_VIP = MASK_TAG | (0xFFFF << 40)
MASK_POD = MASK_VIP | (0xFFFFFF << 16)
MASK_KIND = 0xFFFF
MASK_ALL = (1 << 64) - 1

OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_FLOOD = 0xFFFFFFFB
OFPP_IN_PORT = 0xFFFFFFF8

# Every session Open vSwitch keeps for kp is in one conntrack zone: both directions must
# meet the same entry. TO_CONNTRACK looks a packet up there, applies the translation of
# the connection it belongs to, and continues in CONNTRACK (kp_app.ct_pipeline).
CT_ZONE = 0x6B
TO_CONNTRACK = ("ct", False, CT_ZONE, CONNTRACK, ("nat",))


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
    out_port: Optional[int] = None  # only flows that output there
    priority: Optional[int] = None  # set: only the flow of exactly this match and priority


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
class ConntrackFlush:
    """End the sessions a switch keeps in its conntrack (Open vSwitch's NXT_CT_FLUSH;
    others ignore it): those of `proto` in `zone` whose original direction went to
    `orig_dst` (and port), or whose replies come from `reply_src` (and port); a port of
    0 is any port."""
    zone: int
    proto: int
    orig_dst: Optional[str] = None
    orig_dst_port: int = 0
    reply_src: Optional[str] = None
    reply_src_port: int = 0


@dataclass(frozen=True)
class LbConf:
    """kp-switch's own sessions (KP_LB_CONF, kp_proto.lb): their table's buckets and idle
    timeouts in seconds, and the node's addresses that hairpin requests come from (None:
    the VIP's). Sent on every connect: the same bucket count keeps the sessions."""
    buckets: int
    tcp_established: int
    tcp_closing: int
    tcp_opening: int
    udp: int
    hairpin4: Optional[str] = None
    hairpin6: Optional[str] = None


@dataclass(frozen=True)
class LbVip:
    """One VIP's new-connection table and pods, for kp-switch to make its sessions from
    (KP_LB_TABLE and KP_LB_PODS chunks, then the KP_LB_VIP that commits them):
    `table` holds indexes into `pods`, (address, port; port 0 keeps the packet's): the
    model's MaglevTable.slots itself (an array, not copied; never hashed)."""
    vip_id: int
    version: int
    table: Sequence[int]
    pods: Tuple[Tuple[str, int], ...]
    basis: int


@dataclass(frozen=True)
class LbVipDelete:
    """kp-switch forgets the VIP; its sessions stay until idle."""
    vip_id: int


@dataclass(frozen=True)
class LbFlush:
    """End kp-switch's sessions of a VIP now: all of them, or those to `pod` (address,
    port; port 0: any)."""
    vip_id: int
    pod: Optional[Tuple[str, int]] = None


@dataclass(frozen=True)
class LbStatsRequest:
    """kp-switch's session counters, per VIP from `first_vip_id` on (the reply says
    where the next page starts)."""
    first_vip_id: int = 0


@dataclass(frozen=True)
class LbSessionsRequest:
    """A sample of kp-switch's sessions (at most kp_proto.lb.MAX_SESSIONS_LISTED)."""
    most: int


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


NEIGHBOUR_MATCHES = ({"eth_type": 0x0806},
                     {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 135},
                     {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 136})


def base_flows(gateway_mac: str, switch_forwards_neighbours: bool = False) -> list:
    """What every node switch gets on connect, before any service.

    ARP and neighbour discovery go to the controller, which learns the hosts, answers for
    the node's and the services' addresses and forwards the rest. A switch that makes
    sessions itself (`switch_forwards_neighbours`) must go on without the controller, so
    it forwards them too (the controller gets a copy, and then forwards nothing).
    """
    to_controller = (("output", OFPP_CONTROLLER),)
    base = cookie(KIND_BASE)
    neighbours = dict(goto=FORWARDING) if switch_forwards_neighbours else {}
    flows = [
        flow(SERVICES, PRIO_CONTROL, {"eth_type": LINK_PROBE_ETHERTYPE}, to_controller,
             cookie=base),
        flow(FORWARDING, PRIO_GATEWAY, {"eth_dst": gateway_mac}, to_controller, cookie=base),
    ]
    for match in NEIGHBOUR_MATCHES:
        flows.append(flow(SERVICES, PRIO_CONTROL, match, to_controller, cookie=base,
                          **neighbours))
        if switch_forwards_neighbours:  # to the node itself: the copy was enough
            flows.append(flow(FORWARDING, PRIO_CONTROL, {"eth_dst": gateway_mac, **match},
                              cookie=base))
    return flows + [
        flow(SERVICES, PRIO_MISS, {}, goto=FORWARDING, cookie=base),
        flow(SESSIONS, PRIO_MISS, {}, to_controller, cookie=base),
        flow(FORWARDING, PRIO_MISS, {}, (("output", OFPP_FLOOD),), cookie=base),
    ]


def claim_matches(network) -> list:
    """Matches of the ARP and ND that claim an address of `network` for their sender.
    IPv4: ARP whose sender address is in it. IPv6: NS and NA from an address in it, and
    NA whose target is it (OpenFlow 1.3 matches ipv6_nd_target without a mask: for a
    prefix wider than /128 only the sources)."""
    if network.version == 4:
        return [{"eth_type": 0x0806, "arp_spa": network_match(network)}]
    icmp6 = {"eth_type": 0x86DD, "ip_proto": 58}
    matches = [{**icmp6, "icmpv6_type": kind, "ipv6_src": network_match(network)}
               for kind in (135, 136)]
    if network.prefixlen == network.max_prefixlen:
        matches.append({**icmp6, "icmpv6_type": 136,
                        "ipv6_nd_target": str(network.network_address)})
    return matches


def neighbour_guard_flows(network) -> list:
    """On a switch that forwards ARP and ND itself (base_flows' `switch_forwards_neighbours`):
    the ARP and ND that claim an address of `network`, one of kp's own (the node's, a VIP
    prefix, an external IP), go to the controller only, never on to other hosts. kp
    answers for those addresses; a host that claims one (a gratuitous ARP, an ARP reply,
    an unsolicited NA, a solicitation from it) is refused there (kp_app.node)."""
    return [flow(SERVICES, PRIO_NEIGHBOUR_GUARD, m, (("output", OFPP_CONTROLLER),),
                 cookie=cookie(KIND_BASE)) for m in claim_matches(network)]


def host_guard_flows(address, port: int) -> list:
    """On such a switch, for a host kp learned (kp_app.hosts: bound to `port`): ARP and
    ND that claim its address go on as any (to the controller, and FORWARDING) only from
    its own port; from any other, to the controller only (which refuses them), so that
    no host can tell the others it is this one."""
    to_controller = (("output", OFPP_CONTROLLER),)
    host = cookie(KIND_HOST)
    flows = []
    for m in claim_matches(ipaddress.ip_network(address)):
        flows.append(flow(SERVICES, PRIO_NEIGHBOUR_GUARD, m, to_controller, cookie=host))
        flows.append(flow(SERVICES, PRIO_NEIGHBOUR_GUARD + 1, {"in_port": port, **m},
                          to_controller, cookie=host, goto=FORWARDING))
    return flows


def strict_delete(f: FlowAdd) -> FlowDelete:
    """Delete exactly this flow (its cookie, table, match and priority)."""
    return FlowDelete(f.cookie, MASK_ALL, f.table, f.match, priority=f.priority)


def transit_flows(gateways) -> list:
    """A fabric switch: [(gateway MAC, port towards that node)] and nothing else."""
    base = cookie(KIND_BASE)
    flows = [FlowDelete(COOKIE_TAG << 56, MASK_TAG),
             flow(SERVICES, PRIO_CONTROL, {"eth_type": LINK_PROBE_ETHERTYPE},
                  (("output", OFPP_CONTROLLER),), cookie=base),
             flow(SERVICES, PRIO_MISS, {}, (), cookie=base)]
    for mac, port in gateways:
        flows.append(flow(SERVICES, PRIO_TRANSIT_ROUTE, {"eth_dst": mac}, (("output", port),),
                          cookie=cookie(KIND_ROUTE)))
    return flows


def route_flows(gateway_mac: str, routes) -> list:
    """[(subnet, next node's gateway MAC, port)] -> the inter-node routes of a node."""
    flows = []
    for subnet, next_mac, port in routes:
        match = {"eth_dst": gateway_mac, "eth_type": 0x0800 if subnet.version == 4 else 0x86DD,
                 addr_field(subnet.version, "dst"): network_match(subnet)}
        flows.append(flow(FORWARDING, PRIO_ROUTE + subnet.prefixlen // 8, match,
                          (("set_field", "eth_src", gateway_mac),
                           ("set_field", "eth_dst", next_mac), ("output", port)),
                          cookie=cookie(KIND_ROUTE)))
    return flows


def host_route_flow(gateway_mac: str, address, mac: str, port: int) -> FlowAdd:
    """Routed packets (to the gateway MAC) for a host of this node."""
    match = {"eth_dst": gateway_mac, "eth_type": 0x0800 if address.version == 4 else 0x86DD,
             addr_field(address.version, "dst"): str(address)}
    return flow(FORWARDING, PRIO_HOST_ROUTE, match,
                (("set_field", "eth_src", gateway_mac), ("set_field", "eth_dst", mac),
                 ("output", port)), cookie=cookie(KIND_HOST))


def ip_match(version: int, proto: int) -> dict:
    return {"eth_type": 0x0800 if version == 4 else 0x86DD, "ip_proto": proto}


def addr_field(version: int, which: str) -> str:
    return f"ipv4_{which}" if version == 4 else f"ipv6_{which}"


PORT_FIELD_PREFIX = {6: "tcp", 17: "udp", 132: "sctp"}   # the protocols with ports kp proxies


def port_field(proto: int, which: str) -> str:
    return f"{PORT_FIELD_PREFIX[proto]}_{which}"


def network_match(network) -> object:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return (str(network.network_address), str(network.netmask))


def vip_flows(vip, node_addresses, compiled: bool = False, compile_external: bool = False,
              tracked: bool = False, switch_actions: Optional[tuple] = None,
              replies: bool = True) -> list:
    """The classifier flows that take a VIP's packets (and its pods' replies) to SESSIONS,
    where a packet no session flow takes goes to the controller.

    On a switch that makes sessions itself, a `compiled` VIP's ClusterIP (and, with
    `compile_external`, its external IPs) go to the switch's sessions instead: by default
    to conntrack, tagged with the VIP's id in reg1 (kp_app.ct_pipeline), else with
    `switch_actions` (kp-switch's kp_lb, kp_app.lb_pipeline). With `tracked` the pods'
    replies meet conntrack first. Without `replies`, the pods' reply flows are left out
    (a switch that makes every session of the VIP itself needs none).
    """
    flows = []
    to_sessions = dict(goto=SESSIONS)
    to_switch_sessions = dict(actions=switch_actions or (("set_field", "reg1", vip.id),
                                                         TO_CONNTRACK))
    for proto in vip.ip_protos:
        destinations = [network_match(vip.prefix)] + [str(a) for a in vip.external_ips]
        for index, destination in enumerate(destinations):
            match = ip_match(vip.version, proto)
            match[addr_field(vip.version, "dst")] = destination
            if vip.port:
                match[port_field(proto, "dst")] = vip.port
            prefixlen = vip.prefix.prefixlen if index == 0 else vip.prefix.max_prefixlen
            to_switch = compiled and (index == 0 or compile_external)
            flows.append(flow(SERVICES, PRIO_VIP + prefixlen, match,
                              cookie=cookie(KIND_VIP, vip.id),
                              **(to_switch_sessions if to_switch else to_sessions)))
        node_address = node_addresses.for_version(vip.version)
        if vip.node_port and node_address is not None:
            match = ip_match(vip.version, proto)
            match[addr_field(vip.version, "dst")] = str(node_address)
            match[port_field(proto, "dst")] = vip.node_port
            flows.append(flow(SERVICES, PRIO_NODE_PORT, match,
                              cookie=cookie(KIND_NODE_PORT, vip.id), **to_sessions))
        if vip.target_port and replies:  # a port-0 VIP would send all of a pod's traffic up
            for address in vip.pods:
                flows += reply_flows(reply_key(vip, address, proto),
                                     node_addresses.subnet(vip.version), tracked=tracked)
    return flows


def reply_key(vip, address, proto: int) -> tuple:
    """What a pod's reply flows are for: two VIPs with the same pod and target port
    share the very same flows, which belong to this key rather than to either VIP."""
    return (address, vip.target_port, proto)


def _reply_match(key) -> dict:
    address, target_port, proto = key
    match = ip_match(address.version, proto)
    match[addr_field(address.version, "src")] = str(address)
    match[port_field(proto, "src")] = target_port
    return match


def reply_flows(key, local_subnet=None, tracked: bool = False, idle_timeout: int = 0) -> list:
    """A pod's packets from a service's target port (`reply_key`): to SESSIONS, where
    those that no session flow takes go to the controller if they are for this node's
    own subnet, and are routed on otherwise (the session, and its SNAT flow, lives
    where they go). With `tracked` (a switch that makes sessions itself), those for this
    node's subnet meet conntrack first, which gives a session's replies their VIP back.

    They carry no VIP or pod in their cookie: every VIP that has the key adds the same
    flows, deleting a VIP leaves them, and `reply_delete` removes them once no VIP has
    the key any more (with conntrack, `idle_timeout` lets them outlive that while the
    pod's sessions are in use).
    """
    match = _reply_match(key)
    owner = dict(cookie=cookie(KIND_REPLY_MISS), idle_timeout=idle_timeout)
    flows = [flow(SERVICES, PRIO_REPLY, match, goto=SESSIONS, **owner)]
    local = dict(match)
    if local_subnet is not None:
        local[addr_field(key[0].version, "dst")] = network_match(local_subnet)
    if tracked:
        flows.append(flow(SERVICES, PRIO_REPLY_TRACKED, local, (TO_CONNTRACK,), **owner))
    to_controller = (("output", OFPP_CONTROLLER),)
    if local_subnet is None:
        return flows + [flow(SESSIONS, layout.REPLY_LOCAL.priority, match, to_controller,
                             **owner)]
    return flows + [flow(SESSIONS, PRIO_REPLY, local, to_controller, **owner),
                    flow(SESSIONS, PRIO_REPLY_ROUTED, match, goto=FORWARDING, **owner)]


def reply_delete(key) -> FlowDelete:
    """Every table's reply flows of one key, and nothing else: a session's SNAT flow
    matches as much and more, but has another kind in its cookie."""
    return FlowDelete(cookie(KIND_REPLY_MISS), MASK_TAG | MASK_KIND,
                      match=_items(_reply_match(key)))


def session_flows(session, vip, pod_id: int, gateway_mac: str, pod_hop, idle_timeout: int,
                  reply_in_port: Optional[int] = None, unnat_replies: bool = True):
    """The DNAT flow (client -> pod) and the SNAT flow (pod -> client) of one session.

    `pod_hop` is (MAC, switch port) of the pod or of the next node towards it. A session
    with `snat_address` also rewrites the client's source (NodePort to another node's pod,
    hairpin) so that the pod's replies come back through this node. With the seed's
    `set interface nat4|nat6 in <port>` in use, the reply flow matches the port the
    replies come in on, and replies from a port without the feature are forwarded
    without their source rewritten (`unnat_replies` False), as the seed's SNAT node did.
    """
    f, r = session.forward, session.reverse
    version = f.src.version
    pod_mac, pod_out = pod_hop

    def output(port: int) -> tuple:
        # OpenFlow drops a packet sent back out of its in_port unless told IN_PORT.
        return ("output", OFPP_IN_PORT if port == session.client_in_port else port)

    dnat = [("set_field", "eth_src", gateway_mac), ("set_field", "eth_dst", pod_mac),
            ("set_field", addr_field(version, "dst"), str(session.pod))]
    if session.pod_port != f.dst_port:
        dnat.append(("set_field", port_field(f.proto, "dst"), session.pod_port))
    if session.snat_address is not None:
        dnat += [("set_field", addr_field(version, "src"), str(session.snat_address)),
                 ("set_field", port_field(f.proto, "src"), session.snat_port)]
    dnat.append(output(pod_out))
    snat = [("set_field", "eth_src", gateway_mac), ("set_field", "eth_dst", session.client_mac)]
    if unnat_replies:
        snat.append(("set_field", addr_field(version, "src"), str(f.dst)))
    if unnat_replies and f.dst_port != r.src_port:
        snat.append(("set_field", port_field(f.proto, "src"), f.dst_port))
    if session.snat_address is not None:
        snat += [("set_field", addr_field(version, "dst"), str(f.src)),
                 ("set_field", port_field(f.proto, "dst"), f.src_port)]
    snat.append(("output", session.client_in_port) if pod_out != session.client_in_port
                else ("output", OFPP_IN_PORT))
    reply_match = _exact(r)
    if reply_in_port is not None:
        reply_match["in_port"] = reply_in_port
    common = dict(idle_timeout=idle_timeout, notify_removed=True)
    return (flow(SESSIONS, PRIO_SESSION, _exact(f), dnat,
                 cookie=cookie(KIND_FORWARD, vip.id, pod_id), **common),
            flow(SESSIONS, PRIO_SESSION, reply_match, snat,
                 cookie=cookie(KIND_REVERSE, vip.id, pod_id), **common))


def _exact(t) -> dict:
    """A 5-tuple's match."""
    match = ip_match(t.src.version, t.proto)
    match[addr_field(t.src.version, "src")] = str(t.src)
    match[addr_field(t.src.version, "dst")] = str(t.dst)
    match[port_field(t.proto, "src")] = t.src_port
    match[port_field(t.proto, "dst")] = t.dst_port
    return match


def session_deletes(session) -> list:
    """A session's two flows (the reply flow whatever its in_port)."""
    kinds = MASK_TAG | MASK_KIND
    return [FlowDelete(cookie(KIND_FORWARD), kinds, SESSIONS, _items(_exact(session.forward))),
            FlowDelete(cookie(KIND_REVERSE), kinds, SESSIONS, _items(_exact(session.reverse)))]


def host_deletes(port: int) -> FlowDelete:
    """The flows towards the hosts learned behind a port (L2 and routed)."""
    return FlowDelete(cookie(KIND_HOST), MASK_TAG | MASK_KIND, out_port=port)


def host_flow(mac: str, port: int) -> FlowAdd:
    return flow(FORWARDING, PRIO_HOST, {"eth_dst": mac}, (("output", port),),
                cookie=cookie(KIND_HOST))
