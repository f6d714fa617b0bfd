"""One switch's share of the controller: its sessions and packet-ins, composed with
its hosts (kp_app.hosts), ARP and neighbour discovery (kp_app.neighbours) and routes
between nodes (kp_app.routing).

A Node turns events (packet-in, flow-removed, stats) into switch programming, returned
as data (kp_app.pipeline messages). It never talks to the switch and never reads the
clock: `now` comes in with each event.

(Over 500 lines: what is left is one switch's programming and the life of its sessions,
which share the node's state at every step; hosts, ARP/ND and routing are out.)
"""
import ipaddress
from typing import Dict, List, Optional, Tuple

from kp_app import ct_pipeline, frames, lb_pipeline, neighbours, pipeline, routing
from kp_app.hosts import HostTable
from kp_app.maglev import MaglevTable
from kp_app.model import Address, ServiceModel, Vip
from kp_app.pipeline import (OFPP_CONTROLLER, OFPP_FLOOD, FlowDelete, PacketOut,
                             addr_field, port_field)
from kp_app.sessions import ClientAffinity, FiveTuple, Session, SessionTable, client_hash
from kp_proto.session_hash import DEFAULT_BASIS as HASH_BASIS

PENDING_PER_HOST = 16       # first packets held while a pod's MAC is being resolved
PENDING_SECONDS = 3.0
# Source ports for sessions whose client is SNATed to the node's address; the node's
# address belongs to no host, so any range works; this one avoids well-known ports.
SNAT_PORT_FIRST, SNAT_PORT_LAST = 32768, 60999
# Where a switch's new sessions are made: by the controller on a packet-in (any OpenFlow
# 1.3 switch), or by the switch itself: with conntrack (Open vSwitch: kp_app.ct_pipeline)
# or in kp-switch's C data path, from the VIP tables kp_app sends it (kp_app.lb_pipeline).
# (Declared with the table layout, kp_app.pipeline_layout, which says what each has.)
MODE_PACKET_IN, MODE_CT, MODE_LB = pipeline.layout.PACKET_IN, pipeline.layout.CT, \
    pipeline.layout.LB_MODE
MODES = (MODE_PACKET_IN, MODE_CT, MODE_LB)


def gateway_mac(dpid: int) -> str:
    """The node's own (gateway) MAC: locally administered, unique per switch."""
    return "02:6b:70:%02x:%02x:%02x" % ((dpid >> 16) & 0xFF, (dpid >> 8) & 0xFF, dpid & 0xFF)


class Node:
    def __init__(self, dpid: int, model: ServiceModel) -> None:
        self.dpid = dpid
        self.model = model
        self.mac = gateway_mac(dpid)
        self.hosts = HostTable()
        self.port_names: Dict[int, str] = {}
        self.sessions = SessionTable(model.conf.buckets)
        self.affinity = ClientAffinity()
        # vip id -> (the VIP's table, this node's subnets, the table of its local pods)
        self.pending: Dict[object, List[Tuple[float, int, bytes]]] = {}
        self.cache_stats: dict = {}
        # Set by KubeProxy from the discovered links: ports that lead to other switches,
        # routes [(subnet, next node's gateway MAC, port)], and whether this switch is a
        # transit (fabric) switch with no hosts of its own.
        self.switch_ports: set = set()
        self.routes: list = []
        self.transit_gateways: Optional[list] = None
        self._snat_next = SNAT_PORT_FIRST
        self.mode = MODE_PACKET_IN
        self.packet_ins = 0     # every one this switch sent (link probes, ARP/ND included)
        self.service_packet_ins = 0     # of those, TCP/UDP packets: sessions to decide
        # vip id -> what the switch holds for it, to send only what a change changes:
        # the compiled flows (ct mode), a lb_pipeline.Compiled (lb mode)
        self._compiled: Dict[int, object] = {}
        self.guards = neighbours.Guards()     # (lb and ct modes)
        # vip id -> (packets, bytes) its compiled classifier flows passed, and
        # vip id -> {table index: new sessions its LB entry made}, from the last flow
        # stats (a session the switch makes is known to the controller only as counts)
        self._compiled_traffic: Dict[int, Tuple[int, int]] = {}
        self._compiled_new: Dict[int, Dict[int, int]] = {}
        # lb mode: the last KP_LB_STATS_REPLY's totals and per-VIP counts
        self.lb_totals: dict = {}
        self.lb_session_list: list = []     # a sample of the switch's own sessions
        self._lb_counts: Dict[int, lb_pipeline.LbCounts] = {}

    # -- programming derived from the model ------------------------------------------

    def full_programming(self, held: Optional[list] = None) -> list:
        """Everything the switch should hold, from scratch (connect, reconnect, role or
        address change). The switch's session flows go with it, so the sessions restart.

        `held`: the kp flows the switch has (FlowAdds, as it reported them when it
        connected): then nothing is deleted first. The flows it lacks or holds otherwise
        are added over what is there (traffic never meets an empty table), the ones it
        holds as they should be are left alone (their counters too), and only those it
        holds beyond the program are deleted, one by one. So the sessions a switch keeps
        itself (ct and lb modes) go on through a controller restart or a reconnect."""
        self.sessions = SessionTable(self.model.conf.buckets)
        if self.transit_gateways is not None:
            return pipeline.transit_flows(self.transit_gateways)
        if held is not None:
            self._adopt_hosts(held)
        msgs = self._programming()
        if held is None:
            return [FlowDelete(pipeline.COOKIE_TAG << 56, pipeline.MASK_TAG)] + msgs
        have = set(held)
        wanted = {(m.table, m.priority, m.match) for m in msgs if isinstance(m, pipeline.FlowAdd)}
        stale = [FlowDelete(f.cookie, pipeline.MASK_ALL, f.table, f.match, priority=f.priority)
                 for f in held if (f.table, f.priority, f.match) not in wanted]
        return [m for m in msgs if not isinstance(m, pipeline.FlowAdd) or m not in have] + stale

    def _adopt_hosts(self, held: list) -> None:
        """The hosts the switch's flows say were learned (by this controller before a
        restart), as if learned again: their flows stay as they are."""
        for f in held:
            parts = pipeline.cookie_parts(f.cookie)
            outputs = [a[1] for a in f.actions if a[0] == "output"]
            if parts is None or parts[0] != pipeline.KIND_HOST or len(outputs) != 1:
                continue
            match = f.match_dict
            if f.priority == pipeline.PRIO_HOST and "eth_dst" in match:
                self.hosts.adopt(match["eth_dst"], outputs[0])
                continue
            macs = [a[2] for a in f.actions if a[:2] == ("set_field", "eth_dst")]
            target = match.get("ipv4_dst") or match.get("ipv6_dst")
            if f.priority == pipeline.PRIO_HOST_ROUTE and macs and isinstance(target, str):
                try:
                    address = ipaddress.ip_address(target)
                except ValueError:
                    continue
                self.hosts.adopt(macs[0], outputs[0], address)

    def _programming(self) -> list:
        msgs: list = pipeline.base_flows(self.mac,
                                         switch_forwards_neighbours=self.mode != MODE_PACKET_IN)
        self._compiled, self.guards = {}, neighbours.Guards()
        if self.mode != MODE_PACKET_IN:
            msgs += self.guards.node_flows(self.model.node_addresses(self.dpid))
        if self.mode == MODE_CT:
            msgs += ct_pipeline.base_flows()
        msgs.append(pipeline.SetCacheBuckets(self.model.conf.buckets))
        msgs += self.conf_programming()     # before any VIP's table
        msgs += pipeline.route_flows(self.mac, self.routes)
        for vip in self.model.vips.values():
            msgs += self.vip_programming(vip)
        for mac, port in self.hosts.mac_items():
            msgs.append(pipeline.host_flow(mac, port))
        for address, host in self.hosts.items():
            msgs.append(pipeline.host_route_flow(self.mac, address, host.mac, host.port))
            if self.mode != MODE_PACKET_IN:
                msgs += pipeline.host_guard_flows(address, host.port)
        return msgs

    def route_programming(self) -> list:
        """The inter-node routes alone, after the links changed."""
        if self.transit_gateways is not None:
            return pipeline.transit_flows(self.transit_gateways)
        routes = FlowDelete(pipeline.cookie(pipeline.KIND_ROUTE),
                            pipeline.MASK_TAG | pipeline.MASK_KIND)
        return [routes] + pipeline.route_flows(self.mac, self.routes)

    def conf_programming(self) -> list:
        """kp-switch's session table after a change of buckets or timeout (lb mode)."""
        if self.mode != MODE_LB or self.transit_gateways is not None:
            return []
        return [lb_pipeline.lb_conf(self.model.conf, self.model.node_addresses(self.dpid))]

    def vip_programming(self, vip: Vip) -> list:
        """All of a VIP's programming. What the switch makes the VIP's sessions with
        comes first, before the flows that lead packets to it (lb mode: a VIP the switch
        does not know drops them)."""
        if self.transit_gateways is not None:
            return []
        msgs = self.compiled_programming(vip)
        sent = {m for m in msgs if isinstance(m, pipeline.FlowAdd)}
        node = self.model.node_addresses(self.dpid)
        flows = lb_pipeline.vip_flows(vip, node) if self.mode == MODE_LB else pipeline.vip_flows(
            vip, node, self.mode == MODE_CT and ct_pipeline.why_not_compiled(vip) is None,
            ct_pipeline.external_compiled(vip), tracked=self.mode == MODE_CT)
        guards = self.guards.vip_flows(vip) if self.mode != MODE_PACKET_IN else []
        return msgs + [m for m in flows if m not in sent] + guards + self.probe(list(vip.pods))

    def compiled_programming(self, vip: Vip) -> list:
        """What a switch that makes sessions itself needs after a change of the VIP's
        table or policies. lb mode: the VIP's new table, and its classifier flows that
        change (kp_app.lb_pipeline.changes). ct mode: its classifier flows (compiled or
        not) and the changed entries of its CONNTRACK and LB flows. An entry whose pod
        changes is replaced in place (an add with the same match), so new connections
        never find the table half-written."""
        if self.mode == MODE_PACKET_IN or self.transit_gateways is not None:
            return []
        if self.mode == MODE_LB:
            wanted = lb_pipeline.compiled(vip, self.model.node_addresses(self.dpid), HASH_BASIS)
            held = self._compiled.get(vip.id, lb_pipeline.NOTHING)
            self._compiled[vip.id] = wanted
            return lb_pipeline.changes(held, wanted)
        compiled = ct_pipeline.why_not_compiled(vip) is None
        wanted = frozenset(ct_pipeline.vip_flows(vip, HASH_BASIS) if compiled else ())
        held = self._compiled.get(vip.id, frozenset())
        if wanted == held:
            return []
        self._compiled[vip.id] = wanted
        msgs: list = []
        if held - wanted and not wanted:
            msgs += ct_pipeline.vip_deletes(vip.id)
        elif held - wanted:
            # Entries left over from a bigger table, and hairpin flows of pods gone.
            kept = {(f.table, f.priority, f.match) for f in wanted}
            msgs += [FlowDelete(f.cookie, pipeline.MASK_ALL, f.table, f.match)
                     for f in held - wanted if (f.table, f.priority, f.match) not in kept]
        classifier = [m for m in pipeline.vip_flows(
            vip, self.model.node_addresses(self.dpid), compiled,
            ct_pipeline.external_compiled(vip), tracked=True)
            if m.table == pipeline.SERVICES and m.cookie == pipeline.cookie(
                pipeline.KIND_VIP, vip.id)]
        return msgs + sorted(wanted - held, key=_flow_order) + classifier

    def conntrack_flushes(self, vip: Vip, pods=None, protos=None) -> list:
        """End what the switch keeps of the VIP's sessions: those of `pods` (their
        replies come from the pod and target port), or all of them (pods None: in ct
        mode those sent to its address, or external IPs, and port; in lb mode
        forget_compiled's, once the VIP's flows are gone)."""
        if self.mode == MODE_PACKET_IN or self.transit_gateways is not None:
            return []
        if self.mode == MODE_LB:
            return lb_pipeline.flushes(vip, pods, protos)
        single = vip.prefix.prefixlen == vip.prefix.max_prefixlen
        addresses = ([str(vip.prefix.network_address)] if single else []) + \
            [str(a) for a in vip.external_ips]
        msgs = []
        for proto in protos or vip.ip_protos:
            if pods is None:
                msgs += [pipeline.ConntrackFlush(pipeline.CT_ZONE, proto, a, vip.port)
                         for a in addresses]
                continue
            for pod in pods:
                msgs.append(pipeline.ConntrackFlush(
                    pipeline.CT_ZONE, proto, addresses[0] if single else None,
                    vip.port if single else 0, str(pod), vip.target_port))
        return msgs

    def forget_compiled(self, vip_id: int) -> list:
        """The VIP is gone (its flows went with one cookie-masked delete). In lb mode the
        switch ends its sessions and forgets it."""
        held = self._compiled.pop(vip_id, None)
        guards = self.guards.forget(vip_id)
        if self.mode != MODE_LB or self.transit_gateways is not None:
            return guards
        return guards + lb_pipeline.forget(held or lb_pipeline.NOTHING, vip_id)

    def pod_programming(self, vip: Vip, added, probe: bool = True) -> list:
        """New pods of a VIP: their reply flows, and (`probe`) a probe for their MACs."""
        if self.transit_gateways is not None:
            return []
        subnet = self.model.node_addresses(self.dpid).subnet(vip.version)
        msgs: list = []
        # (lb mode: compiled_programming sends them, where the VIP needs them)
        if vip.target_port and self.mode != MODE_LB:
            for address in added:
                for proto in vip.ip_protos:
                    msgs += pipeline.reply_flows(pipeline.reply_key(vip, address, proto),
                                                 subnet, tracked=self.mode == MODE_CT)
        return msgs + self.probe(added) if probe else msgs

    def reply_deletes(self, keys) -> list:
        """Remove the reply flows of `pipeline.reply_key`s that no VIP has any more. In
        ct mode the pod's sessions live on in conntrack, and need its reply flows: they
        stay until idle for the session timeout."""
        if self.transit_gateways is not None:
            return []
        ordered = sorted(keys, key=str)
        if self.mode == MODE_CT:
            node = self.model.node_addresses(self.dpid)
            return [m for key in ordered for m in pipeline.reply_flows(
                key, node.subnet(key[0].version), tracked=True,
                idle_timeout=self.model.conf.idle_timeout(key[2]))]
        return [pipeline.reply_delete(key) for key in ordered]

    def forget_port(self, port: int) -> list:
        """A port went down or away: forget the hosts learned behind it, with their flows,
        and end the sessions whose client or pod was there (their flows go too): if the
        host comes back behind another port, it is learned there afresh."""
        macs, addresses = self.hosts.forget_port(port)
        msgs: list = [pipeline.host_deletes(port)] if macs or addresses else []
        if self.mode != MODE_PACKET_IN:     # (they output to the controller, not the port)
            msgs += [pipeline.strict_delete(f) for a in addresses
                     for f in pipeline.host_guard_flows(a, port)]
        for session in list(self.sessions):
            if session.client_in_port == port or session.pod in addresses:
                msgs += pipeline.session_deletes(session)
                self.end_session(session)
        return msgs

    def probe(self, addresses) -> list:
        """Ask for the MAC of this node's hosts we do not know yet (pods, mostly): those
        on its subnet (all, where it has none of their family). A cluster's other pods
        are other nodes' to find: 100,000 endpoints would be 100,000 broadcasts here."""
        if self.transit_gateways is not None:
            return []
        node = self.model.node_addresses(self.dpid)
        subnets = {4: node.subnet(4), 6: node.subnet(6)}
        msgs = []
        for address in addresses:
            subnet = subnets[address.version]
            if (address in self.hosts or (subnet is not None and address not in subnet)
                    or routing.next_hop(self.routes, address) is not None):
                continue
            msgs.append(PacketOut(neighbours.solicitation(self.mac, node.ipv4, address),
                                  self._flood(None), OFPP_CONTROLLER))
        return msgs

    def _flood(self, in_port: Optional[int]) -> tuple:
        """Out of every host port (never towards other switches: nodes are subnets)."""
        if not self.switch_ports or not self.port_names:
            return (("output", OFPP_FLOOD),)
        return tuple(("output", p) for p in sorted(self.port_names)
                     if p != in_port and p not in self.switch_ports)

    def resolve(self, address):
        """(MAC, port) to send a packet for `address` to, or None if not known yet."""
        host = self.hosts.get(address)
        if host is not None:
            return host.mac, host.port
        return routing.next_hop(self.routes, address)

    # -- packet-in ---------------------------------------------------------------------

    def packet_in(self, in_port: int, data: bytes, now: float) -> list:
        frame = frames.parse(data)
        if frame is None or self.transit_gateways is not None:
            return []
        msgs, learned, refused = self._learn(frame, in_port, now)
        if frame.is_arp or frame.is_nd:
            # A refused claim is neither answered nor passed on to other hosts.
            msgs += [] if refused else self._neighbour(frame, in_port)
        elif frame.has_ports and frame.ip_src is not None:
            self.service_packet_ins += 1
            msgs += self._service_packet(frame, in_port, now)
        elif frame.ip_dst is not None and frame.eth_dst == self.mac:
            msgs += self._route(frame, in_port, now)
        else:
            msgs += self._forward(frame, in_port)
        for address in learned:
            for _, port, held in self.pending.pop(address, []):
                msgs += self.packet_in(port, held, now)
        return msgs

    @property
    def claims_refused(self) -> int:
        """Claims not learned: moves of a bound address or MAC, no room in a full table,
        ARP and ND for kp's own addresses (kp_app.hosts)."""
        return self.hosts.refused

    def _learn(self, frame: frames.Frame, in_port: int, now: float):
        """Learn the frame's sender (kp_app.hosts): (flows, addresses newly learned,
        whether a claim of it was refused: an ARP or ND frame so refused is dropped)."""
        src = frame.eth_src
        if src == self.mac or int(src.split(":")[0], 16) & 1 or in_port in self.switch_ports:
            return [], [], False
        claimed = neighbours.claim(frame)
        if claimed is not None and self._is_ours(claimed[0]):
            if frame.is_arp or frame.is_nd:
                self.hosts.refuse_own(self.dpid, claimed[0], src, in_port, now)
                return [], [], True
            claimed = None      # (a spoofed source: not learned)
        learning = self.hosts.learn(self.mac, src, claimed, in_port, now, self._in_use(),
                                    guard=self.mode != MODE_PACKET_IN)
        if learning.refused:
            self.hosts.log_refusal(self.dpid, now, src, in_port, claimed)
        learned = [a for a in learning.addresses if a in self.pending]
        return learning.flows, learned, learning.refused

    def _in_use(self):
        """Is this address in use (a pod of a VIP, a session's client or pod)? Those are
        never pushed out of a full host table. The set is built on the first question
        (a full table), once per packet."""
        used: list = []

        def check(address) -> bool:
            if not used:
                used.append({a for vip in self.model.vips.values() for a in vip.pods}
                            | {a for s in self.sessions for a in (s.forward.src, s.pod)})
            return address in used[0]
        return check

    def refresh_hosts(self, now: float) -> list:
        """Periodic: ask the bound hosts in use that are going idle again, each out of
        its own port, so that a live pod keeps its binding (kp_app.hosts)."""
        if self.transit_gateways is not None:
            return []
        node = self.model.node_addresses(self.dpid)
        return [PacketOut(neighbours.solicitation(self.mac, node.ipv4, address),
                          (("output", host.port),), OFPP_CONTROLLER)
                for address, host in self.hosts.stale(now, self._in_use())]

    def _is_ours(self, address) -> bool:
        """Addresses the node answers for: its own, and every service address."""
        node = self.model.node_addresses(self.dpid)
        return address in (node.ipv4, node.ipv6) or self.model.serves(address)

    def _neighbour(self, frame: frames.Frame, in_port: int) -> list:
        """ARP or ND: answered when it asks for one of kp's addresses, else the hosts'."""
        reply = neighbours.answer(frame, self.mac, self._is_ours)
        if reply is not None:
            return [PacketOut(reply, (("output", in_port),), OFPP_CONTROLLER)]
        return self._forward_neighbour(frame, in_port)

    def _forward_neighbour(self, frame: frames.Frame, in_port: int) -> list:
        """ARP and ND between hosts: a switch that makes sessions forwards them itself."""
        return [] if self.mode != MODE_PACKET_IN else self._forward(frame, in_port)

    def _forward(self, frame: frames.Frame, in_port: int) -> list:
        """Not for a service: switch it like the FORWARDING table would."""
        if frame.eth_dst == self.mac and frame.ip_dst is not None:
            return self._route(frame, in_port, None)
        port = self.hosts.port_of(frame.eth_dst)
        if port == in_port:
            return []
        actions = (("output", port),) if port is not None else self._flood(in_port)
        return [PacketOut(frame.raw, actions, in_port)]

    def _route(self, frame: frames.Frame, in_port: int, now: Optional[float]) -> list:
        """A packet for the gateway: answer pings to the node, or route it on."""
        node = self.model.node_addresses(self.dpid)
        if frame.ip_dst == node.for_version(frame.ip_dst.version):
            if routing.is_echo_request(frame):
                return [PacketOut(frames.echo_reply(frame, self.mac), (("output", in_port),),
                                  OFPP_CONTROLLER)]
            return []
        hop = self.resolve(frame.ip_dst)
        if hop is None:
            subnet = node.subnet(frame.ip_dst.version)
            if now is not None and subnet is not None and frame.ip_dst in subnet:
                return self._hold(frame.ip_dst, in_port, frame.raw, now)
            return []
        mac, port = hop
        out = pipeline.OFPP_IN_PORT if port == in_port else port
        return [PacketOut(frame.raw, (("set_field", "eth_src", self.mac),
                                      ("set_field", "eth_dst", mac), ("output", out)), in_port)]

    # -- services ------------------------------------------------------------------------

    def _service_packet(self, frame: frames.Frame, in_port: int, now: float) -> list:
        key = FiveTuple(frame.ip_proto, frame.ip_src, frame.src_port, frame.ip_dst,
                        frame.dst_port)
        self.expire_untracked(now)
        session = self.sessions.by_forward(key)
        if session is not None:
            return self._resume(session, frame, in_port, True, now)
        session = self.sessions.by_reverse(key)
        if session is not None:
            return self._resume(session, frame, in_port, False, now)
        node = self.model.node_addresses(self.dpid)
        if frame.ip_dst == node.for_version(frame.ip_dst.version):
            vip = self.model.vip_for_node_port(frame.ip_dst.version, frame.ip_proto,
                                               frame.dst_port)
            if vip is not None:
                return self._new_session(vip, key, frame, in_port, now, external=True)
        vip = self.model.vip_for_destination(frame.ip_proto, frame.ip_dst, frame.dst_port)
        if vip is not None:
            external = frame.ip_dst not in vip.prefix     # one of its external IPs
            if external and not vip.admits(frame.ip_src):
                vip.counters.filtered += 1                 # loadBalancerSourceRanges
                return []
            return self._new_session(vip, key, frame, in_port, now, external)
        if frame.eth_dst == self.mac:
            return self._route(frame, in_port, now)
        return self._stray_reply(frame, in_port)

    def _new_session(self, vip: Vip, key: FiveTuple, frame, in_port: int, now: float,
                     external: bool = False) -> list:
        if vip.table is None or not vip.table.slots:
            vip.counters.no_pod += 1
            refusal = (frames.tcp_reset(frame, self.mac) if key.proto == frames.TCP
                       else frames.port_unreachable(frame, self.mac))
            return [PacketOut(refusal, (("output", in_port),), OFPP_CONTROLLER)]
        policy = vip.external_policy if external else vip.internal_policy
        table = self._local_table(vip) if policy == "local" else vip.table
        if not table.slots:     # as kube-proxy: dropped (a load balancer's health
            vip.counters.no_local_pod += 1      # check sends its clients elsewhere)
            return []
        pod_address = self._pick_pod(vip, table, key, now)
        if self.resolve(pod_address) is None:
            return self._hold(pod_address, in_port, frame.raw, now)
        tracked = not self.sessions.full
        if not tracked:
            vip.counters.table_full += 1
            if self.sessions.untracked_full:
                return []   # as conntrack does when full: the client's retry may fit
            vip.counters.untracked += 1
        session = Session(key, vip.id, pod_address, vip.dnat_port(key.dst_port), now,
                          frame.eth_src, in_port, tracked=tracked, last_seen=now)
        self._choose_snat(session, node_port=key.dst == self.model.node_addresses(
            self.dpid).for_version(key.dst.version))
        vip.counters.new_sessions += 1
        vip.pods[pod_address].counters.new_sessions += 1
        self.sessions.add(session)
        return self._resume(session, frame, in_port, True, now)

    def _pick_pod(self, vip: Vip, table: MaglevTable, key: FiveTuple, now: float) -> Address:
        """By the flow's hash; with ClientIP affinity, the client's pod of last time (if
        the table still has it and the affinity has not timed out), else by the client's."""
        if not vip.affinity_timeout:
            return table.pick(key.flow_hash())
        pod = self.affinity.pod_for(vip.id, key.src, now)
        if pod is None or not table.entries_of(pod):
            pod = table.pick(client_hash(key.src))
        self.affinity.remember(vip.id, key.src, pod, now, vip.affinity_timeout)
        return pod

    def _local_table(self, vip: Vip) -> MaglevTable:
        """The table of the VIP's active pods on this node's subnets (the model makes it
        with the VIP's own table, at the change)."""
        return self.model.local_table(vip, tuple(self.model.node_addresses(self.dpid).subnets()))

    def _choose_snat(self, session: Session, node_port: bool) -> None:
        """Rewrite the client's source to this node when the reply would not come back
        through here otherwise: NodePort to another node's pod (kube-proxy's
        externalTrafficPolicy=Cluster), and hairpin (a pod chosen by its own request)."""
        remote_pod = session.pod not in self.hosts
        hairpin = session.pod == session.forward.src
        if not ((node_port and remote_pod) or hairpin):
            return
        address = self.model.node_addresses(self.dpid).for_version(session.pod.version)
        if address is None:
            return
        session.snat_address = address
        for _ in range(SNAT_PORT_LAST - SNAT_PORT_FIRST + 1):
            port = self._snat_next
            self._snat_next = port + 1 if port < SNAT_PORT_LAST else SNAT_PORT_FIRST
            session.snat_port = port
            if self.sessions.by_reverse(session.reverse) is None:
                return
        session.snat_address, session.snat_port = None, 0   # every port busy: no SNAT

    def _session_flows(self, session: Session, vip: Vip):
        hop = self.resolve(session.pod)
        nat_ports = self.model.interfaces["nat4" if vip.version == 4 else "nat6"]
        reply_in_port, unnat = None, True
        if nat_ports:   # the seed's `set interface natX in <port>` limits where SNAT applies
            reply_in_port = hop[1]
            unnat = self.port_names.get(hop[1]) in nat_ports
        return pipeline.session_flows(
            session, vip, vip.pods[session.pod].id, self.mac, hop,
            idle_timeout=self.model.conf.idle_timeout(session.forward.proto),
            reply_in_port=reply_in_port,
            unnat_replies=unnat)

    def _resume(self, session: Session, frame, in_port: int, forward: bool,
                now: float) -> list:
        """(Re)install a session's flows and send this packet on through them; an
        untracked session's packet is rewritten and sent by the controller itself."""
        vip = self.model.vip_by_id(session.vip_id)
        if vip is None or session.pod not in vip.pods or self.resolve(session.pod) is None:
            self.end_session(session)
            return self._forward(frame, in_port) if not forward else []
        dnat, snat = self._session_flows(session, vip)
        if not session.tracked:
            if self.sessions.full:
                self.sessions.relayed(session, len(frame.raw), now)
                return [PacketOut(frame.raw, (dnat if forward else snat).actions, in_port)]
            self.sessions.track(session)
        msgs = []
        if not session.forward_installed:
            msgs.append(dnat)
            session.forward_installed = True
        if not session.reverse_installed:
            msgs.append(snat)
            session.reverse_installed = True
        chosen = dnat if forward else snat
        msgs.append(PacketOut(frame.raw, chosen.actions, in_port))
        return msgs

    def _stray_reply(self, frame: frames.Frame, in_port: int) -> list:
        """A pod's packet from a service's target port that belongs to no session: traffic
        sent to the pod directly, not through the service. It is forwarded as it is, and
        an exact pass-through flow keeps the rest of that flow off the controller (a
        session that later takes the same 5-tuple overwrites it)."""
        msgs = self._forward(frame, in_port)
        if not msgs:
            return msgs
        (out,) = msgs
        match = pipeline.ip_match(frame.ip_src.version, frame.ip_proto)
        version = frame.ip_src.version
        match.update({addr_field(version, "src"): str(frame.ip_src),
                      addr_field(version, "dst"): str(frame.ip_dst),
                      port_field(frame.ip_proto, "src"): frame.src_port,
                      port_field(frame.ip_proto, "dst"): frame.dst_port})
        outputs = [a[1] for a in out.actions if a[0] == "output"]
        if len(outputs) == 1 and outputs[0] != OFPP_FLOOD:
            msgs.insert(0, pipeline.flow(pipeline.SESSIONS, pipeline.PRIO_SESSION, match,
                                         out.actions, idle_timeout=self.model.conf.timeout,
                                         cookie=pipeline.cookie(pipeline.KIND_BASE)))
        return msgs

    def _hold(self, address, in_port: int, data: bytes, now: float) -> list:
        queue = [p for p in self.pending.get(address, []) if now - p[0] < PENDING_SECONDS]
        queue.append((now, in_port, data))
        self.pending[address] = queue[-PENDING_PER_HOST:]
        return self.probe([address])

    # -- flow-removed and statistics --------------------------------------------------

    def _session_of_flow(self, kind: int, match: dict) -> Optional[Session]:
        key = _five_tuple(match)
        if key is None:
            return None
        if kind == pipeline.KIND_FORWARD:
            return self.sessions.by_forward(key)
        return self.sessions.by_reverse(key)

    def flow_removed(self, cookie: int, match: dict, packets: int, byte_count: int) -> list:
        parts = pipeline.cookie_parts(cookie)
        if parts is None or parts[0] not in (pipeline.KIND_FORWARD, pipeline.KIND_REVERSE):
            return []
        kind = parts[0]
        session = self._session_of_flow(kind, match)
        if session is None:
            return []
        if kind == pipeline.KIND_FORWARD:
            session.forward_installed = False
        else:
            session.reverse_installed = False
        session.flow_ended(kind, packets, byte_count)
        if not session.forward_installed and not session.reverse_installed:
            self.end_session(session)
        return []

    def flow_refused(self, cookie: int, match: dict) -> None:
        """The switch refused one of a session's flows (kp_app.refusals): the session
        stays, its flow is not installed, and the next packet that misses puts it back."""
        parts = pipeline.cookie_parts(cookie)
        if parts is None or parts[0] not in (pipeline.KIND_FORWARD, pipeline.KIND_REVERSE):
            return
        session = self._session_of_flow(parts[0], match)
        if session is None:
            return
        if parts[0] == pipeline.KIND_FORWARD:
            session.forward_installed = False
        else:
            session.reverse_installed = False

    def vip_reprogramming(self, vip: Vip) -> list:
        """All of a VIP's programming again, as if the switch held none of it (it refused
        some: kp_app.refusals retries it)."""
        self._compiled.pop(vip.id, None)
        return self.vip_programming(vip)

    def expire_untracked(self, now: float) -> None:
        for session in self.sessions.expire_untracked(now, self.model.conf.idle_timeout):
            self.end_session(session)

    def end_session(self, session: Session) -> None:
        self.sessions.remove(session)
        vip = self.model.vip_by_id(session.vip_id)
        if vip is None:
            return
        packets, byte_count = session.totals()
        vip.counters.packets += packets
        vip.counters.bytes += byte_count
        pod = vip.pods.get(session.pod)
        if pod is not None:
            pod.counters.packets += packets
            pod.counters.bytes += byte_count

    def flow_stats(self, stats: list) -> None:
        """[(cookie, match dict, packets, bytes)] from a flow-stats reply."""
        self._compiled_traffic, self._compiled_new = {}, {}
        for cookie, match, packets, byte_count in stats:
            parts = pipeline.cookie_parts(cookie)
            if (self.mode == MODE_CT and parts is not None and parts[1] in self._compiled
                    and self._compiled[parts[1]]):
                if parts[0] == pipeline.KIND_VIP:
                    seen = self._compiled_traffic.get(parts[1], (0, 0))
                    self._compiled_traffic[parts[1]] = (seen[0] + packets, seen[1] + byte_count)
                elif parts[0] == pipeline.KIND_LB and "reg0" in match:
                    self._compiled_new.setdefault(parts[1], {})[int(match["reg0"])] = packets
            if parts is None or parts[0] not in (pipeline.KIND_FORWARD, pipeline.KIND_REVERSE):
                continue
            session = self._session_of_flow(parts[0], match)
            if session is not None:
                session.live_counts[parts[0]] = (packets, byte_count)

    def lb_stats(self, totals: dict, records: list) -> None:
        """A whole KP_LB_STATS_REPLY of this switch (every page of it), decoded."""
        self.lb_totals = dict(totals)
        self._lb_counts = lb_pipeline.counts(records, self._compiled)

    def compiled_counts(self, vip: Vip, pod=None) -> Tuple[int, int, int, int]:
        """(new sessions, packets, bytes, untracked) of the sessions this switch made
        itself, for the VIP or one of its pods (new sessions only). lb mode: as of the
        last KP_LB_STATS_REPLY. ct mode: as of the last flow stats; new sessions are
        counted by the LB entries, each for the pod it holds now; packets and bytes are
        those of the client-to-service direction (replies share their flows among VIPs)."""
        if self.mode == MODE_LB:
            return self._lb_counts.get(vip.id, lb_pipeline.LbCounts()).figures(pod)
        new = self._compiled_new.get(vip.id, {})
        if pod is not None:
            table = vip.table
            held = [i for i, slot in enumerate(table.slots) if table.pods[slot] == pod] \
                if table is not None and pod in table.pods else []
            return sum(new.get(i, 0) for i in held), 0, 0, 0
        packets, byte_count = self._compiled_traffic.get(vip.id, (0, 0))
        return sum(new.values()), packets, byte_count, 0

    def sessions_of(self, vip_id: int, pod=None) -> List[Session]:
        return [s for s in self.sessions
                if s.vip_id == vip_id and (pod is None or s.pod == pod)]


def _flow_order(f) -> tuple:
    """LB entries before the CONNTRACK flow that leads to them."""
    return (f.table != pipeline.LB, f.table, f.priority, f.match)


def _five_tuple(match: dict) -> Optional[FiveTuple]:
    proto = match.get("ip_proto")
    if proto not in pipeline.PORT_FIELD_PREFIX:
        return None
    version = 4 if "ipv4_src" in match else 6
    try:
        return FiveTuple(proto, ipaddress.ip_address(match[addr_field(version, "src")]),
                         int(match[port_field(proto, "src")]),
                         ipaddress.ip_address(match[addr_field(version, "dst")]),
                         int(match[port_field(proto, "dst")]))
    except (KeyError, ValueError):
        return None
