"""VIPs compiled for Open vSwitch: the switch picks the pod and keeps the session itself.

As OVN programs its load balancers: a hash of the 5-tuple selects an entry of the VIP's
new-connection table and `ct(commit, nat)` keeps the session in Open vSwitch's
conntrack, so a new connection never waits for the controller and established ones go
on when it is gone. The hash is Open vSwitch's multipath over `symmetric_l3l4+udp`,
the very function kp_app's model picks with (kp_proto.session_hash): the controller's
packet-in path and Open vSwitch choose the same pod for the same 5-tuple.

The tables (declared in kp_app.pipeline_layout), on a switch in "ct" mode:

    SERVICES   a compiled VIP destination -> reg1 = VIP id, ct(zone, nat) -> CONNTRACK
               a pod's packet from a target port, to this node's subnet
                                          -> ct(zone, nat) -> CONNTRACK
    CONNTRACK  +trk+est, +trk+rel: already translated by ct(nat)      -> FORWARDING
               (CONNTRACK and LB continue in lower tables with Open vSwitch's resubmit)
               +trk+new, reg1 = a VIP's id -> multipath(...) -> reg0, resubmit(LB)
               anything else -> SESSIONS: kp's packet-in tables, as on any switch (a
               pod's reply that no conntrack entry knows, a packet-in session's reply)
    LB         reg1 = VIP id, reg0 = i -> ct(commit, zone, nat(dst=pod:target port))
                                          -> FORWARDING
               reg1 = VIP id, a pod of the VIP as the source -> SESSIONS (hairpin: the
               controller rewrites the source too, which one ct(nat) cannot)
               miss -> SESSIONS

What stays with the controller (the VIP's classifier flows go to SESSIONS as on any
switch): NodePorts (their remote pods need the client's source rewritten as well),
ClientIP affinity, traffic policy Local, source ranges, VIPs without pods (refused by the
controller), tables larger than Open vSwitch's multipath can index, and SCTP: Open
vSwitch's userspace conntrack (3.1, the netdev datapath kp runs it with) tracks SCTP as
a protocol without ports, so ct(nat(dst=POD:PORT)) rewrites the address but never the
port, and every association between one client and one VIP would share one conntrack
entry, hence one pod (tests/switch/test_ovs_sctp_conntrack.py shows it). The controller's
per-association flows (set_field on sctp_dst, which Open vSwitch applies with the CRC32c
computed again) serve SCTP VIPs there instead.

A removed pod keeps its conntrack sessions: its reply flows are not deleted but given an
idle timeout (the session timeout), so they go once its sessions have been idle that
long, as the packet-in mode's session flows do.
"""
from typing import List, Optional

from kp_app import pipeline
from kp_app import pipeline_layout as layout
from kp_app.pipeline import (CONNTRACK, CT_ZONE, FORWARDING, LB, SESSIONS, FlowAdd,
                             FlowDelete, addr_field, flow)
from kp_proto.session_hash import MAX_OVS_TABLE, SCTP

CT_NEW, CT_EST, CT_REL, CT_TRK = 0x01, 0x02, 0x04, 0x20
PRIO_CT_TRACKED = layout.CT_TRACKED.priority
PRIO_CT_NEW = layout.CT_NEW.priority
PRIO_LB_HAIRPIN = layout.LB_HAIRPIN.priority
PRIO_LB_ENTRY = layout.LB_ENTRY.priority
# CONNTRACK and LB come after the tables they continue in, and OpenFlow's goto only goes
# forward: they resubmit (an Open vSwitch action, as are the rest of these).
TO_FORWARDING = (("resubmit", FORWARDING),)
TO_SESSIONS = (("resubmit", SESSIONS),)


def base_flows() -> List[FlowAdd]:
    """The CONNTRACK and LB tables' shared flows (with kp_app.pipeline.base_flows)."""
    base = pipeline.cookie(pipeline.KIND_BASE)
    return [
        flow(CONNTRACK, PRIO_CT_TRACKED, {"ct_state": (CT_TRK | CT_EST, CT_TRK | CT_EST)},
             TO_FORWARDING, cookie=base),
        flow(CONNTRACK, PRIO_CT_TRACKED, {"ct_state": (CT_TRK | CT_REL, CT_TRK | CT_REL)},
             TO_FORWARDING, cookie=base),
        flow(CONNTRACK, pipeline.PRIO_MISS, {}, TO_SESSIONS, cookie=base),
        flow(LB, pipeline.PRIO_MISS, {}, TO_SESSIONS, cookie=base),
    ]


def controller_only(vip) -> Optional[str]:
    """Why no switch can make this VIP's ClusterIP sessions itself (None: one can), in
    ct mode and in kp-switch's lb mode (kp_app.lb_pipeline) alike."""
    if vip.table is None or not vip.table.slots:
        return "no pods (the controller refuses its clients)"
    if vip.affinity_timeout:
        return "ClientIP affinity"
    if vip.internal_policy == "local":
        return "internal traffic policy Local"
    return None


SCTP_NOT_TRACKED = ("SCTP (Open vSwitch's userspace conntrack tracks it without ports: "
                    "no port NAT, one entry per client and VIP)")


def why_not_compiled(vip) -> Optional[str]:
    """None if Open vSwitch can make this VIP's ClusterIP sessions itself, else why not."""
    reason = controller_only(vip)
    if reason is None and SCTP in vip.ip_protos:
        return SCTP_NOT_TRACKED
    if reason is None and vip.new_len > MAX_OVS_TABLE:
        return f"a table of {vip.new_len} entries (Open vSwitch indexes at most {MAX_OVS_TABLE})"
    return reason


def external_compiled(vip) -> bool:
    """Do its external IPs take the compiled path too (else the controller's)? The same
    in lb mode."""
    return vip.external_policy != "local" and not vip.source_ranges


def vip_flows(vip, basis: int) -> List[FlowAdd]:
    """A compiled VIP's CONNTRACK and LB flows (its classifier flows are
    kp_app.pipeline.vip_flows with `ct` set)."""
    flows = [flow(CONNTRACK, PRIO_CT_NEW,
                  {"ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW), "reg1": vip.id},
                  (("multipath", basis, vip.new_len), ("resubmit", LB)),
                  cookie=pipeline.cookie(pipeline.KIND_CT, vip.id))]
    entry = pipeline.cookie(pipeline.KIND_LB, vip.id)
    table = vip.table
    eth_type = 0x0800 if vip.version == 4 else 0x86DD     # nat's prerequisite
    for index, slot in enumerate(table.slots):
        pod = table.pods[slot]
        flows.append(flow(LB, PRIO_LB_ENTRY, {"reg1": vip.id, "reg0": index,
                                              "eth_type": eth_type},
                          (("ct", True, CT_ZONE, FORWARDING,
                            ("dnat", str(pod), vip.target_port)),), cookie=entry))
    for pod in table.pods:
        match = {"reg1": vip.id, "eth_type": eth_type, addr_field(pod.version, "src"): str(pod)}
        flows.append(flow(LB, PRIO_LB_HAIRPIN, match, TO_SESSIONS, cookie=entry))
    return flows


def vip_deletes(vip_id: int) -> List[FlowDelete]:
    """A VIP's CONNTRACK and LB flows (when it stops being compiled)."""
    kind = pipeline.MASK_VIP | pipeline.MASK_KIND
    return [FlowDelete(pipeline.cookie(pipeline.KIND_CT, vip_id), kind, CONNTRACK),
            FlowDelete(pipeline.cookie(pipeline.KIND_LB, vip_id), kind, LB)]
