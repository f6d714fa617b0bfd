"""VIPs compiled for kp-switch ("lb" mode): the switch makes and keeps the sessions in
its C data path, from VIP tables kp_app programs into it.

The same idea as ct mode on Open vSwitch (kp_app.ct_pipeline), with kp's own action and
experimenter messages (kp_proto.lb, the wire format both sides import): kp_app sends
each compiled VIP's new-connection table and pods (LbVip), and the VIP's classifier
flows end in kp_lb(VIP id). On a VIP's first packet the switch hashes the 5-tuple
(kp_proto.session_hash, the function kp_app's model picks with, so every mode and every
node sends a 5-tuple to the same pod), takes that entry of the VIP's table, keeps the
session, DNATs the packet and runs it through the tables again from table 0, whose
FORWARDING flows send it on. Later packets of the session, both ways, are translated
before the tables see them, as a kernel's conntrack does before its NAT rules: a
compiled session needs no reply flow and nothing from the controller.

    SERVICES   500+ a compiled VIP destination -> kp_lb(VIP id)  (no goto: kp_lb ends it;
                    a pod's request to itself too: kp-switch does the hairpin)
               everything else as on any switch (kp_app.pipeline)

What stays with the controller (the VIP's classifier flows go to SESSIONS as on any
switch) is what ct mode leaves to it (ct_pipeline.controller_only: ClientIP affinity,
traffic policy Local, VIPs without pods; NodePorts, and the external IPs of a
VIP with source ranges or external policy Local), but not the table size: kp-switch
takes tables of up to kp_proto.lb.MAX_TABLE entries.

Order matters on the wire: a VIP the switch does not know drops what kp_lb gives it, so
a VIP's LbVip goes before the flows that use it and its LbVipDelete after the flows that
stop using it (a batch keeps its order).

Sessions belong to the switch: they outlive a controller restart or a reconnect, and
resending a VIP with the same table (every connect does) disturbs none. A pod that
leaves the table keeps its sessions (drain) unless they are flushed.
"""
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

from kp_app import ct_pipeline, pipeline
from kp_app.pipeline import (SERVICES, SESSIONS, FlowAdd, FlowDelete, LbConf, LbFlush, LbVip,
                             LbVipDelete)
from kp_proto import lb as kplb

KP_LB = "kp_lb"     # the pipeline's name of the action: (KP_LB, VIP id)
external_compiled = ct_pipeline.external_compiled



def why_not_compiled(vip) -> Optional[str]:
    """None if kp-switch can make this VIP's ClusterIP sessions itself, else why not."""
    reason = ct_pipeline.controller_only(vip)
    if reason is None and vip.new_len > kplb.MAX_TABLE:
        return f"a table of {vip.new_len} entries (kp-switch takes at most {kplb.MAX_TABLE})"
    if reason is None and len(vip.table.pods) > kplb.MAX_PODS:
        return f"{len(vip.table.pods)} pods (kp-switch takes at most {kplb.MAX_PODS})"
    return reason


def lb_conf(conf, node_addresses) -> LbConf:
    """The switch's session table from the model's conf: `buckets` (at most what
    kp-switch takes), the idle timeouts of established TCP (`timeout`), of closing TCP
    (`tcp_close_wait`, else Linux conntrack's 120 s but never more than `timeout`) and
    of UDP (`udp_timeout`, else `timeout`); TCP being opened keeps conntrack's timeout
    (kp_proto.lb's default), never more than `timeout`. A pod that reaches itself
    through its VIP gets the request from the node's address, as the controller's
    hairpin sessions (and kube-proxy's masquerade) give it."""
    ipv4, ipv6 = node_addresses.ipv4, node_addresses.ipv6
    return LbConf(min(conf.buckets, kplb.MAX_SESSION_BUCKETS), conf.timeout,
                  conf.closing_timeout(), min(kplb.DEFAULT_TCP_OPENING, conf.timeout),
                  conf.idle_timeout(17),
                  None if ipv4 is None else str(ipv4), None if ipv6 is None else str(ipv6))


def lb_vip(vip, basis: int) -> LbVip:
    """A compiled VIP's table and pods as the switch takes them: the model's Maglev
    table as it is (slots are indexes into its sorted pods; the very array, shared by
    every node's LbVip of it), each pod at the target port (0 for a port-0 VIP: the
    switch keeps the packet's port)."""
    table = vip.table
    pods = tuple((str(p), vip.target_port) for p in table.pods)
    return LbVip(vip.id, vip.version, table.slots, pods, basis)


def controller_sessions(vip) -> bool:
    """Can the controller make sessions of this VIP on kp-switch (lb mode)? It does for a
    VIP not compiled, for its NodePort, and for external IPs that do not take the
    compiled path; those need the pods' reply flows (for the sessions it relays). Every
    other session is kp-switch's, hairpin ones too, and the switch translates their
    replies before the tables see them: no reply flow."""
    return (why_not_compiled(vip) is not None or vip.node_port is not None
            or (bool(vip.external_ips) and not external_compiled(vip)))


def vip_flows(vip, node_addresses) -> List[FlowAdd]:
    """kp_app.pipeline.vip_flows in lb mode: compiled destinations go to kp_lb; the
    NodePort flows are as on any switch, and so are the reply flows where the controller
    makes sessions (controller_sessions)."""
    return pipeline.vip_flows(vip, node_addresses, why_not_compiled(vip) is None,
                              external_compiled(vip), switch_actions=((KP_LB, vip.id),),
                              replies=controller_sessions(vip))


def classifier_flows(vip, node_addresses) -> Tuple[FlowAdd, ...]:
    """The VIP's classifier flows in SERVICES (to kp_lb where compiled, else to
    SESSIONS). A pod that reaches itself through the VIP goes to kp_lb too: the switch
    rewrites the source to the node's address (lb_conf) and may send the packet back out
    of its in_port (kp-switch's FK_LB_LOOPBACK)."""
    flows = pipeline.vip_flows(vip, node_addresses, why_not_compiled(vip) is None,
                               external_compiled(vip), switch_actions=((KP_LB, vip.id),),
                               replies=False)
    mine = pipeline.cookie(pipeline.KIND_VIP, vip.id)
    return tuple(f for f in flows if f.table == SERVICES and f.cookie == mine)


@dataclass(frozen=True)
class Compiled:
    """What a switch holds of one VIP in lb mode: its table (None: the controller makes
    its sessions) and its classifier flows, so that a change sends only what changes;
    and its pods' reply flows where the controller makes some of its sessions."""
    vip: Optional[LbVip] = None
    classifier: Tuple[FlowAdd, ...] = ()
    replies: Tuple[FlowAdd, ...] = ()


NOTHING = Compiled()


def compiled(vip, node_addresses, basis: int) -> Compiled:
    """What the switch should hold of the VIP."""
    table = lb_vip(vip, basis) if why_not_compiled(vip) is None else None
    replies: Tuple[FlowAdd, ...] = ()
    if controller_sessions(vip) and vip.target_port:
        subnet = node_addresses.subnet(vip.version)
        replies = tuple(f for address in sorted(vip.pods, key=int) for proto in vip.ip_protos
                        for f in pipeline.reply_flows(pipeline.reply_key(vip, address, proto),
                                                      subnet))
    return Compiled(table, classifier_flows(vip, node_addresses), replies)


def changes(held: Compiled, wanted: Compiled) -> list:
    """From what the switch holds of a VIP to what it should, in an order that never
    sends a packet the wrong way: first the flows to SESSIONS (the controller can take
    any packet: the classifier of a VIP no longer compiled),
    then the new table (the switch takes it whole and at once; sessions made keep their
    pod), then the flows to kp_lb that use it, then the deletes of flows not wanted
    (strict: they never hit the adds), and last, for a VIP no longer compiled, its
    deletion. A changed flow is an add over the one of the same match. Reply flows come
    first of all, and only ever come: they are shared by every VIP of the same pod and
    target port, and go (kp_app.node.Node.reply_deletes) once none has the pod."""
    have: FrozenSet[FlowAdd] = frozenset(held.classifier)
    adds = [f for f in wanted.classifier if f not in have]
    had_replies = frozenset(held.replies)
    msgs: list = [f for f in wanted.replies if f not in had_replies]
    msgs += [f for f in adds if f.goto == SESSIONS]
    if wanted.vip is not None and wanted.vip != held.vip:
        msgs.append(wanted.vip)
    msgs += [f for f in adds if f.goto != SESSIONS]
    kept = {(f.table, f.priority, f.match) for f in wanted.classifier}
    msgs += [FlowDelete(f.cookie, pipeline.MASK_ALL, f.table, f.match, priority=f.priority)
             for f in held.classifier if (f.table, f.priority, f.match) not in kept]
    if held.vip is not None and wanted.vip is None:
        msgs.append(LbVipDelete(held.vip.vip_id))
    return msgs


def forget(held: Compiled, vip_id: int) -> list:
    """A deleted VIP (its flows already gone): end its sessions now, as ct mode flushes
    a deleted VIP's conntrack entries, then forget it. The flush comes first: the
    switch finds a VIP's sessions by its id. A VIP id is reused, and a session left over
    would be translated to the old VIP's pod."""
    msgs: list = [LbFlush(vip_id)]
    if held.vip is not None:
        msgs.append(LbVipDelete(vip_id))
    return msgs


def flushes(vip, pods, protos: Optional[Sequence[int]] = None) -> list:
    """End the switch's sessions of the VIP to `pods` (their pod port is the target
    port; 0: any). KP_LB_FLUSH has no protocol: a flush of some of the VIP's protocols
    only (Kubernetes ends a removed endpoint's UDP sessions, TCP ones drain) cannot be
    said for a VIP of both, whose sessions then drain. A whole VIP's flush is `forget`'s,
    once its flows are gone."""
    if pods is None or (protos and set(vip.ip_protos) - set(protos)):
        return []
    return [LbFlush(vip.id, (str(p), vip.target_port)) for p in pods]


@dataclass
class LbCounts:
    """One VIP's sessions the switch made, from its last KP_LB_STATS_REPLY: packets and
    bytes it translated, sessions made, untracked (table full), sessions made per pod."""
    packets: int = 0
    bytes: int = 0
    sessions: int = 0
    untracked: int = 0
    pods: Dict[str, int] = field(default_factory=dict)

    def figures(self, pod=None) -> Tuple[int, int, int, int]:
        """(new sessions, packets, bytes, untracked) of the VIP, or of one of its pods
        (new sessions only: the switch counts no traffic per pod)."""
        if pod is not None:
            return self.pods.get(str(pod), 0), 0, 0, 0
        return self.sessions, self.packets, self.bytes, self.untracked


def counts(records: List[dict], held: Dict[int, object]) -> Dict[int, LbCounts]:
    """The VIP records of a stats reply (kp_proto.lb.decode_stats_reply), for the VIPs
    the switch holds as compiled: per-pod counts follow the pod list the switch was sent
    (a record of another length is of a list since replaced: its pods are left out)."""
    out = {}
    for record in records:
        state = held.get(record["vip_id"])
        if not isinstance(state, Compiled) or state.vip is None:
            continue
        pods = state.vip.pods
        per_pod = record["pods"]
        out[record["vip_id"]] = LbCounts(
            record["packets"], record["bytes"], record["sessions"], record["untracked"],
            {a: n for (a, _), n in zip(pods, per_pod)} if len(per_pod) == len(pods) else {})
    return out
