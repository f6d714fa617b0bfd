"""Sessions: the pod chosen for a flow's first packet, kept for the flow's life.

A session lives in the controller's table while either of its two switch flows (client
to pod with DNAT, pod to client with SNAT) lives; the switch's flow-removed messages end
it. The switch flows are a cache of this table: if one expires while the other still
carries traffic, the next packet that misses is matched to its session here and the flow
is put back, so the session keeps its pod.

Sessions beyond the table's capacity (`buckets`) are untracked: no switch flow, the
controller relays each of their packets itself (slow, but the client still sees only the
service address), and they end after the idle timeout. The seed forwarded them without
state, which works there only because its reply NAT is stateless; here a reply would
leave with the pod's address.
"""
import hashlib
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

from kp_proto.session_hash import DEFAULT_BASIS, session_hash

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# The seed's table has `buckets` buckets of a compile-time number of entries each; the
# controller's table keeps that capacity so `ku conf buckets` means the same thing.
ENTRIES_PER_BUCKET = 4


@dataclass(frozen=True)
class FiveTuple:
    proto: int
    src: Address
    src_port: int
    dst: Address
    dst_port: int

    def flow_hash(self, basis: int = DEFAULT_BASIS) -> int:
        """Open vSwitch's symmetric_l3l4+udp hash (kp_proto.session_hash): the index
        every kind of switch computes, so every node picks the same pod for a flow."""
        return session_hash(self.proto, self.src, self.src_port, self.dst, self.dst_port,
                            basis)

    def reversed(self) -> "FiveTuple":
        return FiveTuple(self.proto, self.dst, self.dst_port, self.src, self.src_port)


def client_hash(client: Address) -> int:
    """Unsalted, like flow_hash: a client with affinity starts on the same pod on every node."""
    return int.from_bytes(hashlib.blake2b(client.packed.rjust(16, b"\0"), digest_size=8,
                                          person=b"kp-client").digest(), "big")


class ClientAffinity:
    """kube-proxy's sessionAffinity ClientIP: the pod a client's last new session to a
    VIP went to, which its next ones also go to for `timeout` seconds after it."""

    def __init__(self) -> None:
        # (vip id, client) -> (pod, deadline), the least recently used first
        self._last: "OrderedDict[Tuple[int, Address], Tuple[Address, float]]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def pod_for(self, vip_id: int, client: Address, now: float) -> Optional[Address]:
        entry = self._last.get((vip_id, client))
        return entry[0] if entry is not None and now < entry[1] else None

    def remember(self, vip_id: int, client: Address, pod: Address, now: float,
                 timeout: float) -> None:
        key = (vip_id, client)
        self._last.pop(key, None)
        self._last[key] = (pod, now + timeout)
        # The oldest go first; one VIP's long timeout at the front may keep another's
        # expired entries a while, but pod_for never returns an expired one.
        while self._last:
            oldest, (_, deadline) = next(iter(self._last.items()))
            if deadline > now:
                break
            del self._last[oldest]


@dataclass
class Session:
    forward: FiveTuple          # client -> service address:port, as the client sent it
    vip_id: int
    pod: Address
    pod_port: int
    created: float
    client_mac: str             # the client's MAC, or the gateway MAC of its node
    client_in_port: int         # the switch port the client's packets come in on
    snat_address: Optional[Address] = None   # this node's address, when the client's
    snat_port: int = 0                         # source is rewritten (see pipeline)
    forward_installed: bool = False
    reverse_installed: bool = False
    tracked: bool = True        # False: over capacity, relayed packet by packet
    last_seen: float = 0.0      # untracked sessions only: when their last packet passed
    # Packets and bytes: the installed flows' latest stats, per flow kind, plus the final
    # figures of flows that have ended (a flow that expires and comes back starts at 0).
    live_counts: Dict[int, Tuple[int, int]] = field(default_factory=dict)
    ended_packets: int = 0
    ended_bytes: int = 0

    def flow_ended(self, kind: int, packets: int, byte_count: int) -> None:
        self.live_counts.pop(kind, None)
        self.ended_packets += packets
        self.ended_bytes += byte_count

    def relayed(self, byte_count: int, now: float) -> None:
        self.ended_packets += 1
        self.ended_bytes += byte_count
        self.last_seen = now

    def totals(self) -> Tuple[int, int]:
        return (self.ended_packets + sum(p for p, _ in self.live_counts.values()),
                self.ended_bytes + sum(b for _, b in self.live_counts.values()))

    @property
    def reverse(self) -> FiveTuple:
        """pod -> client (or -> this node, with SNAT), as the pod sends its replies."""
        f = self.forward
        if self.snat_address is not None:
            return FiveTuple(f.proto, self.pod, self.pod_port, self.snat_address,
                             self.snat_port)
        return FiveTuple(f.proto, self.pod, self.pod_port, f.src, f.src_port)


class SessionTable:
    """Tracked sessions up to the capacity, and as many again untracked."""

    def __init__(self, buckets: int) -> None:
        self.resize(buckets)
        self._forward: Dict[FiveTuple, Session] = {}
        self._reverse: Dict[FiveTuple, Session] = {}
        # Untracked sessions by forward key, the longest idle first.
        self._untracked: "OrderedDict[FiveTuple, Session]" = OrderedDict()

    def resize(self, buckets: int) -> None:
        """New capacity; sessions beyond it stay until they end (none is dropped)."""
        self.capacity = buckets * ENTRIES_PER_BUCKET

    def __len__(self) -> int:
        return len(self._forward)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._forward.values()))

    @property
    def full(self) -> bool:
        """No room for another tracked session."""
        return len(self._forward) - len(self._untracked) >= self.capacity

    @property
    def untracked_full(self) -> bool:
        return len(self._untracked) >= self.capacity

    def add(self, session: Session) -> None:
        self._forward[session.forward] = session
        self._reverse[session.reverse] = session
        if not session.tracked:
            self._untracked[session.forward] = session

    def track(self, session: Session) -> None:
        """An untracked session takes a free place in the table."""
        if not session.tracked:
            del self._untracked[session.forward]
            session.tracked = True

    def relayed(self, session: Session, byte_count: int, now: float) -> None:
        session.relayed(byte_count, now)
        self._untracked.move_to_end(session.forward)

    def expire_untracked(self, now: float, timeout: Callable[[int], float]) -> List[Session]:
        """Remove the untracked sessions idle for `timeout(IP protocol)` seconds (TCP 6,
        UDP 17); returns them."""
        shortest = min(timeout(6), timeout(17))
        ended = []
        for session in list(self._untracked.values()):      # the longest idle first
            idle = now - session.last_seen
            if idle < shortest:
                break
            if idle >= timeout(session.forward.proto):
                self.remove(session)
                ended.append(session)
        return ended

    def remove(self, session: Session) -> None:
        if self._forward.get(session.forward) is not session:
            return
        del self._forward[session.forward]
        self._reverse.pop(session.reverse, None)
        self._untracked.pop(session.forward, None)

    def by_forward(self, key: FiveTuple) -> Optional[Session]:
        return self._forward.get(key)

    def by_reverse(self, key: FiveTuple) -> Optional[Session]:
        return self._reverse.get(key)
