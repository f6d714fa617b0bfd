"""The only module that builds Ryu OpenFlow objects: kp_app.pipeline data -> messages."""
import struct
from typing import Iterable, List

from kp_app.pipeline import (CacheStatsRequest, FlowAdd, FlowDelete, FlowStatsRequest,
                             PacketOut, SetCacheBuckets)

KP_EXPERIMENTER = 0x004B5000
KP_SET_BUCKETS, KP_CACHE_STATS_REQUEST, KP_CACHE_STATS_REPLY = 1, 2, 3
CACHE_STATS_FIELDS = ("hits", "misses", "inserts", "insert_failures", "evictions", "expired",
                      "invalidated", "entries", "buckets", "parse_errors")


def _actions(datapath, actions: Iterable) -> list:
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    out = []
    for action in actions:
        if action[0] == "output":
            port = action[1]
            # The controller must see whole packets: it forwards them itself.
            max_len = ofp.OFPCML_NO_BUFFER if port == ofp.OFPP_CONTROLLER else 0
            out.append(parser.OFPActionOutput(port, max_len))
        elif action[0] == "set_field":
            out.append(parser.OFPActionSetField(**{action[1]: action[2]}))
        else:
            raise ValueError(f"unknown action {action!r}")
    return out


def build(datapath, msg, kp_switch: bool) -> List:
    """The Ryu messages for one pipeline message ([] for what this switch ignores)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    if isinstance(msg, FlowAdd):
        instructions = []
        if msg.actions:
            instructions.append(parser.OFPInstructionActions(
                ofp.OFPIT_APPLY_ACTIONS, _actions(datapath, msg.actions)))
        if msg.goto is not None:
            instructions.append(parser.OFPInstructionGotoTable(msg.goto))
        return [parser.OFPFlowMod(
            datapath, cookie=msg.cookie, table_id=msg.table, command=ofp.OFPFC_ADD,
            idle_timeout=msg.idle_timeout, priority=msg.priority, buffer_id=ofp.OFP_NO_BUFFER,
            flags=ofp.OFPFF_SEND_FLOW_REM if msg.notify_removed else 0,
            match=parser.OFPMatch(**msg.match_dict), instructions=instructions)]
    if isinstance(msg, FlowDelete):
        return [parser.OFPFlowMod(
            datapath, cookie=msg.cookie, cookie_mask=msg.cookie_mask,
            table_id=ofp.OFPTT_ALL if msg.table is None else msg.table,
            command=ofp.OFPFC_DELETE, out_group=ofp.OFPG_ANY,
            out_port=ofp.OFPP_ANY if msg.out_port is None else msg.out_port,
            match=parser.OFPMatch(**dict(msg.match)))]
    if isinstance(msg, PacketOut):
        in_port = ofp.OFPP_CONTROLLER if msg.in_port is None else msg.in_port
        return [parser.OFPPacketOut(datapath, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                                    actions=_actions(datapath, msg.actions), data=msg.data)]
    if isinstance(msg, FlowStatsRequest):
        return [parser.OFPFlowStatsRequest(
            datapath, 0, ofp.OFPTT_ALL if msg.table is None else msg.table, ofp.OFPP_ANY,
            ofp.OFPG_ANY, msg.cookie, msg.cookie_mask, parser.OFPMatch())]
    if isinstance(msg, SetCacheBuckets):
        if not kp_switch:
            return []
        return [parser.OFPExperimenter(datapath, KP_EXPERIMENTER, KP_SET_BUCKETS,
                                       struct.pack("!I", msg.buckets))]
    if isinstance(msg, CacheStatsRequest):
        if not kp_switch:
            return []
        return [parser.OFPExperimenter(datapath, KP_EXPERIMENTER, KP_CACHE_STATS_REQUEST, b"")]
    raise TypeError(f"not a pipeline message: {msg!r}")


def needs_barrier(msg) -> bool:
    """Deletes must be done before the adds that follow them in a batch."""
    return isinstance(msg, FlowDelete)


def decode_cache_stats(data: bytes) -> dict:
    count = min(len(data) // 8, len(CACHE_STATS_FIELDS))
    values = struct.unpack_from(f"!{count}Q", data)
    return dict(zip(CACHE_STATS_FIELDS, values))


def match_dict(match) -> dict:
    return dict(match.items())

