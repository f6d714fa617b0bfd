"""Which connection speaks for a datapath id: the first one, unless it is dead.

Ryu takes the datapath id a switch claims in its FEATURES_REPLY. Before this, a second
connection with the id of a connected switch silently became that switch for kp_app:
the controller sent it the node's whole program and believed its packet-ins, and the
real switch was no longer programmed. Now a newcomer whose datapath id has a live
connection is held (it gets nothing, and nothing it sends is believed), and the
incumbent is asked an echo request:

- the incumbent answers within PROBE_SECONDS: it is alive, the newcomer is closed,
  logged and counted (`refused`);
- it does not (a switch that restarted while its old TCP connection lingers, a host
  that went away without a FIN): it is taken for dead and closed, and the newcomer
  takes the datapath id (`taken_over`), as it would once the old connection closes;
- the incumbent's connection closes meanwhile: the newcomer takes over at once.

A third claimant while one is held is closed at once. `takeover` (ryu-manager
--kp-dpid-takeover) restores the old rule: a newcomer always replaces the incumbent,
which is closed.

Pure: connections are whatever objects the caller passes (Ryu datapaths in the shim);
the clock comes in.
"""
from typing import Dict, List, Optional, Tuple

PROBE_SECONDS = 3.0
ACCEPT, PROBE, REFUSE, TAKEOVER = "accept", "probe", "refuse", "takeover"


class DpidClaims:
    def __init__(self, takeover: bool = False) -> None:
        self.takeover = takeover
        self.owners: Dict[int, object] = {}
        self._held: Dict[int, Tuple[object, float]] = {}   # dpid -> (newcomer, deadline)
        self.refused = 0
        self.taken_over = 0

    def owner(self, dpid: int) -> Optional[object]:
        return self.owners.get(dpid)

    def held(self, dpid: int) -> Optional[object]:
        entry = self._held.get(dpid)
        return entry[0] if entry else None

    def claim(self, dpid: int, conn: object, now: float) -> str:
        """A connection says it is `dpid`: ACCEPT (it is the owner now), PROBE (held:
        ask the owner an echo), REFUSE (close it) or TAKEOVER (it is the owner now;
        close the one it replaced)."""
        owner = self.owners.get(dpid)
        if owner is None or owner is conn:
            self.owners[dpid] = conn
            return ACCEPT
        if self.takeover:
            self.owners[dpid] = conn
            self.taken_over += 1
            return TAKEOVER
        if dpid in self._held:
            self.refused += 1
            return REFUSE
        self._held[dpid] = (conn, now + PROBE_SECONDS)
        return PROBE

    def answered(self, dpid: int, conn: object) -> Optional[object]:
        """The owner answered the echo: the held newcomer, to close (None: nothing held,
        or `conn` is not the owner)."""
        if self.owners.get(dpid) is not conn or dpid not in self._held:
            return None
        newcomer, _ = self._held.pop(dpid)
        self.refused += 1
        return newcomer

    def expired(self, now: float) -> List[Tuple[int, object, object]]:
        """(dpid, silent owner to close, newcomer that owns the dpid now) of each probe
        that went unanswered."""
        out = []
        for dpid, (newcomer, deadline) in sorted(self._held.items(), key=lambda kv: kv[0]):
            if deadline <= now:
                del self._held[dpid]
                out.append((dpid, self.owners[dpid], newcomer))
                self.owners[dpid] = newcomer
                self.taken_over += 1
        return out

    def gone(self, dpid: int, conn: object) -> Optional[object]:
        """A connection closed: a held newcomer that owns the dpid now, if `conn` was the
        owner (None otherwise)."""
        entry = self._held.get(dpid)
        if entry is not None and entry[0] is conn:
            del self._held[dpid]
            return None
        if self.owners.get(dpid) is not conn:
            return None
        del self.owners[dpid]
        if entry is None:
            return None
        del self._held[dpid]
        self.owners[dpid] = entry[0]
        self.taken_over += 1
        return entry[0]

    def status(self) -> dict:
        return {"refused": self.refused, "taken_over": self.taken_over,
                "held": sorted(self._held), "takeover": self.takeover}
