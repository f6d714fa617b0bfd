"""What kp_app sent a switch and what the switch refused: one switch connection's book.

A switch answers a message it refuses (a full table, a match or action it does not
take, a VIP table it cannot hold) with an OFPT_ERROR that carries the refused
message's xid. kp_app numbers every message it sends (kp_app.ofmsg.encode_batch hands
back each message's xid), so the book keeps xid -> message for the messages in flight,
and an error names exactly what was refused. OpenFlow answers a barrier only after
every message before it is done, errors included, so a barrier's reply closes the book
up to it: what was not refused by then was taken.

What a refusal changes, by what the message was (its cookie, or its VIP id):
- a session's flow (packet-in mode): the session is told its flow is not installed
  (kp_app.node.Node.flow_refused); the next packet that misses puts it back, so the
  retry is paced by the session's own traffic;
- any of a VIP's programming: the VIP is "refused" on that switch, and its whole
  programming is sent again after 1, 2, 4, 8, 16 s (RETRY_DELAYS); a retry whose barrier
  comes back without an error makes it "installed" again. After the last retry it stays
  "refused" (reported, not retried) until the VIP changes (its retries start again), is
  deleted, or the switch reconnects;
- anything else (base flows, host flows, routes, the session table's configuration):
  counted and reported with the switch, not retried.

Every refusal is counted per kind on the switch and per VIP, and the last one is kept
with its error, for `ku show`, REST and /metrics. Nothing here talks to a switch or
reads the clock.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from kp_app import pipeline
from kp_app.pipeline import FlowAdd, FlowDelete, LbFlush, LbVip, LbVipDelete, PacketOut

# Messages remembered in flight per switch: a batch that only programs sessions gets no
# barrier of its own, so under a flood of new sessions the oldest are forgotten (an error
# about one is counted, as of an unknown message). Errors come back in milliseconds.
MAX_IN_FLIGHT = 16384
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)

SESSION, VIP, SWITCH = "session", "vip", "switch"
KINDS = (SESSION, VIP, SWITCH)
_SESSION_KINDS = (pipeline.KIND_FORWARD, pipeline.KIND_REVERSE)
# What a switch is asked for and answers: a batch of only these needs no barrier.
_NO_BARRIER = (PacketOut, pipeline.FlowStatsRequest, pipeline.CacheStatsRequest,
               pipeline.LbStatsRequest, pipeline.LbSessionsRequest)


def what_of(msg) -> Tuple[str, int]:
    """(kind, VIP id) of a message kp_app sent: whose programming it is (VIP id 0 for
    none). `msg` None (a barrier, or a message no longer remembered) is the switch's."""
    if isinstance(msg, (FlowAdd, FlowDelete)):
        parts = pipeline.cookie_parts(msg.cookie)
        if parts is None:
            return SWITCH, 0
        kind, vip_id, _ = parts
        if kind in _SESSION_KINDS:
            return SESSION, vip_id
        return (VIP, vip_id) if vip_id else (SWITCH, 0)
    if isinstance(msg, (LbVip, LbVipDelete, LbFlush)):
        return VIP, msg.vip_id
    return SWITCH, 0


def wants_barrier(messages: Iterable) -> bool:
    """Does a batch need a barrier after it, so that its refusals are known to be all?
    Not for sessions' flows and packet-outs (a new session's batch) or requests."""
    for msg in messages:
        if isinstance(msg, _NO_BARRIER):
            continue
        if isinstance(msg, FlowAdd) and what_of(msg)[0] == SESSION:
            continue
        return True
    return False


def describe(msg) -> str:
    """A refused message in a few words, for the operator."""
    if msg is None:
        return "a message no longer remembered"
    if isinstance(msg, FlowAdd):
        return f"flow add table {msg.table} priority {msg.priority} {dict(msg.match)}"
    if isinstance(msg, FlowDelete):
        return f"flow delete cookie {msg.cookie:#x}/{msg.cookie_mask:#x}"
    if isinstance(msg, LbVip):
        return f"VIP table of VIP id {msg.vip_id} ({len(msg.table)} entries, {len(msg.pods)} pods)"
    return type(msg).__name__


@dataclass
class Refusal:
    """What a switch refused: kind (KINDS), the VIP id (0: none), the switch's error
    ("FLOW_MOD_FAILED TABLE_FULL") and the message in words."""
    kind: str
    vip_id: int
    error: str
    message: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "vip_id": self.vip_id, "error": self.error,
                "message": self.message}


@dataclass
class VipRefusal:
    """A VIP the switch refused some of: its retries."""
    error: str
    refusals: int = 0
    attempts: int = 0               # retries sent so far
    due: Optional[float] = None     # when the next retry goes; None: none scheduled
    retry_xid: Optional[int] = None  # the last xid of the retry in flight

    def state(self) -> str:
        if self.retry_xid is not None or self.due is not None:
            return "retrying"
        return "refused"


@dataclass
class SwitchChannel:
    """One switch connection's book: messages in flight by xid, refusals, retries."""
    in_flight: "OrderedDict[int, object]" = field(default_factory=OrderedDict)
    refused: Dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    refused_by_vip: Dict[int, int] = field(default_factory=dict)
    last: Optional[Refusal] = None
    vips: Dict[int, VipRefusal] = field(default_factory=dict)
    unconfirmed: Dict[int, int] = field(default_factory=dict)   # VIP id -> its last xid
    last_xid: Optional[int] = None

    # -- what went out, what came back ---------------------------------------------

    def sent(self, pairs: Iterable[Tuple[int, object]]) -> None:
        """(xid, message) of each message of a batch, in order (message None: a barrier)."""
        for xid, msg in pairs:
            self.in_flight.pop(xid, None)       # (xids wrap: the newest use wins)
            self.in_flight[xid] = msg
            self.last_xid = xid
            kind, vip_id = what_of(msg)
            if kind == VIP:
                self.unconfirmed[vip_id] = xid
                r = self.vips.get(vip_id)
                if r is not None and r.state() == "refused":
                    r.attempts, r.due = 0, 0.0  # the VIP changed: its retries start again
        while len(self.in_flight) > MAX_IN_FLIGHT:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        """Too much in flight: the oldest message's answer is no longer followed. A VIP
        waiting on it is taken as answered; a retry waiting on it goes again."""
        xid, msg = self.in_flight.popitem(last=False)
        kind, vip_id = what_of(msg)
        if kind == VIP and self.unconfirmed.get(vip_id) == xid:
            del self.unconfirmed[vip_id]
        for r in self.vips.values():
            if r.retry_xid == xid:
                r.retry_xid, r.due = None, 0.0

    def barrier_reply(self, xid: int) -> List[int]:
        """A barrier's reply: everything sent up to it is done. The VIPs whose retry this
        closed without an error (installed now)."""
        if xid not in self.in_flight:
            return []
        done = set()
        while self.in_flight:
            first, msg = self.in_flight.popitem(last=False)
            done.add(first)
            kind, vip_id = what_of(msg)
            if kind == VIP and self.unconfirmed.get(vip_id) == first:
                del self.unconfirmed[vip_id]
            if first == xid:
                break
        installed = [v for v, r in self.vips.items() if r.retry_xid in done]
        for vip_id in installed:
            del self.vips[vip_id]
        return installed

    def error(self, xid: int, error: str, now: float) -> Tuple[Refusal, object]:
        """The switch refused the message of `xid`: (what it was, the message or None)."""
        msg = self.in_flight.get(xid)
        kind, vip_id = what_of(msg)
        refusal = Refusal(kind, vip_id, error, describe(msg))
        self.refused[kind] += 1
        self.last = refusal
        if vip_id:
            self.refused_by_vip[vip_id] = self.refused_by_vip.get(vip_id, 0) + 1
        if kind == VIP:
            self._vip_refused(vip_id, error, now)
        return refusal, msg

    def _vip_refused(self, vip_id: int, error: str, now: float) -> None:
        r = self.vips.setdefault(vip_id, VipRefusal(error))
        r.error = error
        r.refusals += 1
        r.retry_xid = None          # a retry in flight failed
        if r.due is None and r.attempts < len(RETRY_DELAYS):
            r.due = now + RETRY_DELAYS[r.attempts]

    # -- retries -------------------------------------------------------------------

    def due(self, now: float) -> List[int]:
        """The VIPs whose retry is due."""
        return sorted(v for v, r in self.vips.items() if r.due is not None and r.due <= now)

    def retrying(self, vip_id: int) -> None:
        """The VIP's whole programming was just sent again (its last xid: `last_xid`)."""
        r = self.vips[vip_id]
        r.attempts += 1
        r.due = None
        r.retry_xid = self.last_xid

    def forget_vip(self, vip_id: int) -> None:
        """The VIP is gone: nothing of it to retry or report."""
        self.vips.pop(vip_id, None)
        self.unconfirmed.pop(vip_id, None)

    # -- what the operator sees ----------------------------------------------------

    def vip_status(self, vip_id: int) -> dict:
        """The VIP on this switch: installed, pending (sent, not yet confirmed by a
        barrier), retrying or refused (with the error, and the refusals and retries)."""
        r = self.vips.get(vip_id)
        refused = self.refused_by_vip.get(vip_id, 0)
        if r is not None:
            return {"state": r.state(), "error": r.error, "refused": refused,
                    "retries": r.attempts, "retries_left": len(RETRY_DELAYS) - r.attempts}
        state = "pending" if vip_id in self.unconfirmed else "installed"
        return {"state": state, "refused": refused}

    def status(self) -> dict:
        return {"refused": dict(self.refused), "in_flight": len(self.in_flight),
                "last_refused": None if self.last is None else self.last.to_dict(),
                "vips_refused": sorted(self.vips)}
