"""What switches answer kp_app's programming with (KubeProxy's part): refusals
(OFPT_ERROR) and barrier replies, matched to what was sent by kp_app.refusals' book of
each switch's connection, and the retries of refused VIPs. The Ryu shim records what it
sends in `channel(dpid)` and hands these events over; the clock is KubeProxy's.
"""
import logging
from typing import Dict

from kp_app.pipeline import FlowAdd
from kp_app.refusals import SESSION, VIP, SwitchChannel

LOG = logging.getLogger("kp_app")


class SwitchAnswers:
    """A mixin of KubeProxy: it has `channels`, `nodes`, `model`, `_send`, `_clock`."""

    def channel(self, dpid: int) -> SwitchChannel:
        """The book of switch `dpid`'s connection: the sender records what it sends."""
        return self.channels.setdefault(dpid, SwitchChannel())

    def switch_refused(self, dpid: int, xid: int, error: str) -> None:
        """Switch `dpid` refused the message of `xid` (an OFPT_ERROR; `error` says why):
        it is counted, and what it was part of is told (kp_app.refusals)."""
        channel = self.channels.get(dpid)
        if channel is None:
            return
        refusal, msg = channel.error(xid, error, self._clock())
        vip = self.model.vip_by_id(refusal.vip_id) if refusal.vip_id else None
        count = channel.refused[refusal.kind]
        if refusal.kind != SESSION or count & (count - 1) == 0:     # (a flood: 1, 2, 4...)
            LOG.warning("switch %016x refused %s%s: %s (%d %s refusals)", dpid,
                        refusal.message, f" of VIP {vip.label()}" if vip else "", error,
                        count, refusal.kind)
        node = self.nodes.get(dpid)
        if refusal.kind == SESSION and node is not None and isinstance(msg, FlowAdd):
            node.flow_refused(msg.cookie, msg.match_dict)
        elif refusal.kind == VIP and vip is None:
            channel.forget_vip(refusal.vip_id)

    def barrier_reply(self, dpid: int, xid: int) -> None:
        channel = self.channels.get(dpid)
        if channel is None:
            return
        for vip_id in channel.barrier_reply(xid):
            vip = self.model.vip_by_id(vip_id)
            LOG.info("switch %016x: VIP %s installed on retry", dpid,
                     vip.label() if vip else vip_id)

    def retry_refused(self) -> None:
        """Send again the whole programming of the VIPs whose retry is due (the shim
        calls this about once a second)."""
        now = self._clock()
        for dpid, channel in list(self.channels.items()):
            node = self.nodes.get(dpid)
            if node is None:
                continue
            for vip_id in channel.due(now):
                vip = self.model.vip_by_id(vip_id)
                if vip is None:
                    channel.forget_vip(vip_id)
                    continue
                msgs = node.vip_reprogramming(vip)
                if not msgs:            # (nothing of it on this switch any more)
                    channel.forget_vip(vip_id)
                    continue
                self._send(dpid, msgs)
                channel.retrying(vip_id)

    def channel_status(self) -> Dict[str, dict]:
        """Per switch: its refusals by kind, the last one, the VIPs it refused."""
        return {str(d): self.channel(d).status() for d in sorted(self.nodes)}
