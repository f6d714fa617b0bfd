"""kp's in-switch load balancer on the wire: the one definition of the kp_lb action
and of the messages that program VIPs into kp-switch (see switch/FASTPATH.md).

kp_app builds each VIP's new-connection table and sends it, with the VIP's pods, to
the switch; the switch's C data path then makes and keeps the sessions itself: on a
VIP's first packet it hashes the 5-tuple (kp_proto.session_hash, the function kp_app's
model and Open vSwitch's multipath compute), takes that entry of the table, inserts the
session (and its reverse), DNATs and runs the packet through the tables again.  Later
packets of the session, both ways, are translated before the tables see them, as a
kernel's conntrack does before its NAT rules.

Standard library only.  All integers are network order.  Every decoder raises
ValueError with the reason for a message it refuses; the switch answers that with
OFPET_BAD_REQUEST / OFPBRC_BAD_LEN and changes nothing.

The action (OFPAT_EXPERIMENTER, 16 bytes): type 0xffff, len 16, experimenter
KP_EXPERIMENTER_ID, then `ACTION` below: u16 subtype KP_ACTION_LB, u16 0, u32 VIP id.
kp_lb ends the flow's instructions: the switch translates the packet and processes it
again from table 0 (once; a VIP the switch does not have drops the packet, counted).

Messages (OFPT_EXPERIMENTER, experimenter KP_EXPERIMENTER_ID, exp_type):
- KP_LB_CONF: u32 session buckets (a power of 2, at most MAX_SESSION_BUCKETS; a change
  empties the session table, as `ku conf buckets` always has), u32 idle timeouts in
  seconds: TCP established, TCP closing (after FIN or RST), TCP opening (SYN seen,
  nothing back yet), UDP and other protocols; then the hairpin source of IPv4 and of
  IPv6 sessions, 16 bytes each (IPv4 in the first four), all zeros for none: a pod that
  reaches itself through its VIP gets the request from that address (the node's, as
  kube-proxy masquerades hairpin traffic), or from the VIP's where there is none.
- KP_LB_TABLE: u32 VIP id, u32 offset, then u16 pod indexes: entries offset.. of the
  VIP's next table, staged until KP_LB_VIP.
- KP_LB_PODS: u32 VIP id, u32 offset, then POD records: pods offset.. of the VIP's next
  pod list, staged until KP_LB_VIP.
- KP_LB_VIP: `VIP` below: u32 VIP id, u8 IP version of its pods (4, 6), u8 0, u16 0,
  u32 table length, u32 hash basis (16 bits), u32 number of pods.  Commits what was
  staged for the VIP: the table must have exactly that many entries and every entry
  name one of the pods.  The VIP's new table takes effect at once and whole; sessions
  already made keep their pod.  A pod's port 0 keeps the packet's destination port.
  The VIP's own addresses and ports are not part of it: the flows with kp_lb say which
  packets are the VIP's, and a session's replies get back the address and port its
  first packet was sent to (ClusterIP and external IPs alike).
- KP_LB_VIP_DELETE: u32 VIP id.  Its sessions stay until they are idle, as a removed
  pod's do.
- KP_LB_FLUSH: u32 VIP id (ALL_VIPS: every VIP), u8 IP version (0: every pod of the
  VIP), u8 0, u16 pod port (0: any), 16 bytes pod address: ends those sessions now.
- KP_LB_SESSIONS_REQUEST: u32 most sessions wanted.  Answered by KP_LB_SESSIONS_REPLY
  (same xid): u32 sessions listed, u32 0, then per session a `SESSION` record: u8 IP
  protocol, u8 IP version, u8 state (SESSION_STATES), u8 0, u32 VIP id, u32 idle
  milliseconds, then client, VIP and pod as 16 bytes address + u16 port each, 2 bytes 0.
  At most MAX_SESSIONS_LISTED in one reply (a sample: the counts are the stats').
- KP_LB_STATS_REQUEST: u32 first VIP id.  Answered by KP_LB_STATS_REPLY (same xid):
  `STATS_HEAD` (u64 sessions now, u64 session table capacity, u64 sessions created,
  u64 untracked (table full), u64 dropped (no such VIP), u32 next VIP id to ask for
  (0: no more), u32 number of records), then per VIP a `STATS_VIP` record (u32 VIP id,
  u32 number of pods, u64 packets, u64 bytes, u64 sessions created, u64 untracked)
  followed by u64 sessions created per pod, in the order of the VIP's pod list.
"""
import array
import ipaddress
import struct
import sys
from typing import Dict, List, Optional, Sequence, Tuple


KP_LB_CONF = 4
KP_LB_TABLE = 5
KP_LB_PODS = 6
KP_LB_VIP = 7
KP_LB_VIP_DELETE = 8
KP_LB_FLUSH = 9
KP_LB_STATS_REQUEST = 10
KP_LB_STATS_REPLY = 11
KP_LB_SESSIONS_REQUEST = 12    # a reply's exp_type is its request's + 1
KP_LB_SESSIONS_REPLY = 13
# What a switch answers (the reply is the switch's).
MESSAGE_TYPES = frozenset((KP_LB_CONF, KP_LB_TABLE, KP_LB_PODS, KP_LB_VIP, KP_LB_VIP_DELETE,
                           KP_LB_FLUSH, KP_LB_STATS_REQUEST, KP_LB_SESSIONS_REQUEST))

KP_ACTION_LB = 1

MAX_VIPS = 1 << 16             # VIP ids 1..MAX_VIPS-1 (kp_app's cookies hold 16 bits)
MAX_PODS = 1 << 16             # a table entry is a u16 pod index
MAX_TABLE = 1 << 24            # entries in one VIP's table (kp_app's own limit too)
MAX_SESSION_BUCKETS = 1 << 22  # x 4 ways: 16 M sessions (2 entries each)
SESSION_WAYS = 4
# One client address holds at most 1/SOURCE_SHARE of the session table (at least one
# session): a flood of new 5-tuples from one source goes untracked past its share
# instead of filling the table for everybody.
SOURCE_SHARE = 4
ALL_VIPS = 0xFFFFFFFF
# Room for an experimenter message's data: 65,535 minus the OpenFlow and experimenter
# headers (16 bytes), rounded down so that records never straddle two messages.
MAX_DATA = 65_504

ACTION = struct.Struct("!HHI")
CONF = struct.Struct("!IIIII16s16s")
CHUNK = struct.Struct("!II")
POD = struct.Struct("!16sH2x")
VIP = struct.Struct("!IBBHIII")
VIP_DELETE = struct.Struct("!I")
FLUSH = struct.Struct("!IBBH16s")
STATS_REQUEST = struct.Struct("!I")
STATS_HEAD = struct.Struct("!QQQQQII")
STATS_VIP = struct.Struct("!IIQQQQ")
SESSIONS_HEAD = struct.Struct("!II")
SESSION = struct.Struct("!BBBxII16sH16sH16sH2x")
SESSION_STATES = ("established", "closing", "opening", "udp")   # csrc/lb.h enum lb_timeout
MAX_SESSIONS_LISTED = (MAX_DATA - SESSIONS_HEAD.size) // SESSION.size
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")

# Default idle timeouts (seconds), those of Linux conntrack where kube-proxy keeps them.
DEFAULT_TCP_ESTABLISHED = 86_400
DEFAULT_TCP_CLOSING = 120
DEFAULT_TCP_OPENING = 120
DEFAULT_UDP = 30


def _addr_bytes(version: int, address: str) -> bytes:
    packed = ipaddress.ip_address(address).packed
    if len(packed) != (4 if version == 4 else 16):
        raise ValueError("%s is not an IPv%d address" % (address, version))
    return packed.ljust(16, b"\0")


def _addr_str(version: int, raw: bytes) -> str:
    if version == 4:
        if any(raw[4:]):
            raise ValueError("IPv4 address with bytes after the first 4")
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


# -- the action -----------------------------------------------------------------------


def encode_lb_action(vip_id: int) -> bytes:
    """The data of the kp_lb experimenter action (after the experimenter id)."""
    if not 0 < vip_id < MAX_VIPS:
        raise ValueError("VIP id %d out of 1..%d" % (vip_id, MAX_VIPS - 1))
    return ACTION.pack(KP_ACTION_LB, 0, vip_id)


def decode_lb_action(data: bytes) -> int:
    """The VIP id of a kp_lb action's data; ValueError for anything else."""
    if len(data) != ACTION.size:
        raise ValueError("kp action: %d bytes of data, want %d" % (len(data), ACTION.size))
    subtype, pad, vip_id = ACTION.unpack(data)
    if subtype != KP_ACTION_LB:
        raise ValueError("kp action subtype %d unknown" % subtype)
    if pad or not 0 < vip_id < MAX_VIPS:
        raise ValueError("kp_lb: VIP id %d out of 1..%d" % (vip_id, MAX_VIPS - 1))
    return vip_id


# -- programming ----------------------------------------------------------------------


def encode_conf(buckets: int, tcp_established: int = DEFAULT_TCP_ESTABLISHED,
                tcp_closing: int = DEFAULT_TCP_CLOSING, tcp_opening: int = DEFAULT_TCP_OPENING,
                udp: int = DEFAULT_UDP, hairpin4: Optional[str] = None,
                hairpin6: Optional[str] = None) -> bytes:
    return CONF.pack(buckets, tcp_established, tcp_closing, tcp_opening, udp,
                     _hairpin(hairpin4, 4), _hairpin(hairpin6, 6))


def _hairpin(address: Optional[str], version: int) -> bytes:
    if address is None:
        return bytes(16)
    parsed = ipaddress.ip_address(address)
    if parsed.version != version or parsed.is_unspecified:
        raise ValueError("%s is not a hairpin source for IPv%d" % (address, version))
    return parsed.packed.ljust(16, b"\0")


def decode_conf(data: bytes) -> Dict[str, int]:
    if len(data) != CONF.size:
        raise ValueError("KP_LB_CONF: %d bytes of data, want %d" % (len(data), CONF.size))
    buckets, est, closing, opening, udp, hairpin4, hairpin6 = CONF.unpack(data)
    if buckets < 1 or buckets & (buckets - 1) or buckets > MAX_SESSION_BUCKETS:
        raise ValueError("KP_LB_CONF: %d buckets is not a power of 2 in 1..%d"
                         % (buckets, MAX_SESSION_BUCKETS))
    for name, value in (("TCP established", est), ("TCP closing", closing),
                        ("TCP opening", opening), ("UDP", udp)):
        if not 0 < value <= 10 * 86_400:
            raise ValueError("KP_LB_CONF: %s timeout %d s out of 1..864000" % (name, value))
    if any(hairpin4[4:]):
        raise ValueError("KP_LB_CONF: an IPv4 hairpin source of more than four bytes")
    return dict(buckets=buckets, tcp_established=est, tcp_closing=closing,
                tcp_opening=opening, udp=udp,
                hairpin4=hairpin4[:4] if any(hairpin4) else None,
                hairpin6=hairpin6 if any(hairpin6) else None)


def encode_table(table: Sequence[int]) -> bytes:
    """A table's entries as the wire has them: u16 pod indexes, big-endian."""
    try:
        entries = array.array("H", table)
    except OverflowError:
        raise ValueError("a table entry out of 0..65535") from None
    if sys.byteorder == "little":
        entries.byteswap()
    return entries.tobytes()


def encode_vip(vip_id: int, version: int, table: Sequence[int],
               pods: Sequence[Tuple[str, int]], basis: int) -> List[Tuple[int, bytes]]:
    """[(exp_type, data)]: the KP_LB_TABLE and KP_LB_PODS chunks, then KP_LB_VIP, that
    program one VIP.  `table` holds pod indexes into `pods` [(address, port)]."""
    if not 0 < vip_id < MAX_VIPS:
        raise ValueError("VIP id %d out of 1..%d" % (vip_id, MAX_VIPS - 1))
    if not pods or len(pods) > MAX_PODS:
        raise ValueError("%d pods, want 1..%d" % (len(pods), MAX_PODS))
    if not table or len(table) > MAX_TABLE:
        raise ValueError("a table of %d entries, want 1..%d" % (len(table), MAX_TABLE))
    msgs = []
    per = (MAX_DATA - CHUNK.size) // _U16.size
    raw = encode_table(table)
    for start in range(0, len(table), per):
        msgs.append((KP_LB_TABLE, CHUNK.pack(vip_id, start)
                     + raw[2 * start:2 * (start + per)]))
    per = (MAX_DATA - CHUNK.size) // POD.size
    records = [POD.pack(_addr_bytes(version, a), p) for a, p in pods]
    for start in range(0, len(records), per):
        msgs.append((KP_LB_PODS, CHUNK.pack(vip_id, start) + b"".join(records[start:start + per])))
    msgs.append((KP_LB_VIP, VIP.pack(vip_id, version, 0, 0, len(table), basis, len(pods))))
    return msgs


def decode_chunk(data: bytes, record: int) -> Tuple[int, int, bytes]:
    """(VIP id, offset, records) of a KP_LB_TABLE (record 2) or KP_LB_PODS (record
    POD.size) message."""
    if len(data) < CHUNK.size or (len(data) - CHUNK.size) % record:
        raise ValueError("chunk of %d bytes: want 8 + a multiple of %d" % (len(data), record))
    vip_id, offset = CHUNK.unpack_from(data)
    if not 0 < vip_id < MAX_VIPS:
        raise ValueError("VIP id %d out of 1..%d" % (vip_id, MAX_VIPS - 1))
    return vip_id, offset, data[CHUNK.size:]


def decode_pods(version: int, raw: bytes) -> List[Tuple[str, int]]:
    return [(_addr_str(version, a), p) for a, p in POD.iter_unpack(raw)]


def decode_vip(data: bytes) -> Dict[str, object]:
    if len(data) != VIP.size:
        raise ValueError("KP_LB_VIP: %d bytes of data, want %d" % (len(data), VIP.size))
    vip_id, version, pad, pad2, new_len, basis, n_pods = VIP.unpack(data)
    if not 0 < vip_id < MAX_VIPS:
        raise ValueError("KP_LB_VIP: VIP id %d out of 1..%d" % (vip_id, MAX_VIPS - 1))
    if version not in (4, 6) or pad or pad2:
        raise ValueError("KP_LB_VIP: IP version %d" % version)
    if not 0 < new_len <= MAX_TABLE or not 0 < n_pods <= MAX_PODS:
        raise ValueError("KP_LB_VIP: %d entries, %d pods" % (new_len, n_pods))
    if basis > 0xFFFF:
        raise ValueError("KP_LB_VIP: hash basis %d is over 16 bits" % basis)
    return dict(vip_id=vip_id, version=version, new_len=new_len, basis=basis, n_pods=n_pods)


def encode_vip_delete(vip_id: int) -> bytes:
    return VIP_DELETE.pack(vip_id)


def decode_vip_delete(data: bytes) -> int:
    if len(data) != VIP_DELETE.size:
        raise ValueError("KP_LB_VIP_DELETE: %d bytes of data, want 4" % len(data))
    (vip_id,) = VIP_DELETE.unpack(data)
    if not 0 < vip_id < MAX_VIPS:
        raise ValueError("KP_LB_VIP_DELETE: VIP id %d out of 1..%d" % (vip_id, MAX_VIPS - 1))
    return vip_id


def encode_flush(vip_id: int, pod: Optional[Tuple[str, int]] = None) -> bytes:
    """End the sessions of a VIP (ALL_VIPS: of every VIP), or only those to `pod`
    (address, port; port 0: any)."""
    if pod is None:
        return FLUSH.pack(vip_id, 0, 0, 0, bytes(16))
    version = ipaddress.ip_address(pod[0]).version
    return FLUSH.pack(vip_id, version, 0, pod[1], _addr_bytes(version, pod[0]))


def decode_flush(data: bytes) -> Dict[str, object]:
    if len(data) != FLUSH.size:
        raise ValueError("KP_LB_FLUSH: %d bytes of data, want %d" % (len(data), FLUSH.size))
    vip_id, version, pad, port, raw = FLUSH.unpack(data)
    if vip_id != ALL_VIPS and not 0 < vip_id < MAX_VIPS:
        raise ValueError("KP_LB_FLUSH: VIP id %d" % vip_id)
    if version not in (0, 4, 6) or pad:
        raise ValueError("KP_LB_FLUSH: IP version %d" % version)
    pod = None if version == 0 else (_addr_str(version, raw), port)
    return dict(vip_id=vip_id, pod=pod)


# -- statistics -----------------------------------------------------------------------


def encode_stats_request(first_vip_id: int = 0) -> bytes:
    return STATS_REQUEST.pack(first_vip_id)


def decode_stats_request(data: bytes) -> int:
    if len(data) != STATS_REQUEST.size:
        raise ValueError("KP_LB_STATS_REQUEST: %d bytes of data, want 4" % len(data))
    return STATS_REQUEST.unpack(data)[0]


def encode_stats_reply(totals: Dict[str, int], vips: Sequence[Dict[str, object]],
                       first_vip_id: int = 0) -> bytes:
    """One reply: the totals, then as many VIPs (sorted by id, from first_vip_id) as
    fit in one message; the head says where the next request starts."""
    out, size, next_id, n = [], STATS_HEAD.size, 0, 0
    for v in sorted(vips, key=lambda v: v["vip_id"]):
        if v["vip_id"] < first_vip_id:
            continue
        pods = v.get("pods", ())
        rec = STATS_VIP.pack(v["vip_id"], len(pods), v["packets"], v["bytes"], v["sessions"],
                             v["untracked"]) + b"".join(_U64.pack(p) for p in pods)
        if size + len(rec) > MAX_DATA:
            next_id = v["vip_id"]
            break
        out.append(rec)
        size += len(rec)
        n += 1
    head = STATS_HEAD.pack(totals["sessions"], totals["capacity"], totals["created"],
                           totals["untracked"], totals["dropped"], next_id, n)
    return head + b"".join(out)


def decode_stats_reply(data: bytes) -> Tuple[Dict[str, int], List[Dict[str, object]], int]:
    """(totals, [VIP records with "pods": [sessions created per pod]], next VIP id)."""
    if len(data) < STATS_HEAD.size:
        raise ValueError("KP_LB_STATS_REPLY: %d bytes" % len(data))
    sessions, capacity, created, untracked, dropped, next_id, n = STATS_HEAD.unpack_from(data)
    totals = dict(sessions=sessions, capacity=capacity, created=created, untracked=untracked,
                  dropped=dropped)
    at, vips = STATS_HEAD.size, []
    for _ in range(n):
        if at + STATS_VIP.size > len(data):
            raise ValueError("KP_LB_STATS_REPLY: cut short")
        vip_id, n_pods, packets, nbytes, created, untracked = STATS_VIP.unpack_from(data, at)
        at += STATS_VIP.size
        if at + 8 * n_pods > len(data):
            raise ValueError("KP_LB_STATS_REPLY: cut short")
        pods = list(struct.unpack_from("!%dQ" % n_pods, data, at))
        at += 8 * n_pods
        vips.append(dict(vip_id=vip_id, packets=packets, bytes=nbytes, sessions=created,
                         untracked=untracked, pods=pods))
    return totals, vips, next_id



# -- the session list -----------------------------------------------------------------


def encode_sessions_request(most: int = MAX_SESSIONS_LISTED) -> bytes:
    return STATS_REQUEST.pack(most)


def decode_sessions_request(data: bytes) -> int:
    if len(data) != STATS_REQUEST.size:
        raise ValueError("KP_LB_SESSIONS_REQUEST: %d bytes of data, want 4" % len(data))
    return min(STATS_REQUEST.unpack(data)[0], MAX_SESSIONS_LISTED)


def encode_sessions_reply(sessions: Sequence[Dict[str, object]]) -> bytes:
    """sessions: dicts with proto, version, state (a SESSION_STATES name), vip_id,
    idle_ms, and client, vip, pod as (address, port)."""
    out = [SESSIONS_HEAD.pack(min(len(sessions), MAX_SESSIONS_LISTED), 0)]
    for s in sessions[:MAX_SESSIONS_LISTED]:
        v = int(s["version"])
        out.append(SESSION.pack(s["proto"], v, SESSION_STATES.index(s["state"]), s["vip_id"],
                                min(int(s["idle_ms"]), 0xFFFFFFFF),
                                _addr_bytes(v, s["client"][0]), s["client"][1],
                                _addr_bytes(v, s["vip"][0]), s["vip"][1],
                                _addr_bytes(v, s["pod"][0]), s["pod"][1]))
    return b"".join(out)


def decode_sessions_reply(data: bytes) -> List[Dict[str, object]]:
    if len(data) < SESSIONS_HEAD.size:
        raise ValueError("KP_LB_SESSIONS_REPLY: %d bytes" % len(data))
    n, _ = SESSIONS_HEAD.unpack_from(data)
    if len(data) != SESSIONS_HEAD.size + n * SESSION.size:
        raise ValueError("KP_LB_SESSIONS_REPLY: %d bytes for %d sessions" % (len(data), n))
    out = []
    for rec in SESSION.iter_unpack(data[SESSIONS_HEAD.size:]):
        proto, v, state, vip_id, idle, client, cport, vip, vport, pod, pport = rec
        if v not in (4, 6) or state >= len(SESSION_STATES):
            raise ValueError("KP_LB_SESSIONS_REPLY: version %d, state %d" % (v, state))
        out.append(dict(proto=proto, version=v, state=SESSION_STATES[state], vip_id=vip_id,
                        idle_ms=idle, client=(_addr_str(v, client), cport),
                        vip=(_addr_str(v, vip), vport), pod=(_addr_str(v, pod), pport)))
    return out
