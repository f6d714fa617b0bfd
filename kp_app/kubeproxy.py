"""KubeProxy: the controller's pure core, the service interface and the switch events.

The REST API calls the service methods (docs/service-api.md); the Ryu shim calls the
event methods. Both end in the same place: the model changes, and the switch programming
that follows from the change goes out through `send(dpid, messages)`, as data. Nothing
here imports Ryu; the clock is injected.
"""
import ipaddress
import logging
import time
from collections import deque
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from kp_app import frames, kubernetes, pipeline, service_sync
from kp_app.errors import InvalidInput, KpError, NotFound
from kp_app.maglev import MaglevTable
from kp_app.model import DEFAULT_NEW_LEN, ServiceModel, Vip, parse_int
from kp_app.node import MODE_PACKET_IN, MODES, Node, gateway_mac
from kp_app.pipeline import FlowDelete, MASK_POD, MASK_VIP, OFPP_CONTROLLER, PacketOut
from kp_proto import node_announcement

LOG = logging.getLogger("kp_app")
Sender = Callable[[int, list], None]
MAX_SESSION_LIST = 10000
OFPP_MAX = 0xFFFFFF00


class KubeProxy:
    def __init__(self, send: Sender, clock: Callable[[], float] = time.monotonic) -> None:
        self.model = ServiceModel()
        self.nodes: Dict[int, Node] = {}
        # (dpid, port) -> (dpid, port), both ways, from kp's link probes.
        self.links: Dict[Tuple[int, int], Tuple[int, int]] = {}
        self._send = send
        self._clock = clock

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
        self._apply_topology(node)
        self._send(dpid, node.full_programming(held))
        if port_names:
            self._send_probes(node)

    def switch_disconnected(self, dpid: int) -> None:
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
        probe = frames.parse_link_probe(data)
        if probe is not None:
            self._link_seen(probe, (dpid, in_port))
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
        self._send(node.dpid, [
            PacketOut(frames.link_probe(node.mac, node.dpid, port), (("output", port),),
                      OFPP_CONTROLLER) for port in sorted(node.port_names if ports is None
                                                          else ports)])

    def _link_seen(self, sender: Tuple[int, int], receiver: Tuple[int, int]) -> None:
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
        for vip in self.model.vips.values():
            for address, pod in list(vip.pods.items()):
                if not pod.active and not any(n.sessions_of(vip.id, address)
                                              for n in self.nodes.values()):
                    self.model.forget_pod(vip, address)
                    self._delete_flows(pipeline.cookie(0, vip.id, pod.id), MASK_POD, vip,
                                       [address])
                    self._sync_compiled(vip)

    def _delete_flows(self, cookie: int, mask: int, vip: Vip, addresses) -> None:
        """Delete a VIP's or a pod's flows (already out of the model), and the reply flows
        of theirs that no other VIP shares (same pod and target port: the same flows)."""
        released = {pipeline.reply_key(vip, a, proto) for a in addresses
                    for proto in vip.ip_protos} if vip.target_port else set()
        unused = released - self._reply_keys()
        self._broadcast(lambda n: [FlowDelete(cookie, mask)] + n.reply_deletes(unused))

    def _sync_compiled(self, vip: Vip) -> None:
        """After a change of a VIP's pods, table or policies: the switches that make
        sessions themselves get what changes in their copy of it."""
        self._broadcast(lambda n: n.compiled_programming(vip))

    def _reply_keys(self) -> set:
        return {pipeline.reply_key(vip, a, proto) for vip in self.model.vips.values()
                if vip.target_port for a in vip.pods for proto in vip.ip_protos}

    # -- service interface: conf and node addresses -----------------------------------

    def conf(self) -> dict:
        m = self.model
        return {"buckets": m.conf.buckets, "timeout": m.conf.timeout,
                **m.default_node.to_dict(),
                "nodes": {str(dpid): a.to_dict_with_source()
                          for dpid, a in sorted(m.nodes.items())}}

    def set_conf(self, buckets=None, timeout=None, node_ip=None, node_ip6=None,
                 dpid=None) -> dict:
        before = self.model.conf
        # Validate everything before changing anything: a scratch model takes the hits.
        scratch = ServiceModel()
        scratch.set_conf(buckets, timeout)
        scratch.set_node(node_ip, node_ip6, dpid)
        self.model.set_conf(buckets, timeout)
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

    def del_vip(self, prefix, port=None) -> None:
        vip = self.model.del_vip(prefix, port)
        self._broadcast(lambda n: n.conntrack_flushes(vip))
        for node in self.nodes.values():
            for session in node.sessions_of(vip.id):
                node.sessions.remove(session)
        self._delete_flows(pipeline.cookie(0, vip.id), MASK_VIP, vip, list(vip.pods))
        # Once no flow can start a session of the VIP (lb mode: its sessions end here).
        self._broadcast(lambda n: n.forget_compiled(vip.id))

    def add_pods(self, prefix, port, addresses) -> dict:
        vip = self.model.find_vip(prefix, port)
        added = self.model.add_pods(vip, addresses)
        self._broadcast(lambda n: n.pod_programming(vip, added))
        self._sync_compiled(vip)
        return self._vip_dict(vip)

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

    # -- Kubernetes Services ----------------------------------------------------------

    def apply_kubernetes(self, document, built: Sequence[MaglevTable] = (),
                         prune: bool = False) -> dict:
        """Services with their Endpoints or EndpointSlices (objects as the Kubernetes API
        gives them) -> each Service's VIPs made, replaced, or given their new pods.
        `prune`: the document is every Service there is (a whole `kubectl get` of the
        cluster): the applied Services it does not have go, with their VIPs.
        `built`: tables built ahead from `kubernetes_tables`, taken where they fit."""
        if not isinstance(prune, bool):
            raise InvalidInput(f"{prune!r} is not true or false", "prune")
        desired = kubernetes.desired_services(kubernetes.objects(document))
        pruned = sorted(self.model.services - set(desired)) if prune else []
        desired.update({name: [] for name in pruned})     # keep no VIP of theirs
        plan = service_sync.plan(self.model, desired, built)
        for change in plan.deletes:
            self.del_vip(change.prefix, change.port)
        for change in plan.makes:
            spec = change.spec
            self.add_vip(spec.prefix, spec.port, spec.target_port, spec.node_port,
                         spec.protocol, None, service_sync.new_len_for(len(spec.pods)),
                         list(spec.external_ips), change.service, **spec.policies())
            if spec.pods:
                self.model.offer_table(plan.tables[(change.prefix, change.port)])
                self.add_pods(spec.prefix, spec.port, list(spec.pods))
        for change in plan.updates:
            vip = self.model.find_vip(change.prefix, change.port)
            self.model.set_policies(vip, **change.spec.policies())
            self._sync_compiled(vip)
            if change.add or change.remove:
                pods = [ipaddress.ip_address(a) for a in change.spec.pods]
                ahead = service_sync.built_for(built, pods, vip.new_len)
                if ahead is not None:
                    self.model.offer_table(ahead)
                self._change_pods(vip, change.add, change.remove, end_udp=True)
        self.model.services.update(desired)
        self.model.services.difference_update(pruned)
        return {"services": sorted(set(desired) - set(pruned)), "pruned": pruned, "vips": [
            {"service": c.service, "vip": c.label, "action": c.action,
             "pods_added": list(c.add), "pods_removed": list(c.remove)}
            for c in plan.changes()]}

    def kubernetes_tables(self, document) -> List[Tuple[list, int]]:
        """(pods, new_len) of the tables applying `document` would build ([] if it would
        fail: apply_kubernetes says why)."""
        try:
            desired = kubernetes.desired_services(kubernetes.objects(document))
            return service_sync.tables_to_build(self.model,
                                                service_sync.changes(self.model, desired))
        except KpError:
            return []

    def _change_pods(self, vip: Vip, add, remove, end_udp: bool = False) -> None:
        """Pods in and out of a VIP in one change (one new table); the removed drain.
        `end_udp`: the removed pods' UDP sessions end now, as kube-proxy clears their
        conntrack entries when an endpoint goes: UDP has no end of its own, and its
        clients would go on sending to a pod that may be gone until they were idle."""
        added, removed = self.model.change_pods(vip, list(add), list(remove))
        if added:
            self._broadcast(lambda n: n.pod_programming(vip, added))
        self._sync_compiled(vip)
        if end_udp and removed and frames.UDP in vip.ip_protos:
            self._broadcast(lambda n: n.conntrack_flushes(vip, removed, (frames.UDP,)))
        if end_udp and removed:
            gone = set(removed)
            for node in self.nodes.values():
                msgs = []
                for session in node.sessions_of(vip.id):
                    if session.pod in gone and session.forward.proto == frames.UDP:
                        msgs += pipeline.session_deletes(session)
                        node.end_session(session)
                if msgs:
                    self._send(node.dpid, msgs)
        if removed:
            self._forget_drained_pods()

    def delete_kubernetes(self, document) -> dict:
        """The Services named in `document` (other kinds are ignored) and their VIPs."""
        names = kubernetes.service_names(kubernetes.objects(document))
        unknown = [n for n in names if n not in self.model.services]
        if unknown:
            raise NotFound(f"no Service {', '.join(unknown)} was applied")
        deleted = []
        for vip in [v for v in self.model.vips.values() if v.service in names]:
            self.del_vip(str(vip.prefix), vip.port)
            deleted.append({"service": vip.service, "vip": vip.label(), "action": "deleted"})
        self.model.services.difference_update(names)
        return {"services": names, "vips": deleted}

    def kubernetes_services(self) -> List[dict]:
        owned: Dict[str, List[str]] = {name: [] for name in sorted(self.model.services)}
        for vip in self.model.vips.values():
            if vip.service in owned:
                owned[vip.service].append(vip.label())
        return [{"service": name, "vips": vips} for name, vips in owned.items()]

    def table_plan(self, prefix, port, addresses, remove: bool = False):
        """(pods, new_len) of the table a pod change would build, or None when the change
        would fail: to build that table ahead, off the controller's loop, and hand it
        over with `offer_table` before making the change."""
        try:
            vip = self.model.find_vip(prefix, port)
        except KpError:
            return None
        pods = self.model.pods_after(vip, addresses, remove)
        return None if pods is None else (pods, vip.new_len)

    def offer_table(self, table: MaglevTable) -> None:
        self.model.offer_table(table)

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
                "modes": {str(d): n.mode for d, n in sorted(self.nodes.items())}}

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
                "pods": pods, "counters": counters}

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
