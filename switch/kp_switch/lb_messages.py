"""kp's load balancer messages (kp_proto.lb) as kp-switch answers them: staged table
and pod chunks, committed whole into the datapath (csrc/lb.h) by KP_LB_VIP.

A message the switch refuses raises ValueError (the agent answers OFPET_BAD_REQUEST)
and changes nothing: a commit checks the staged table and pods before the datapath
sees them, and the datapath swaps a VIP in whole.
"""
import ipaddress
import logging
from typing import Dict, Optional

from kp_proto import lb as wire

LOG = logging.getLogger("kp_switch.lb")

# Staging is bounded: at most this many VIPs half-sent at once, and no more bytes than
# a VIP's largest table and pod list (a controller that never commits cannot grow it).
MAX_STAGED_VIPS = 64
MAX_TABLE_BYTES = 2 * wire.MAX_TABLE
MAX_POD_BYTES = wire.POD.size * wire.MAX_PODS
STATS_PAGE = (wire.MAX_DATA - wire.STATS_HEAD.size) // (wire.STATS_VIP.size + 8) + 1


class _Staged:
    __slots__ = ("table", "pods")

    def __init__(self) -> None:
        self.table = bytearray()
        self.pods = bytearray()


def _append(buf: bytearray, offset: int, raw: bytes, limit: int, what: str) -> None:
    """Chunks come in order: each starts where the last ended (a resent first chunk
    starts the VIP over)."""
    if offset == 0:
        del buf[:]
    elif offset != len(buf):
        raise ValueError("%s chunk at byte %d, want %d" % (what, offset, len(buf)))
    if len(buf) + len(raw) > limit:
        raise ValueError("%s over %d bytes" % (what, limit))
    buf += raw


def _session(t: tuple) -> dict:
    """A datapath's lb_sessions() tuple as kp_proto.lb.encode_sessions_reply takes it."""
    proto, version, client, cport, vip, vport, pod, pport, vip_id, state, idle = t

    def addr(raw: bytes) -> str:
        return str(ipaddress.ip_address(bytes(raw[:4 if version == 4 else 16])))
    return dict(proto=proto, version=version, state=state, vip_id=vip_id, idle_ms=idle,
                client=(addr(client), cport), vip=(addr(vip), vport), pod=(addr(pod), pport))


class LbMessages:
    """Answers kp_proto.lb's messages for one datapath (the agent's lock held)."""

    def __init__(self, dp) -> None:
        self.dp = dp
        self.staged: Dict[int, _Staged] = {}

    def _stage(self, vip_id: int) -> _Staged:
        st = self.staged.get(vip_id)
        if st is None:
            if len(self.staged) >= MAX_STAGED_VIPS:
                raise ValueError("more than %d VIPs staged and not committed" % MAX_STAGED_VIPS)
            st = self.staged[vip_id] = _Staged()
        return st

    def handle(self, exp_type: int, data: bytes) -> Optional[bytes]:
        """Applies one message; returns the reply's data for a request (the reply type is
        the request's + 1)."""
        if exp_type == wire.KP_LB_CONF:
            c = wire.decode_conf(data)
            self.dp.lb_configure(c["buckets"], (c["tcp_established"], c["tcp_closing"],
                                                c["tcp_opening"], c["udp"]),
                                 c["hairpin4"], c["hairpin6"])
        elif exp_type == wire.KP_LB_TABLE:
            vip_id, offset, raw = wire.decode_chunk(data, 2)
            _append(self._stage(vip_id).table, 2 * offset, raw, MAX_TABLE_BYTES, "table")
        elif exp_type == wire.KP_LB_PODS:
            vip_id, offset, raw = wire.decode_chunk(data, wire.POD.size)
            _append(self._stage(vip_id).pods, wire.POD.size * offset, raw, MAX_POD_BYTES,
                    "pods")
        elif exp_type == wire.KP_LB_VIP:
            v = wire.decode_vip(data)
            st = self.staged.pop(v["vip_id"], None) or _Staged()
            if len(st.table) != 2 * v["new_len"] or len(st.pods) != wire.POD.size * v["n_pods"]:
                raise ValueError("KP_LB_VIP %d: %d entries and %d pods staged, want %d and %d"
                                 % (v["vip_id"], len(st.table) // 2,
                                    len(st.pods) // wire.POD.size, v["new_len"], v["n_pods"]))
            self.dp.lb_set_vip(v["vip_id"], v["version"], v["basis"], bytes(st.table),
                               bytes(st.pods))
        elif exp_type == wire.KP_LB_VIP_DELETE:
            vip_id = wire.decode_vip_delete(data)
            self.staged.pop(vip_id, None)
            self.dp.lb_delete_vip(vip_id)
        elif exp_type == wire.KP_LB_FLUSH:
            f = wire.decode_flush(data)
            if f["pod"] is None:
                n = self.dp.lb_flush(f["vip_id"])
            else:
                address, port = f["pod"]
                ip = ipaddress.ip_address(address)
                n = self.dp.lb_flush(f["vip_id"], ip.packed.ljust(16, b"\0"), ip.version, port)
            LOG.info("flushed %d sessions of VIP %s", n, f["vip_id"])
        elif exp_type == wire.KP_LB_SESSIONS_REQUEST:
            most = wire.decode_sessions_request(data)
            return wire.encode_sessions_reply([_session(t) for t in self.dp.lb_sessions(most)])
        elif exp_type == wire.KP_LB_STATS_REQUEST:
            first = wire.decode_stats_request(data)
            # No more VIPs than a reply holds (the smallest record is a VIP of 1 pod):
            # the reply says where the next page starts.
            st = self.dp.lb_stats(first, STATS_PAGE)
            return wire.encode_stats_reply(st, st["vips"], first)
        else:
            raise LookupError(exp_type)
        return None
