"""The Ryu app's switch connections by datapath id (a mixin of kp_app.ryu_shim.KpRyuApp):
the first connection of a datapath id keeps it unless it is dead (kp_app.dpid_claims
decides; this sends the echo that asks, closes and adopts). Only the owner of its
datapath id is programmed and believed: the app's handlers ask `_current` first.
"""
import logging
import time

from ryu.controller import ofp_event
from ryu.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls

from kp_app.dpid_claims import ACCEPT, PROBE, PROBE_SECONDS, REFUSE

LOG = logging.getLogger("kp_app")


class SwitchConnections:
    """Needs the app's `datapaths`, `kubeproxy`, `_probes` and its per-switch state
    (`kp_switches`, `_lb_stats_parts`, `_early_port_names`, `_connecting`)."""

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev) -> None:
        """Connections by datapath id: the first keeps it unless it is dead
        (kp_app.dpid_claims)."""
        datapath = ev.datapath
        dpid = datapath.id
        if dpid is None:
            return
        claims = self.kubeproxy.claims
        if ev.state != MAIN_DISPATCHER:
            newcomer = claims.gone(dpid, datapath)
            if self.datapaths.get(dpid) is datapath:
                LOG.info("switch %016x disconnected", dpid)
                self._drop(dpid)
            if newcomer is not None:
                LOG.warning("switch %016x: the connection from %s takes it over", dpid,
                            newcomer.address)
                self._adopt(newcomer)
            return
        decision = claims.claim(dpid, datapath, time.monotonic())
        owner = self.datapaths.get(dpid)
        if decision == ACCEPT:
            self._adopt(datapath)
        elif decision == PROBE:
            LOG.warning("switch %016x: a second connection from %s claims it while %s is "
                        "connected: held, asking the first for an echo", dpid,
                        datapath.address, owner.address if owner else "another")
            self._probe(dpid, claims.owner(dpid))
        elif decision == REFUSE:
            LOG.warning("switch %016x: one more connection from %s claims it while one is "
                        "held already: closed (%d refused)", dpid, datapath.address,
                        claims.refused)
            datapath.close()
        else:   # takeover allowed (--kp-dpid-takeover)
            LOG.warning("switch %016x: the connection from %s replaces the one from %s "
                        "(--kp-dpid-takeover)", dpid, datapath.address,
                        owner.address if owner else "none")
            if owner is not None:
                self._drop(dpid)
                owner.close()
            self._adopt(datapath)

    def _adopt(self, datapath) -> None:
        """A connection that owns its datapath id: the switch is programmed once its
        description says what it is (the replies come in this order)."""
        LOG.info("switch %016x connected from %s", datapath.id, datapath.address)
        self.datapaths[datapath.id] = datapath
        parser = datapath.ofproto_parser
        datapath.send_msg(parser.OFPDescStatsRequest(datapath, 0))
        datapath.send_msg(parser.OFPPortDescStatsRequest(datapath, 0))

    def _drop(self, dpid: int) -> None:
        """The owner of `dpid` went (or was closed): forget what its connection had."""
        del self.datapaths[dpid]
        self.kp_switches.discard(dpid)
        self._lb_stats_parts.pop(dpid, None)
        self._early_port_names.pop(dpid, None)
        for key in [k for k in self._connecting if k[0] == dpid]:
            del self._connecting[key]
        self.kubeproxy.switch_disconnected(dpid)

    def _current(self, datapath) -> bool:
        """Is this the connection that owns its datapath id (not one held or refused)?"""
        return datapath.id is not None and self.datapaths.get(datapath.id) is datapath

    def _probe(self, dpid: int, owner) -> None:
        echo = owner.ofproto_parser.OFPEchoRequest(owner, data=b"kp: still there?")
        owner.set_xid(echo)
        self._probes[dpid] = echo.xid
        owner.send_msg(echo)

    @set_ev_cls(ofp_event.EventOFPEchoReply, MAIN_DISPATCHER)
    def _echo_reply(self, ev) -> None:
        datapath = ev.msg.datapath
        if datapath.id is None or self._probes.get(datapath.id) != ev.msg.xid:
            return
        del self._probes[datapath.id]
        newcomer = self.kubeproxy.claims.answered(datapath.id, datapath)
        if newcomer is not None:
            LOG.warning("switch %016x: the first connection answered; the second, from %s, "
                        "is closed (%d refused)", datapath.id, newcomer.address,
                        self.kubeproxy.claims.refused)
            newcomer.close()

    def _probes_expired(self) -> None:
        for dpid, old, newcomer in self.kubeproxy.claims.expired(time.monotonic()):
            self._probes.pop(dpid, None)
            LOG.warning("switch %016x: no echo reply from %s in %.0f s: taken for dead and "
                        "closed; the connection from %s takes the switch over", dpid,
                        old.address, PROBE_SECONDS, newcomer.address)
            if self.datapaths.get(dpid) is old:
                self._drop(dpid)
            old.close()
            self._adopt(newcomer)
