"""KubeProxy: the controller's pure core, the service interface and the switch events.

The REST API calls the service methods (docs/service-api.md); the Ryu shim calls the
event methods. Both end in the same place: the model changes, and the switch programming
that follows from the change goes out through `send(dpid, messages)`, as data. Nothing
here imports Ryu; the clock is injected.

(Over 500 lines: one method per operation of docs/service-api.md and per switch event;
Kubernetes Services (service_apply), what switches answer (switch_answers), links
(links) and a switch's own share (node) are in modules of their own.)
"""
import logging
import time
from collections import deque
from typing import Callable, Dict, List, Optional, Tuple

from kp_app import frames, pipeline
from kp_app.apply_jobs import ApplyJobs, run_now
from kp_app.dpid_claims import DpidClaims
from kp_app.errors import InvalidInput, KpError
from kp_app.links import LinkProbes
from kp_app.model import DEFAULT_NEW_LEN, ServiceModel, Vip, parse_int
from kp_app.node import MODE_PACKET_IN, MODES, Node, gateway_mac
from kp_app.pipeline import FlowDelete, MASK_POD, MASK_VIP, OFPP_CONTROLLER, PacketOut
from kp_app.refusals import SwitchChannel
from kp_app.switch_answers import SwitchAnswers
from kp_app.service_apply import KubernetesServices
from kp_app.sync_record import SyncRecord, synced
from kp_proto import node_announcement

LOG = logging.getLogger("kp_app")
Sender = Callable[[int, list], None]
MAX_SESSION_LIST = 10000
OFPP_MAX = 0xFFFFFF00


class KubeProxy(KubernetesServices, SwitchAnswers):
    def __init__(self, send: Sender, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.model = ServiceModel()
        # Every change of configuration, timed: the metrics and health read it.
        self.syncs = SyncRecord(clock, wall)
        self.nodes: Dict[int, Node] = {}
        # (dpid, port) -> (dpid, port), both ways, from kp's link probes.
        self.links: Dict[Tuple[int, int], Tuple[int, int]] = {}
        self.probes = LinkProbes()      # signs and checks them, ages the links
        self._send = send
        self._clock = clock
        # dpid -> what was sent on its connection and what it refused (kp_app.refusals)
        self.channels: Dict[int, SwitchChannel] = {}
        # which connection speaks for a datapath id (the Ryu shim asks; kp_app.dpid_claims)
        self.claims = DpidClaims()
        self.jobs = ApplyJobs(run_now, lambda: None)    # (kp_app.ryu_shim has its own)

    def _broadcast(self, programming: Callable[[Node], list]) -> None:
        for node in list(self.nodes.values()):
            msgs = programming(node)
            if msgs:
                self._send(node.dpid, msgs)

    # -- switch events -------------------------------------------------------------

    def switch_connected(self, dpid: int, port_names: Optional[Dict[int, str]] = None,
                         mode: str = MODE_PACKET_IN, held: Optional[list] = None) -> None:
        """`mode`: where the switch's new sessions are made (kp_app.node.MODES); `held`:
        the kp flows it has, when known (Node.full_programming reconciles with them)."""
        if mode not in MODES:
            raise InvalidInput(f"{mode!r} is not one of {', '.join(MODES)}", "mode")
        node = self.nodes.get(dpid)
        if node is None:
            node = self.nodes[dpid] = Node(dpid, self.model)
        node.mode = mode
        node.port_names = dict(port_names or {})
        self.channels[dpid] = SwitchChannel()   # a new connection: nothing in flight
        self._apply_topology(node)
        self._send(dpid, node.full_programming(held))
        if port_names:
            self._send_probes(node)

    def switch_disconnected(self, dpid: int) -> None:
        self.channels.pop(dpid, None)
        node = self.nodes.pop(dpid, None)
        if node is not None:
            for session in node.sessions:
                node.end_session(session)
            self._links_changed({k: v for k, v in self.links.items()
                                 if k[0] != dpid and v[0] != dpid})

    def switch_described(self, dpid: int, dp_desc) -> None:
        """The switch's description (OFPMP_DESC dp_desc): the node addresses it announces
        (kp_proto.node_announcement) become its own unless set by hand. A malformed
        announcement is ignored, with one log line, and changes nothing."""
        try:
            announced = node_announcement.parse_announcement(dp_desc)
        except ValueError as error:
            LOG.warning("switch %016x: ignoring its node announcement %r: %s", dpid,
                        dp_desc, error)
            return
        if self.model.announce_node(dpid, *(announced or (None, None))):
            LOG.info("switch %016x: node addresses %s", dpid,
                     self.model.node_addresses(dpid).to_dict())
            self._node_announced(dpid)

    def cluster_node(self, dpid: Optional[int], ipv4_if, ipv6_if) -> bool:
        """Node addresses from a Kubernetes Node object (kp_app.cluster_state): taken as
        a switch's announcement is (for switch `dpid`, or the default node when None),
        never over an address set by hand. True if they changed (and were programmed)."""
        if not self.model.announce_node(dpid, ipv4_if, ipv6_if):
            return False
        if dpid is not None:
            self._node_announced(dpid)
            return True
        for node in self.nodes.values():    # the default shapes every node, as set_conf
            self._apply_topology(node)
        self._broadcast(lambda n: n.full_programming())
        return True

    def _node_announced(self, dpid: int) -> None:
        """Reprogram what one node's new addresses change: that node whole (its NodePort
        and reply flows), and the routes of the others whose routes changed. Not every
        node from scratch, as set_conf does: switches announce as they connect, while the
        others' link probes are in flight, and a switch being reprogrammed loses them."""
        for node in list(self.nodes.values()):
            before = (node.transit_gateways, list(node.routes))
            self._apply_topology(node)
            if node.dpid == dpid:
                self._send(dpid, node.full_programming())
            elif (node.transit_gateways, node.routes) != before:
                self._send(node.dpid, node.route_programming())

    def packet_in(self, dpid: int, in_port: int, data: bytes) -> None:
        node = self.nodes.get(dpid)
        if node is None:
            return
        node.packet_ins += 1
        if frames.is_link_probe(data):
            sender = self.probes.sender(data, (dpid, in_port), self._clock())
            if sender is not None:
                self._link_seen(sender, (dpid, in_port))
            return
        msgs = node.packet_in(in_port, data, self._clock())
        if msgs:
            self._send(dpid, msgs)

    def flow_removed(self, dpid: int, cookie: int, match: dict, packets: int,
                     byte_count: int) -> None:
        node = self.nodes.get(dpid)
        if node is not None:
            node.flow_removed(cookie, match, packets, byte_count)
            self._forget_drained_pods()

    def flow_stats(self, dpid: int, stats: list) -> None:
        node = self.nodes.get(dpid)
        if node is not None:
            node.flow_stats(stats)

    def cache_stats(self, dpid: int, stats: dict) -> None:
        node = self.nodes.get(dpid)
        if node is not None:
            node.cache_stats = dict(stats)

    def lb_stats(self, dpid: int, totals: dict, records: list) -> None:
        """kp-switch's session counters (lb mode): a whole KP_LB_STATS_REPLY, decoded."""
        node = self.nodes.get(dpid)
        if node is not None:
            node.lb_stats(totals, records)

    def lb_sessions(self, dpid: int, sessions: list) -> None:
        """A sample of kp-switch's own sessions (lb mode), decoded (kp_proto.lb)."""
        node = self.nodes.get(dpid)
        if node is not None:
            node.lb_session_list = list(sessions)

    def port_names(self, dpid: int, names: Dict[int, str]) -> None:
        """The switch's ports that are up, by number (its port description)."""
        node = self.nodes.get(dpid)
        if node is not None:
            # Only physical ports: OVS also lists its LOCAL port (0xfffffffe).
            node.port_names = {p: n for p, n in names.items() if p < OFPP_MAX}
            self._send_probes(node)
            self._links_changed(dict(self.links), force=True)

    def port_status(self, dpid: int, port_no: int, name: str, live: bool,
                    deleted: bool = False) -> None:
        """A switch port came, changed or went (OpenFlow port-status). A port that is down
        or gone leaves the node's ports (floods skip it; a fabric switch with a dead port
        stays a fabric switch) and takes with it what was learned behind it
        (`Node.forget_port`) and its link to another switch; one that is up is probed for
        such a link."""
        node = self.nodes.get(dpid)
        if node is None or port_no >= OFPP_MAX:
            return
        links = dict(self.links)
        if live and not deleted:
            node.port_names[port_no] = name
            self._send_probes(node, [port_no])
        else:
            node.port_names.pop(port_no, None)
            self._send(dpid, node.forget_port(port_no))
            links = {a: b for a, b in links.items() if (dpid, port_no) not in (a, b)}
        self._links_changed(links, force=True)

    # -- the fabric: links between switches, transit switches, routes between nodes -----

    def _send_probes(self, node: Node, ports=None) -> None:
        now = self._clock()
        self._send(node.dpid, [
            PacketOut(self.probes.probe(node.mac, node.dpid, port, now), (("output", port),),
                      OFPP_CONTROLLER) for port in sorted(node.port_names if ports is None
                                                          else ports)])

    def periodic(self) -> None:
        """Every probe interval (self.probes.interval; kp_app.ryu_shim's timer): probe every
        port again, drop the links no probe confirmed lately, and ask the bound hosts
        in use that are going idle again (kp_app.hosts)."""
        now = self._clock()
        for node in list(self.nodes.values()):
            if node.port_names:
                self._send_probes(node)
            msgs = node.refresh_hosts(now)
            if msgs:
                self._send(node.dpid, msgs)
        alive = self.probes.alive(self.links, now)
        if alive != self.links:
            LOG.info("links no probe confirmed for %.0f s: %s", self.probes.link_timeout,
                     sorted(set(self.links) - set(alive)))
            self._links_changed(alive)

    def _link_seen(self, sender: Tuple[int, int], receiver: Tuple[int, int]) -> None:
        self.probes.confirm(sender, receiver, self._clock())
        if self.links.get(sender) == receiver:
            return
        links = dict(self.links)
        links[sender], links[receiver] = receiver, sender
        self._links_changed(links)

    def _links_changed(self, links: dict, force: bool = False) -> None:
        if links == self.links and not force:
            return
        self.links = links
        for node in self.nodes.values():
            before = (node.transit_gateways, list(node.routes), set(node.switch_ports))
            self._apply_topology(node)
            after = (node.transit_gateways, node.routes, node.switch_ports)
            if before != after:
                if (before[0] is None) != (after[0] is None):   # its role changed
                    self._send(node.dpid, node.full_programming())
                else:
                    self._send(node.dpid, node.route_programming())

    def _first_hops(self, source: int) -> Dict[int, int]:
        """dpid -> the port of `source` on a shortest path to it (breadth first)."""
        neighbours: Dict[int, List[Tuple[int, int]]] = {}
        for (dpid, port), (peer, _) in sorted(self.links.items()):
            neighbours.setdefault(dpid, []).append((port, peer))
        hops: Dict[int, int] = {}
        queue = deque()
        for port, peer in neighbours.get(source, []):
            if peer not in hops and peer != source:
                hops[peer] = port
                queue.append(peer)
        while queue:
            dpid = queue.popleft()
            for _, peer in neighbours.get(dpid, []):
                if peer not in hops and peer != source:
                    hops[peer] = hops[dpid]
                    queue.append(peer)
        return hops

    def _apply_topology(self, node: Node) -> None:
        """Set a node's switch ports, role and routes from the links and node addresses."""
        node.switch_ports = {port for (dpid, port) in self.links if dpid == node.dpid}
        hops = self._first_hops(node.dpid)
        transit = bool(node.port_names) and set(node.port_names) <= node.switch_ports
        if transit:
            node.transit_gateways = sorted(
                (gateway_mac(d), port) for d, port in hops.items()
                if d in self.nodes and not self._is_transit(d))
            node.routes = []
            return
        node.transit_gateways = None
        node.routes = sorted(
            ((subnet, gateway_mac(d), port) for d, port in hops.items()
             if d in self.model.nodes for subnet in self.model.nodes[d].subnets()),
            key=lambda r: (r[0].version, str(r[0]), r[1], r[2]))

    def _is_transit(self, dpid: int) -> bool:
        node = self.nodes.get(dpid)
        return node is not None and node.transit_gateways is not None

    def _forget_drained_pods(self) -> None:
        """A removed pod whose last session ended leaves the model and the switches."""
        for vip, address in self.model.draining_pods():
            pod = vip.pods[address]
            if not any(n.sessions_of(vip.id, address) for n in self.nodes.values()):
                self.model.forget_pod(vip, address)
                self._delete_flows(pipeline.cookie(0, vip.id, pod.id), MASK_POD, vip,
                                   [address])
                self._sync_compiled(vip)

    def _delete_flows(self, cookie: int, mask: int, vip: Vip, addresses) -> None:
        """Delete a VIP's or a pod's flows (already out of the model), and the reply flows
        of theirs that no other VIP shares (same pod and target port: the same flows)."""
        released = {pipeline.reply_key(vip, a, proto) for a in addresses
                    for proto in vip.ip_protos} if vip.target_port else set()
        unused = {key for key in released if not self.model.has_reply_key(key)}
        self._broadcast(lambda n: [FlowDelete(cookie, mask)] + n.reply_deletes(unused))

    def _sync_compiled(self, vip: Vip) -> None:
        """After a change of a VIP's pods, table or policies: the switches that make
        sessions themselves get what changes in their copy of it."""
        self._broadcast(lambda n: n.compiled_programming(vip))

    # -- service interface: conf and node addresses -----------------------------------

    def conf(self) -> dict:
        m = self.model
        return {"buckets": m.conf.buckets, "timeout": m.conf.timeout,
                "udp_timeout": m.conf.udp_timeout, "tcp_close_wait": m.conf.tcp_close_wait,
                **m.default_node.to_dict(),
                "nodes": {str(dpid): a.to_dict_with_source()
                          for dpid, a in sorted(m.nodes.items())}}

    @synced
    def set_conf(self, buckets=None, timeout=None, node_ip=None, node_ip6=None,
                 dpid=None, udp_timeout=None, tcp_close_wait=None) -> dict:
        before = self.model.conf
        # Validate everything before changing anything: a scratch model takes the hits.
        scratch = ServiceModel(self.model.tables)
        scratch.set_conf(buckets, timeout, udp_timeout, tcp_close_wait)
        scratch.set_node(node_ip, node_ip6, dpid)
        self.model.set_conf(buckets, timeout, udp_timeout, tcp_close_wait)
        self.model.set_node(node_ip, node_ip6, dpid)
        if self.model.conf.buckets != before.buckets:
            for node in self.nodes.values():
                node.sessions.resize(self.model.conf.buckets)
            self._broadcast(lambda n: [pipeline.SetCacheBuckets(self.model.conf.buckets)])
        if self.model.conf != before:
            self._broadcast(lambda n: n.conf_programming())
        if node_ip is not None or node_ip6 is not None:
            # Node addresses shape NodePort flows, reply flows and every node's routes.
            for node in self.nodes.values():
                self._apply_topology(node)
            self._broadcast(lambda n: n.full_programming())
        return self.conf()

    # -- VIPs and pods ------------------------------------------------------------------

    def vips(self) -> List[dict]:
        self._expire_idle()
        return [self._vip_dict(v) for v in self.model.vips.values()]

    def vip(self, prefix, port=None) -> dict:
        self._expire_idle()
        return self._vip_dict(self.model.find_vip(prefix, port))

    @synced
    def add_vip(self, prefix, port=0, target_port=None, node_port=None, protocol="any",
                nat=None, new_len=DEFAULT_NEW_LEN, external_ips=(), service=None,
                affinity_timeout=0, external_policy="cluster", internal_policy="cluster",
                source_ranges=()) -> dict:
        vip = self.model.add_vip(prefix, port, target_port, node_port, protocol, nat,
                                 new_len, external_ips, service,
                                 affinity_timeout=affinity_timeout,
                                 external_policy=external_policy,
                                 internal_policy=internal_policy, source_ranges=source_ranges)
        self._broadcast(lambda n: n.vip_programming(vip))
        return self._vip_dict(vip)

    @synced
    def del_vip(self, prefix, port=None) -> None:
        vip = self.model.del_vip(prefix, port)
        self._broadcast(lambda n: n.conntrack_flushes(vip))
        for node in self.nodes.values():
            for session in node.sessions_of(vip.id):
                node.sessions.remove(session)
        self._delete_flows(pipeline.cookie(0, vip.id), MASK_VIP, vip, list(vip.pods))
        # Once no flow can start a session of the VIP (lb mode: its sessions end here).
        self._broadcast(lambda n: n.forget_compiled(vip.id))
        for channel in self.channels.values():
            channel.forget_vip(vip.id)

    @synced
    def add_pods(self, prefix, port, addresses) -> dict:
        vip = self.model.find_vip(prefix, port)
        added = self.model.add_pods(vip, addresses)
        self._broadcast(lambda n: n.pod_programming(vip, added))
        self._sync_compiled(vip)
        return self._vip_dict(vip)

    @synced
    def del_pods(self, prefix, port, addresses, flush=False) -> dict:
        vip = self.model.find_vip(prefix, port)
        if not isinstance(flush, bool):
            raise InvalidInput(f"{flush!r} is not true or false", "flush")
        removed = self.model.del_pods(vip, addresses)
        self._sync_compiled(vip)
        if flush:   # with no session left, the pod is forgotten below, its flows with it
            for address in removed:
                for node in self.nodes.values():
                    for session in node.sessions_of(vip.id, address):
                        node.end_session(session)
            self._broadcast(lambda n: n.conntrack_flushes(vip, removed))
        self._forget_drained_pods()
        return self._vip_dict(vip)

    def health_check_ports(self) -> Dict[str, int]:
        """'namespace/name' -> healthCheckNodePort of the applied Services that have one."""
        return dict(self.model.health_check_ports)

    def local_endpoints(self, service: str) -> int:
        """How many of the Service's ready pods are on this controller's nodes (on the
        pod subnet of a node address it has, set by hand or announced by a switch): what
        its health check node port reports. Under the DaemonSet, one kp_app per node."""
        m = self.model
        subnets = [s for a in (m.default_node, *m.nodes.values()) for s in a.subnets()]
        pods = {p for v in m.vips.values() if v.service == service for p in v.active_pods()}
        return sum(1 for p in pods if any(p.version == s.version and p in s for s in subnets))

    def table_plan(self, prefix, port, addresses, remove: bool = False):
        """(pods, new_len) of the table a pod change would build, or None when the change
        would fail: to build that table ahead (`model.tables.build_ahead`), off the
        controller's loop, before making the change, which then finds it."""
        try:
            vip = self.model.find_vip(prefix, port)
        except KpError:
            return None
        pods = self.model.pods_after(vip, addresses, remove)
        return None if pods is None else (pods, vip.new_len)

    @synced
    def set_interface(self, nat, port_name, delete=False) -> dict:
        self.model.set_interface(nat, port_name, bool(delete))
        return self.interfaces()

    def interfaces(self) -> dict:
        return {k: list(v) for k, v in self.model.interfaces.items()}

    # -- observation ------------------------------------------------------------------

    def sessions(self, limit=100, prefix=None, port=None) -> dict:
        limit = parse_int(limit, "limit", 0, MAX_SESSION_LIST)
        if prefix is None and port is not None:
            raise InvalidInput("needs a prefix: a port alone names no VIP", "port")
        vip_id = None if prefix is None else self.model.find_vip(prefix, port).id
        now = self._expire_idle()
        listed, count, untracked = [], 0, 0
        for dpid, node in sorted(self.nodes.items()):
            for s in node.sessions:
                if vip_id is not None and s.vip_id != vip_id:
                    continue
                count += 1
                untracked += not s.tracked
                if len(listed) < limit:
                    listed.append(self._session_dict(dpid, s, now))
            # Those the switch made itself (lb mode): counted by the switch, listed
            # from the sample it last sent.
            if vip_id is None:
                count += node.lb_totals.get("sessions", 0)
            for s in node.lb_session_list:
                if vip_id is not None and s["vip_id"] != vip_id:
                    continue
                count += vip_id is not None
                if len(listed) < limit:
                    listed.append(self._switch_session_dict(dpid, s))
        return {"count": count, "untracked": untracked, "sessions": listed}

    def session_count(self) -> int:
        """Sessions now, as `sessions` counts them (as of the switches' last stats)."""
        return self.sessions(limit=0)["count"]

    def _switch_session_dict(self, dpid: int, s: dict) -> dict:
        """One of kp-switch's own sessions, in the shape of the controller's."""
        vip = self.model.vip_by_id(s["vip_id"])

        def endpoint(address_port) -> str:
            address, port = address_port
            return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        return {"dpid": dpid, "protocol": pipeline.PORT_FIELD_PREFIX.get(s["proto"], s["proto"]),
                "client": endpoint(s["client"]), "vip": endpoint(s["vip"]),
                "service": vip.label() if vip else None, "pod": endpoint(s["pod"]),
                "idle": s["idle_ms"] / 1000.0, "state": s["state"], "tracked": True,
                "made_by": "switch"}

    def counters(self) -> dict:
        self._expire_idle()
        return {"vips": [self._vip_counters(v) for v in self.model.vips.values()],
                "switches": {str(d): {**n.cache_stats, "packet_ins": n.packet_ins,
                                      **{f"lb_{k}": v for k, v in n.lb_totals.items()},
                                      "service_packet_ins": n.service_packet_ins}
                             for d, n in sorted(self.nodes.items())}}

    def show(self) -> dict:
        self._expire_idle()
        return {"conf": self.conf(), "vips": len(self.model.vips),
                "pods": sum(len(v.pods) for v in self.model.vips.values()),
                "sessions": sum(len(n.sessions) for n in self.nodes.values()),
                "switches": sorted(self.nodes), "interfaces": self.interfaces(),
                "modes": {str(d): n.mode for d, n in sorted(self.nodes.items())},
                "channels": self.channel_status(), "dpid_claims": self.claims.status(),
                **self.host_status()}

    def host_status(self) -> dict:
        """The hosts learned and the claims refused per switch, the link probes refused."""
        return {"hosts": {str(d): {"learned": len(n.hosts), "claims_refused": n.claims_refused}
                          for d, n in sorted(self.nodes.items())},
                "link_probes_refused": self.probes.refused}

    def _expire_idle(self) -> float:
        """Untracked sessions have no switch flow to time out: they end here, or on the
        next service packet, once idle for the timeout."""
        now = self._clock()
        for node in self.nodes.values():
            node.expire_untracked(now)
        return now

    def _live(self, vip: Vip, pod=None):
        sessions = [s for n in self.nodes.values() for s in n.sessions_of(vip.id, pod)]
        packets = sum(s.totals()[0] for s in sessions)
        byte_count = sum(s.totals()[1] for s in sessions)
        return len(sessions), packets, byte_count

    def _compiled(self, vip: Vip, pod=None) -> Tuple[int, int, int, int]:
        """(new sessions, packets, bytes, untracked) the switches made and carried
        themselves."""
        counts = [n.compiled_counts(vip, pod) for n in self.nodes.values()]
        return tuple(sum(c[i] for c in counts) for i in range(4))

    def _vip_counters(self, vip: Vip) -> dict:
        active, packets, byte_count = self._live(vip)
        new, compiled_packets, compiled_bytes, compiled_untracked = self._compiled(vip)
        packets, byte_count = packets + compiled_packets, byte_count + compiled_bytes
        c = vip.counters
        return {"prefix": str(vip.prefix), "port": vip.port, "protocol": vip.protocol,
                "new_sessions": c.new_sessions + new, "active_sessions": active,
                "packets": c.packets + packets, "bytes": c.bytes + byte_count,
                "no_pod": c.no_pod, "untracked": c.untracked + compiled_untracked,
                "table_full": c.table_full,
                "no_local_pod": c.no_local_pod, "filtered": c.filtered,
                "refused": sum(ch.refused_by_vip.get(vip.id, 0)
                               for ch in self.channels.values()),
                "pods": [self._pod_dict(vip, a) for a in sorted(vip.pods, key=int)]}

    def _pod_dict(self, vip: Vip, address) -> dict:
        pod = vip.pods[address]
        active, packets, byte_count = self._live(vip, address)
        return {"address": str(address), "state": "active" if pod.active else "draining",
                "table_entries": vip.table.entries_of(address) if vip.table else 0,
                "new_sessions": pod.counters.new_sessions + self._compiled(vip, address)[0],
                "active_sessions": active,
                "packets": pod.counters.packets + packets,
                "bytes": pod.counters.bytes + byte_count}

    def _vip_dict(self, vip: Vip) -> dict:
        counters = self._vip_counters(vip)
        pods = counters.pop("pods")
        for key in ("prefix", "port", "protocol"):
            counters.pop(key)
        return {"prefix": str(vip.prefix), "port": vip.port, "target_port": vip.target_port,
                "node_port": vip.node_port, "protocol": vip.protocol, "nat": vip.nat,
                "new_len": vip.new_len, "external_ips": [str(a) for a in vip.external_ips],
                **vip.policies(), "service": vip.service,
                "pods": pods, "counters": counters,
                # per switch: installed, pending, retrying or refused (kp_app.refusals)
                "programming": {str(d): self.channel(d).vip_status(vip.id)
                                for d in sorted(self.nodes)}}

    def _session_dict(self, dpid: int, s, now: float) -> dict:
        vip = self.model.vip_by_id(s.vip_id)
        f = s.forward

        def endpoint(address, port):
            return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
        packets, byte_count = s.totals()
        return {"dpid": dpid, "protocol": pipeline.PORT_FIELD_PREFIX.get(f.proto, f.proto),
                "client": endpoint(f.src, f.src_port), "vip": endpoint(f.dst, f.dst_port),
                "service": vip.label() if vip else None,
                "pod": endpoint(s.pod, s.pod_port), "age": round(now - s.created, 3),
                "packets": packets, "bytes": byte_count, "tracked": s.tracked}
