"""Pure-Python twin of the in-switch load balancer (csrc/lb.c, see csrc/lb.h).

What it shares with the C code: the VIPs (table of pod indexes, pods, hash basis), the
pod a new session gets (kp_proto.session_hash of the 5-tuple, modulo the table's
length), which packets start a session (a TCP SYN, an SCTP INIT, any UDP datagram),
the translation both ways (hairpin included), the TCP states and their timeouts (SCTP's
follow its chunks through the same states, kp_proto.sctp), the counters and the
session table's capacity (buckets x 4 ways), the fragments' translation (a later fragment
gets its first's, for FRAG_TIMEOUT_MS) and which ICMP errors are translated back.  What
it does not: where an entry sits in its buckets or fragment slots (a dict here, the
oldest fragment dropped when FRAG_SLOTS are in use; the C table is direct-mapped), so
tests of fragments send few datagrams at a time.  Here the table is a dict bounded by the same capacity, so it is full when
the C table is 100% full, where the C one may refuse a session a little earlier (both
of a key's buckets full); tests of "full" fill the table whole.

Used by fastpath_ref.Datapath (the switch without its C extension); the state belongs
to the caller's lock.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

from kp_proto import lb as wire
from kp_proto import sctp
from kp_proto.session_hash import session_hash

TCP, UDP, SCTP = 6, 17, sctp.PROTO
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
ESTABLISHED, CLOSING, OPENING, UDP_STATE = range(4)
STATE_NAMES = ("established", "closing", "opening", "udp")
DEFAULT_TIMEOUTS = (wire.DEFAULT_TCP_ESTABLISHED, wire.DEFAULT_TCP_CLOSING,
                    wire.DEFAULT_TCP_OPENING, wire.DEFAULT_UDP)
DEFAULT_BUCKETS = 1024     # csrc/lb.h LB_DEFAULT_BUCKETS
FRAG_SLOTS = 4096          # csrc/lb.h LB_FRAG_SLOTS
FRAG_TIMEOUT_MS = 5000     # csrc/lb.h LB_FRAG_TIMEOUT_MS

# A session key: (proto, version, src, sport, dst, dport), addresses as packed bytes.
Key = Tuple[int, int, bytes, int, bytes, int]


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class _Vip:
    __slots__ = ("id", "version", "basis", "table", "pods", "pod_sessions", "packets",
                 "bytes", "sessions", "untracked")

    def __init__(self, vip_id: int, version: int, basis: int, table: List[int],
                 pods: List[Tuple[bytes, int]]) -> None:
        self.id, self.version, self.basis = vip_id, version, basis
        self.table, self.pods = table, pods
        self.pod_sessions = [0] * len(pods)
        self.packets = self.bytes = self.sessions = self.untracked = 0


class _Entry:
    __slots__ = ("new_dst", "new_dport", "new_src", "new_sport", "forward", "state",
                 "vip_id", "last_ms", "partner")

    def __init__(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)


class LoadBalancer:
    def __init__(self, buckets: int = DEFAULT_BUCKETS) -> None:
        self.buckets = buckets
        self.timeouts_ms = [t * 1000 for t in DEFAULT_TIMEOUTS]
        self.hairpin_src: Dict[int, Optional[bytes]] = {4: None, 6: None}
        self.vips: Dict[int, _Vip] = {}
        self.entries: Dict[Key, _Entry] = {}
        self.c = dict(created=0, untracked=0, dropped=0, table_full=0, source_limited=0,
                      flushed=0, fragments=0, icmp_errors=0)
        # (version, src, dst, proto, IP id) -> (dst translation, src translation, vip, ms)
        self.frags: "OrderedDict[tuple, tuple]" = OrderedDict()

    # -- programming (the Datapath's lb_* methods) --------------------------------------

    def configure(self, buckets: int, timeouts: Tuple[int, int, int, int],
                  hairpin4: Optional[bytes] = None, hairpin6: Optional[bytes] = None) -> None:
        for address, size in ((hairpin4, 4), (hairpin6, 16)):
            if address is not None and len(address) != size:
                raise ValueError("an IPv%d hairpin source of another number of bytes: "
                                 "want %d" % (4 if size == 4 else 6, size))
        if buckets < 1 or buckets & (buckets - 1) or buckets > wire.MAX_SESSION_BUCKETS:
            raise ValueError("%r session buckets: want a power of 2 in 1..%d"
                             % (buckets, wire.MAX_SESSION_BUCKETS))
        if len(timeouts) != 4 or any(not 0 < t <= 864000 for t in timeouts):
            raise ValueError("timeouts %r: each 1..864000 s" % (timeouts,))
        if buckets != self.buckets:
            self.entries.clear()
            self.buckets = buckets
        self.timeouts_ms = [t * 1000 for t in timeouts]
        self.hairpin_src = {4: None if hairpin4 is None else bytes(hairpin4),
                            6: None if hairpin6 is None else bytes(hairpin6)}

    def set_vip(self, vip_id: int, version: int, basis: int, table: bytes, pods: bytes) -> None:
        if len(table) % 2 or len(pods) % wire.POD.size:
            raise ValueError("lb_set_vip: %d table bytes, %d pod bytes" % (len(table), len(pods)))
        entries = [int.from_bytes(table[i:i + 2], "big") for i in range(0, len(table), 2)]
        plist = [(a[:4] if version == 4 else a, p) for a, p in wire.POD.iter_unpack(pods)]
        if not 0 < vip_id < wire.MAX_VIPS or version not in (4, 6) or not entries \
                or len(entries) > wire.MAX_TABLE or not plist or len(plist) > wire.MAX_PODS \
                or basis > 0xFFFF:
            raise ValueError("VIP %d: version %d, %d entries, %d pods, basis %d"
                             % (vip_id, version, len(entries), len(plist), basis))
        if any(e >= len(plist) for e in entries):
            raise ValueError("VIP %d: an entry names a pod beyond %d" % (vip_id, len(plist)))
        if version == 4 and any(any(a[4:]) for a, _ in wire.POD.iter_unpack(pods)):
            raise ValueError("VIP %d: a pod is not an IPv4 address" % vip_id)
        vip = _Vip(vip_id, version, basis, entries, plist)
        old = self.vips.get(vip_id)
        if old is not None:
            vip.packets, vip.bytes = old.packets, old.bytes
            vip.sessions, vip.untracked = old.sessions, old.untracked
            before = {pod: n for pod, n in zip(old.pods, old.pod_sessions)}
            vip.pod_sessions = [before.get(pod, 0) for pod in plist]
        self.vips[vip_id] = vip

    def delete_vip(self, vip_id: int) -> None:
        if not 0 < vip_id < wire.MAX_VIPS:
            raise ValueError("VIP id %r out of 1..%d" % (vip_id, wire.MAX_VIPS - 1))
        self.vips.pop(vip_id, None)

    def flush(self, vip_id: int, pod: Optional[bytes] = None, version: int = 0,
              port: int = 0) -> int:
        n = 0
        want = None if pod is None else (pod[:4] if version == 4 else pod)
        for key, e in list(self.entries.items()):
            if not e.forward or key not in self.entries:
                continue
            if vip_id != wire.ALL_VIPS and e.vip_id != vip_id:
                continue
            if want is not None and (e.new_dst != want or (port and e.new_dport != port)):
                continue
            self.entries.pop(e.partner, None)
            del self.entries[key]
            n += 1
        self.c["flushed"] += n
        self.frags.clear()          # no fragment to a flushed pod
        return n

    def stats(self, first_vip_id: int = 0, most: int = wire.MAX_VIPS) -> Dict[str, Any]:
        now = _now_ms()
        live = sum(1 for e in self.entries.values() if e.forward and self._live(e, now))
        vips = [dict(vip_id=v.id, packets=v.packets, bytes=v.bytes, sessions=v.sessions,
                     untracked=v.untracked, pods=list(v.pod_sessions))
                for v in sorted(self.vips.values(), key=lambda v: v.id)
                if v.id >= first_vip_id][:most]
        return dict(sessions=live, capacity=self.buckets * wire.SESSION_WAYS // 2,
                    created=self.c["created"], untracked=self.c["untracked"],
                    dropped=self.c["dropped"], table_full=self.c["table_full"],
                    source_limited=self.c["source_limited"],
                    fragments=self.c["fragments"], icmp_errors=self.c["icmp_errors"],
                    split_sessions=0, vips=vips)   # one thread: none split (steer.h)

    def sessions(self, max_count: int = 1000) -> List[tuple]:
        now, out = _now_ms(), []
        for key, e in self.entries.items():
            if len(out) >= max_count:
                break
            if e.forward and self._live(e, now):
                proto, version, src, sport, dst, dport = key
                out.append((proto, version, src, sport, dst, dport, e.new_dst, e.new_dport,
                            e.vip_id, STATE_NAMES[e.state], now - e.last_ms))
        return out

    # -- the packet path -----------------------------------------------------------------

    def _live(self, e: _Entry, now: int) -> bool:
        return now - e.last_ms < self.timeouts_ms[e.state]

    def _find(self, key: Key, now: int) -> Optional[_Entry]:
        e = self.entries.get(key)
        if e is not None and not self._live(e, now):
            del self.entries[key]
            e = None
        return e

    def translate(self, key: Optional[Key], tcp_flags: int) -> Optional[tuple]:
        """A session's packet: ((new dst, dport) or None, (new src, sport) or None).
        `tcp_flags`: TCP's, or an SCTP packet's sctp.chunk_summary."""
        if key is None or not self.entries:
            return None
        now = _now_ms()
        e = self._find(key, now)
        if e is None:
            return None
        partner = self.entries.get(e.partner)
        # A SYN (or SYN-ACK) on a closed session's ports, either way: a connection that
        # is not the session's, which ends (lb.c says why)
        if key[0] == TCP and e.state == CLOSING and tcp_flags & (SYN | RST | FIN) == SYN:
            self.entries.pop(e.partner, None)
            del self.entries[key]
            return None
        if key[0] == SCTP and e.state == CLOSING and tcp_flags & sctp.STARTS:
            self.entries.pop(e.partner, None)
            del self.entries[key]
            return None
        if key[0] == SCTP:
            state = e.state
            if tcp_flags & sctp.CLOSES:
                state = CLOSING
            elif state == OPENING and not e.forward:
                state = ESTABLISHED
            e.state = state
            if partner is not None:
                partner.state = state
        if key[0] == TCP:
            state = e.state
            if tcp_flags & (FIN | RST):
                state = CLOSING
            elif state == OPENING and not e.forward and tcp_flags & ACK:
                state = ESTABLISHED
            e.state = state
            if partner is not None:
                partner.state = state
        e.last_ms = now
        if partner is not None:
            partner.last_ms = now
        return e

    def select(self, vip_id: int, key: Optional[Key], version: int, proto: int,
               tcp_flags: int, blob: bytes, length: int) -> Optional[tuple]:
        """kp_lb: the translation of a VIP's packet that no session knows, after making
        its session if it starts one; None: drop it (no such VIP, wrong family)."""
        vip = self.vips.get(vip_id)
        if vip is None or vip.version != version:
            self.c["dropped"] += 1
            return None
        from .fastpath_ref import session_hash as blob_hash
        pi = vip.table[blob_hash(blob, vip.basis) % len(vip.table)]
        pod, pod_port = vip.pods[pi]
        vip.packets += 1
        vip.bytes += length
        if key is None:
            vip.untracked += 1
            self.c["untracked"] += 1
            return (pod, None), None
        _, _, src, sport, dst, dport = key
        new_dport = pod_port or dport
        hairpin = pod == src
        # (a hairpin request comes from the node, as configured, else from the VIP)
        hsrc = (self.hairpin_src[version] or dst) if hairpin else None
        if proto == TCP:
            starts = tcp_flags & (SYN | ACK | RST | FIN) == SYN
        elif proto == SCTP:
            starts = bool(tcp_flags & sctp.STARTS)
        else:
            starts = proto == UDP
        rkey = (proto, version, pod, new_dport, hsrc if hairpin else src, sport)
        now = _now_ms()
        state = OPENING if proto in (TCP, SCTP) else UDP_STATE
        room = len(self.entries) + 2 <= self.buckets * wire.SESSION_WAYS
        if starts and not room:
            self._reap(now)
            room = len(self.entries) + 2 <= self.buckets * wire.SESSION_WAYS
        if starts and not room:     # a closed session makes room (csrc/lb.c free_slot)
            room = self._evict_closed()
        share = max(1, self.buckets * wire.SESSION_WAYS // 2 // wire.SOURCE_SHARE)
        if starts and room and self._source_sessions(src, now) >= share:
            self.c["source_limited"] += 1
            room = False
        elif starts and not room:
            self.c["table_full"] += 1
        if starts and room and self._find(rkey, now) is None and self._find(key, now) is None:
            self.entries[key] = _Entry(new_dst=pod, new_dport=new_dport,
                                       new_src=hsrc, new_sport=sport,
                                       forward=True, state=state, vip_id=vip_id, last_ms=now,
                                       partner=rkey)
            self.entries[rkey] = _Entry(new_dst=src if hairpin else None, new_dport=sport,
                                        new_src=dst, new_sport=dport, forward=False,
                                        state=state, vip_id=vip_id, last_ms=now, partner=key)
            self.c["created"] += 1
            vip.sessions += 1
            vip.pod_sessions[pi] += 1
        else:
            self.c["untracked"] += 1
            vip.untracked += 1
        return (pod, new_dport), ((hsrc, sport) if hairpin else None)

    def _source_sessions(self, src: bytes, now: int) -> int:
        """The client's live sessions that are not closing (the C table counts them per
        hashed slot, LB_E_COUNTED)."""
        return sum(1 for k, e in self.entries.items()
                   if e.forward and k[2] == src and e.state != CLOSING and self._live(e, now))

    def _evict_closed(self) -> bool:
        """End the oldest closed session (FIN or RST seen), if there is one."""
        closed = [(e.last_ms, k) for k, e in self.entries.items()
                  if e.forward and e.state == CLOSING]
        if not closed:
            return False
        key = min(closed)[1]
        self.entries.pop(self.entries[key].partner, None)
        del self.entries[key]
        return True

    def _reap(self, now: int) -> None:
        for key in [k for k, e in self.entries.items() if not self._live(e, now)]:
            del self.entries[key]

    # -- fragments and ICMP errors (csrc/lb.h, lb_icmp.c) -----------------------------------

    def remember_fragment(self, fkey: tuple, dst, src, vip_id: int) -> None:
        """A first fragment got translated to dst/src ((address, port) or None)."""
        self.frags.pop(fkey, None)
        self.frags[fkey] = (dst, src, vip_id, _now_ms())
        while len(self.frags) > FRAG_SLOTS:
            self.frags.popitem(last=False)

    def fragment(self, fkey: tuple) -> Optional[tuple]:
        """A later fragment: its first's translation (dst, src, vip id), or None."""
        f = self.frags.get(fkey)
        if f is None or _now_ms() - f[3] >= FRAG_TIMEOUT_MS:
            return None
        self.c["fragments"] += 1
        return f[:3]

    def lookup(self, key: Key) -> Optional[_Entry]:
        """The live entry of key (an ICMP error's quoted packet, reversed), or None."""
        return self._find(key, _now_ms()) if self.entries else None

    def count(self, vip_id: int, length: int) -> None:
        vip = self.vips.get(vip_id)
        if vip is not None:
            vip.packets += 1
            vip.bytes += length
