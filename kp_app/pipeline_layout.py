"""kp's OpenFlow table layout, declared once: the tables, and every class of flow kp_app
puts in them (its table, its priority or priority range, the kind in its cookie, the
session modes that have it). kp_app.pipeline and kp_app.ct_pipeline build their flows
with these numbers, and tests/switch/test_pipeline_layout.py checks that every flow kp_app
installs on a switch, in every mode, is of exactly one class declared here for that mode
(and that each class declared for a mode is installed by the rig's configuration).

    python -m kp_app.pipeline_layout        # the layout as a table

Every flow carries a cookie: a kp tag, the VIP id, the pod id and the flow's kind, so a
VIP's or a pod's flows go with one cookie-masked delete, and flow-removed messages say
whose flow ended. A pod's reply flows are the exception: VIPs with the same pod and
target port share them, so they carry only their kind and go when the last VIP does.

Session flows have a table of their own so that adding one overlaps nothing but that
table's few entries: a switch that caches its decisions (kp-switch) then keeps the rest
of the node's traffic cached while sessions come and go.
"""
from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional, Tuple

# Tables. CONNTRACK and LB only on a switch that makes sessions with conntrack (Open
# vSwitch, "ct" mode; kp_app.ct_pipeline); kp-switch ("lb") needs no table of its own:
# its kp_lb action makes the session from the VIP's table kp_app sent it.
SERVICES, SESSIONS, FORWARDING, CONNTRACK, LB = 0, 1, 2, 3, 4
TABLE_NAMES = {SERVICES: "SERVICES", SESSIONS: "SESSIONS", FORWARDING: "FORWARDING",
               CONNTRACK: "CONNTRACK", LB: "LB"}

# The kinds in a flow's cookie (its low 16 bits).
(KIND_BASE, KIND_VIP, KIND_FORWARD, KIND_REVERSE, KIND_HOST, KIND_REPLY_MISS, KIND_NODE_PORT,
 KIND_ROUTE, KIND_CT, KIND_LB) = range(1, 11)

# The session modes (kp_app.ryu_shim.session_mode), and a fabric switch (every port
# towards another switch) that only carries traffic between nodes.
PACKET_IN, CT, LB_MODE, TRANSIT = "packet-in", "ct", "lb", "transit"
NODE_MODES = frozenset({PACKET_IN, CT, LB_MODE})
SWITCHES_SESSIONS = frozenset({CT, LB_MODE})


@dataclass(frozen=True)
class FlowClass:
    """Flows of one purpose: in `table`, at priority `priority` (to `priority + span`,
    e.g. a prefix length added so that longer prefixes win), with one of `kinds` in
    their cookie, on switches in `modes`."""
    name: str
    table: int
    priority: int
    kinds: Tuple[int, ...]
    modes: FrozenSet[str]
    match: str
    does: str
    span: int = 0

    def holds(self, table: int, priority: int, kind: int) -> bool:
        return (table == self.table and self.priority <= priority <= self.priority + self.span
                and kind in self.kinds)


def _c(name, table, priority, kinds, modes, match, does, span=0) -> FlowClass:
    return FlowClass(name, table, priority, tuple(kinds), frozenset(modes), match, does, span)


ALL = NODE_MODES | {TRANSIT}

HOST_GUARD_OWN_PORT = _c("host-guard-own-port", SERVICES, 1011, [KIND_HOST], SWITCHES_SESSIONS,
                         "ARP/ND claiming a learned host's address, in at the port it is "
                         "bound to (kp_app.hosts)", "controller, and FORWARDING")
HOST_GUARD = _c("host-guard", SERVICES, 1010, [KIND_HOST], SWITCHES_SESSIONS,
                "ARP/ND claiming a learned host's address, from any other port",
                "controller only (which refuses the claim)")
NEIGHBOUR_GUARD = _c("neighbour-guard", SERVICES, 1010, [KIND_BASE], SWITCHES_SESSIONS,
                     "ARP/ND claiming kp's own addresses (the node's, VIPs, external IPs)",
                     "controller only (kp answers for them; never on to hosts)")
CONTROL = _c("control", SERVICES, 1000, [KIND_BASE], ALL,
             "ARP, IPv6 neighbour discovery, kp's link probes",
             "controller (learn hosts, answer for the node's, gateway's and VIPs' addresses, "
             "discover the fabric); in ct and lb modes ARP and ND also go on to FORWARDING")
NODE_PORT = _c("node-port", SERVICES, 700, [KIND_NODE_PORT], NODE_MODES,
               "the node's address, protocol, a VIP's node_port", "SESSIONS")
VIP = _c("vip", SERVICES, 500, [KIND_VIP], NODE_MODES,
         "a VIP: prefix (or an external IP), protocol, port; priority + prefix length",
         "SESSIONS; a VIP compiled into the switch: conntrack (ct) or kp_lb (lb)", span=128)
REPLY_TRACKED = _c("reply-tracked", SERVICES, 401, [KIND_REPLY_MISS], {CT},
                   "a pod's packet from a target port, to this node's subnet",
                   "ct(zone, nat) -> CONNTRACK: a compiled session's reply")
REPLY = _c("reply", SERVICES, 400, [KIND_REPLY_MISS], NODE_MODES,
           "a pod's packet from a VIP's target port", "SESSIONS")
TRANSIT_ROUTE = _c("transit-route", SERVICES, 100, [KIND_ROUTE], {TRANSIT},
                   "eth_dst = a node's gateway MAC", "output towards that node")
SERVICES_MISS = _c("services-miss", SERVICES, 0, [KIND_BASE], ALL,
                   "anything else", "FORWARDING (a transit switch: dropped)")

SESSION = _c("session", SESSIONS, 900, [KIND_FORWARD, KIND_REVERSE, KIND_BASE], NODE_MODES,
             "a session's exact 5-tuple, either way (kind BASE: a pod's packet from its "
             "target port that is no session's, the client reached the pod directly)",
             "DNAT to the pod / SNAT back to the VIP, output (BASE: forwarded as it is)")
REPLY_LOCAL = _c("reply-local", SESSIONS, 400, [KIND_REPLY_MISS], NODE_MODES,
                 "a pod's reply from its target port to this node's subnet, no session "
                 "flow", "controller")
REPLY_ROUTED = _c("reply-routed", SESSIONS, 300, [KIND_REPLY_MISS], NODE_MODES,
                  "a pod's reply from its target port to elsewhere",
                  "FORWARDING (routed to the node where its session lives)")
SESSIONS_MISS = _c("sessions-miss", SESSIONS, 0, [KIND_BASE], NODE_MODES,
                   "anything else: a VIP's or a node port's first packet",
                   "controller (a new session)")

NEIGHBOUR_TO_NODE = _c("neighbour-to-node", FORWARDING, 1000, [KIND_BASE], SWITCHES_SESSIONS,
                       "ARP and ND to the gateway MAC", "dropped (the controller had a copy)")
HOST_ROUTE = _c("host-route", FORWARDING, 310, [KIND_HOST], NODE_MODES,
                "to the gateway MAC, for a learned host", "rewrite MACs, output to its port")
ROUTE = _c("route", FORWARDING, 300, [KIND_ROUTE], NODE_MODES,
           "to the gateway MAC, for another node's subnet; priority + prefix length / 8",
           "that node's gateway MAC, out of the port towards it", span=16)
GATEWAY = _c("gateway", FORWARDING, 150, [KIND_BASE], NODE_MODES,
             "to the gateway MAC, anything else", "controller (resolve, ping the node)")
HOST = _c("host", FORWARDING, 100, [KIND_HOST], NODE_MODES,
          "eth_dst = a learned host", "output to its port")
FORWARDING_MISS = _c("forwarding-miss", FORWARDING, 0, [KIND_BASE], NODE_MODES,
                     "anything else", "flood")

CT_TRACKED = _c("ct-tracked", CONNTRACK, 200, [KIND_BASE], {CT},
                "+trk+est, +trk+rel: translated by ct(nat)", "FORWARDING (resubmit)")
CT_NEW = _c("ct-new", CONNTRACK, 100, [KIND_CT], {CT},
            "+trk+new, reg1 = a compiled VIP's id",
            "multipath(symmetric_l3l4+udp) -> reg0, resubmit(LB)")
CT_MISS = _c("ct-miss", CONNTRACK, 0, [KIND_BASE], {CT},
             "anything else (a reply no conntrack entry knows)", "SESSIONS (resubmit)")
LB_HAIRPIN = _c("lb-hairpin", LB, 200, [KIND_LB], {CT},
                "reg1 = VIP id, a pod of the VIP as the source",
                "SESSIONS (hairpin: the controller rewrites the source too)")
LB_ENTRY = _c("lb-entry", LB, 100, [KIND_LB], {CT},
              "reg1 = VIP id, reg0 = the table's entry i",
              "ct(commit, zone, nat(dst=pod:target port)) -> FORWARDING")
LB_MISS = _c("lb-miss", LB, 0, [KIND_BASE], {CT}, "anything else", "SESSIONS (resubmit)")

LAYOUT: Tuple[FlowClass, ...] = (
    HOST_GUARD_OWN_PORT, HOST_GUARD, NEIGHBOUR_GUARD, CONTROL, NODE_PORT, VIP, REPLY_TRACKED, REPLY, TRANSIT_ROUTE, SERVICES_MISS,
    SESSION, REPLY_LOCAL, REPLY_ROUTED, SESSIONS_MISS,
    NEIGHBOUR_TO_NODE, HOST_ROUTE, ROUTE, GATEWAY, HOST, FORWARDING_MISS,
    CT_TRACKED, CT_NEW, CT_MISS, LB_HAIRPIN, LB_ENTRY, LB_MISS)


def classes(table: int, priority: int, kind: int, mode: Optional[str] = None) -> list:
    """The declared classes a flow of this table, priority and cookie kind is of (on a
    switch in `mode`; None: any). The layout is right when that is exactly one."""
    return [c for c in LAYOUT if c.holds(table, priority, kind)
            and (mode is None or mode in c.modes)]


def describe() -> str:
    """The layout as a table, table by table, highest priority first."""
    kinds = {value: name[5:] for name, value in globals().items()
             if name.startswith("KIND_") and isinstance(value, int)}
    lines = []
    for table in sorted(TABLE_NAMES):
        lines.append(f"Table {table}, {TABLE_NAMES[table]}:")
        for c in sorted((c for c in LAYOUT if c.table == table), key=lambda c: -c.priority):
            prio = f"{c.priority}" + (f"-{c.priority + c.span}" if c.span else "")
            modes = "all" if c.modes >= ALL else "node" if c.modes == NODE_MODES else \
                ",".join(sorted(c.modes))
            lines.append(f"  {prio:>8}  {c.match}")
            lines.append(f"{'':12}-> {c.does}   [{c.name}; "
                         f"{'/'.join(kinds[k] for k in c.kinds)}; {modes}]")
    return "\n".join(lines)


def by_name() -> Dict[str, FlowClass]:
    return {c.name: c for c in LAYOUT}


if __name__ == "__main__":
    print(describe())
