"""Just enough packet parsing and building for the controller's own conversations.

kp_app reads packet-ins (ARP, neighbour discovery, the first packet of a session) and
writes ARP/ND answers and refusals (TCP RST, ICMP port unreachable, which UDP and SCTP get, as kube-proxy's
REJECT gives). It must work with
any OpenFlow switch, so it carries this small codec instead of depending on one.
Every read is bounds-checked; a frame that is too short parses as far as it is whole.
"""
import functools
import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass
from typing import Optional, Tuple, Union

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

ETH_IPV4, ETH_ARP, ETH_VLAN, ETH_IPV6 = 0x0800, 0x0806, 0x8100, 0x86DD
TCP, UDP, ICMP, ICMPV6, SCTP = 6, 17, 1, 58, 132
# The smallest header of each protocol with ports: where its ports are whole.
_PORTED_HEADER = {TCP: 20, UDP: 8, SCTP: 12}
ND_NS, ND_NA = 135, 136
BROADCAST = "ff:ff:ff:ff:ff:ff"
TCP_RST, TCP_ACK, TCP_SYN = 0x04, 0x10, 0x02


@functools.lru_cache(maxsize=4096)     # (a node's own MAC, mostly: in every frame it makes)
def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass
class Frame:
    eth_dst: str
    eth_src: str
    eth_type: int
    raw: bytes
    l3: int = 14
    l3_end: int = -1          # the end of the IP datagram (its own length): padding after
    arp_op: int = 0
    arp_sha: str = ""
    arp_spa: Optional[ipaddress.IPv4Address] = None
    arp_tpa: Optional[ipaddress.IPv4Address] = None
    ip_src: Optional[Address] = None
    ip_dst: Optional[Address] = None
    ip_proto: int = -1
    l4: int = -1
    src_port: int = 0
    dst_port: int = 0
    tcp_flags: int = 0
    tcp_seq: int = 0
    tcp_ack: int = 0
    icmp_type: int = -1
    nd_target: Optional[ipaddress.IPv6Address] = None
    nd_lladdr: str = ""

    @property
    def is_arp(self) -> bool:
        return self.eth_type == ETH_ARP and self.arp_op in (1, 2)

    @property
    def is_nd(self) -> bool:
        return self.ip_proto == ICMPV6 and self.icmp_type in (ND_NS, ND_NA)

    @property
    def has_ports(self) -> bool:
        return self.ip_proto in _PORTED_HEADER and self.l4 >= 0

    @property
    def datagram_end(self) -> int:
        """Where the IP datagram ends: its length field says, not the frame, whose
        Ethernet padding (a short frame is padded to 60 bytes) is no part of it."""
        return self.l3_end if self.l3_end >= 0 else len(self.raw)

    def l4_payload_len(self) -> int:
        end = self.datagram_end
        if self.ip_proto == TCP and self.l4 + 13 <= end:
            return max(0, end - self.l4 - (self.raw[self.l4 + 12] >> 4) * 4)
        return 0


def parse(raw: bytes) -> Optional[Frame]:
    if len(raw) < 14:
        return None
    eth_type = struct.unpack_from("!H", raw, 12)[0]
    frame = Frame(mac_str(raw[0:6]), mac_str(raw[6:12]), eth_type, raw)
    if eth_type == ETH_VLAN and len(raw) >= 18:
        frame.eth_type = struct.unpack_from("!H", raw, 16)[0]
        frame.l3 = 18
    off = frame.l3
    if frame.eth_type == ETH_ARP and len(raw) >= off + 28:
        htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", raw, off)
        if htype == 1 and ptype == ETH_IPV4 and hlen == 6 and plen == 4:
            frame.arp_op = op
            frame.arp_sha = mac_str(raw[off + 8:off + 14])
            frame.arp_spa = ipaddress.IPv4Address(raw[off + 14:off + 18])
            frame.arp_tpa = ipaddress.IPv4Address(raw[off + 24:off + 28])
    elif frame.eth_type == ETH_IPV4 and len(raw) >= off + 20:
        ihl = (raw[off] & 0x0F) * 4
        if raw[off] >> 4 != 4 or ihl < 20 or len(raw) < off + ihl:
            return frame
        frame.ip_proto = raw[off + 9]
        frame.l3_end = min(len(raw), off + max(ihl, struct.unpack_from("!H", raw, off + 2)[0]))
        frame.ip_src = ipaddress.IPv4Address(raw[off + 12:off + 16])
        frame.ip_dst = ipaddress.IPv4Address(raw[off + 16:off + 20])
        fragment_offset = struct.unpack_from("!H", raw, off + 6)[0] & 0x1FFF
        if fragment_offset == 0:
            _parse_l4(frame, off + ihl)
    elif frame.eth_type == ETH_IPV6 and len(raw) >= off + 40:
        frame.ip_proto = raw[off + 6]
        frame.l3_end = min(len(raw), off + 40 + struct.unpack_from("!H", raw, off + 4)[0])
        frame.ip_src = ipaddress.IPv6Address(raw[off + 8:off + 24])
        frame.ip_dst = ipaddress.IPv6Address(raw[off + 24:off + 40])
        _parse_l4(frame, off + 40)
    return frame


def _parse_l4(frame: Frame, off: int) -> None:
    raw = frame.raw
    if frame.ip_proto in _PORTED_HEADER and len(raw) >= off + _PORTED_HEADER[frame.ip_proto]:
        frame.l4 = off
        frame.src_port, frame.dst_port = struct.unpack_from("!HH", raw, off)
        if frame.ip_proto == TCP:
            frame.tcp_seq, frame.tcp_ack = struct.unpack_from("!II", raw, off + 4)
            frame.tcp_flags = raw[off + 13]
    elif frame.ip_proto == ICMPV6 and len(raw) >= off + 4:
        frame.l4 = off
        frame.icmp_type = raw[off]
        if frame.icmp_type in (ND_NS, ND_NA) and len(raw) >= off + 24:
            frame.nd_target = ipaddress.IPv6Address(raw[off + 8:off + 24])
            opt = off + 24
            while opt + 8 <= len(raw):
                kind, length = raw[opt], raw[opt + 1] * 8
                if length == 0 or opt + length > len(raw):
                    break
                if kind in (1, 2) and length >= 8:
                    frame.nd_lladdr = mac_str(raw[opt + 2:opt + 8])
                opt += length
    elif frame.ip_proto == ICMP and len(raw) >= off + 4:
        frame.l4 = off
        frame.icmp_type = raw[off]


# -- building -----------------------------------------------------------------------

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _eth(dst: str, src: str, eth_type: int) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", eth_type)


def _ipv4(src, dst, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, ttl,
                         proto, 0, src.packed, dst.packed)
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + payload


def _pseudo(src, dst, proto: int, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, proto, length)
    return src.packed + dst.packed + struct.pack("!IxxxB", length, proto)


def _ipv6(src, dst, proto: int, payload: bytes, hop_limit: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, hop_limit,
                       src.packed, dst.packed) + payload


def _with_l4_checksum(src, dst, proto: int, segment: bytes, at: int) -> bytes:
    csum = _checksum(_pseudo(src, dst, proto, len(segment)) + segment)
    return segment[:at] + struct.pack("!H", csum) + segment[at + 2:]


def arp(op: int, src_mac: str, src_ip, dst_mac: str, dst_ip, eth_dst: str = None) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_IPV4, 6, 4, op, mac_bytes(src_mac),
                       _ipv4_packed(src_ip), mac_bytes(dst_mac), _ipv4_packed(dst_ip))
    return _eth(eth_dst or dst_mac, src_mac, ETH_ARP) + body


def _ipv4_packed(address) -> bytes:
    if isinstance(address, ipaddress.IPv4Address):
        return address.packed
    return ipaddress.IPv4Address(address).packed


def arp_reply(request: Frame, mac: str) -> bytes:
    """`mac` answers for request.arp_tpa."""
    return arp(2, mac, request.arp_tpa, request.arp_sha, request.arp_spa,
               eth_dst=request.eth_src)


def arp_request(src_mac: str, src_ip, target) -> bytes:
    src_ip = src_ip if src_ip is not None else ipaddress.IPv4Address(0)
    return arp(1, src_mac, src_ip, "00:00:00:00:00:00", target, eth_dst=BROADCAST)


def link_local(mac: str) -> ipaddress.IPv6Address:
    raw = bytearray(mac_bytes(mac))
    raw[0] ^= 0x02
    return ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + bytes(raw[:3]) + b"\xff\xfe"
                                 + bytes(raw[3:]))


def neighbor_advert(solicit: Frame, mac: str) -> bytes:
    """`mac` answers a neighbour solicitation for solicit.nd_target."""
    target = solicit.nd_target
    dst_ip = solicit.ip_src
    if dst_ip.is_unspecified:  # DAD probe: answer to all nodes
        dst_ip, dst_mac = ipaddress.IPv6Address("ff02::1"), "33:33:00:00:00:01"
        flags = 0x20000000
    else:
        dst_mac = solicit.eth_src
        flags = 0x60000000  # solicited, override
    icmp = struct.pack("!BBHI16sBB6s", ND_NA, 0, 0, flags, target.packed, 2, 1,
                       mac_bytes(mac))
    icmp = _with_l4_checksum(target, dst_ip, ICMPV6, icmp, 2)
    return _eth(dst_mac, mac, ETH_IPV6) + _ipv6(target, dst_ip, ICMPV6, icmp, 255)


def neighbor_solicit(src_mac: str, src_ip, target: ipaddress.IPv6Address) -> bytes:
    src_ip = src_ip if src_ip is not None else link_local(src_mac)
    group = ipaddress.IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + target.packed[13:])
    group_mac = "33:33:" + mac_str(group.packed[12:])
    icmp = struct.pack("!BBHI16sBB6s", ND_NS, 0, 0, 0, target.packed, 1, 1, mac_bytes(src_mac))
    icmp = _with_l4_checksum(src_ip, group, ICMPV6, icmp, 2)
    return _eth(group_mac, src_mac, ETH_IPV6) + _ipv6(src_ip, group, ICMPV6, icmp, 255)


def tcp_reset(to: Frame, mac: str) -> bytes:
    """The RST a closed port sends in answer to `to` (RFC 793, 'reset generation')."""
    src, dst = to.ip_dst, to.ip_src
    if to.tcp_flags & TCP_ACK:
        seq, ack, flags = to.tcp_ack, 0, TCP_RST
    else:
        length = to.l4_payload_len() + (1 if to.tcp_flags & TCP_SYN else 0) + (
            1 if to.tcp_flags & 0x01 else 0)
        seq, ack, flags = 0, (to.tcp_seq + length) & 0xFFFFFFFF, TCP_RST | TCP_ACK
    segment = struct.pack("!HHIIBBHHH", to.dst_port, to.src_port, seq, ack, 5 << 4, flags,
                          0, 0, 0)
    segment = _with_l4_checksum(src, dst, TCP, segment, 16)
    return _l3_frame(to.eth_src, mac, src, dst, TCP, segment)


def port_unreachable(to: Frame, mac: str) -> bytes:
    """ICMP (v4 type 3 code 3, v6 type 1 code 4) quoting the offending datagram."""
    src, dst = to.ip_dst, to.ip_src
    quoted = to.raw[to.l3:min(to.datagram_end, to.l3 + (548 if src.version == 4 else 1232))]
    if src.version == 4:
        icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
        icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
        return _l3_frame(to.eth_src, mac, src, dst, ICMP, icmp)
    icmp = _with_l4_checksum(src, dst, ICMPV6, struct.pack("!BBHI", 1, 4, 0, 0) + quoted, 2)
    return _l3_frame(to.eth_src, mac, src, dst, ICMPV6, icmp)


def _l3_frame(eth_dst: str, eth_src: str, src, dst, proto: int, payload: bytes) -> bytes:
    if src.version == 4:
        return _eth(eth_dst, eth_src, ETH_IPV4) + _ipv4(src, dst, proto, payload)
    return _eth(eth_dst, eth_src, ETH_IPV6) + _ipv6(src, dst, proto, payload)


def echo_reply(request: Frame, mac: str) -> bytes:
    """The answer to an ICMP / ICMPv6 echo request sent to one of the node's addresses."""
    src, dst = request.ip_dst, request.ip_src
    body = bytearray(request.raw[request.l4:])
    if src.version == 4:
        body[0], body[2:4] = 0, b"\0\0"
        body[2:4] = struct.pack("!H", _checksum(bytes(body)))
        return _l3_frame(request.eth_src, mac, src, dst, ICMP, bytes(body))
    body[0], body[2:4] = 129, b"\0\0"
    return _l3_frame(request.eth_src, mac, src, dst, ICMPV6,
                     _with_l4_checksum(src, dst, ICMPV6, bytes(body), 2))


# -- link probes (kp's own LLDP: which switch port faces which) -------------------------
#
# magic (8) | dpid (8) | port (4) | timestamp, ms of the controller's clock (8) | tag (16)
# The tag is HMAC-SHA256 over everything before it, under the controller's own secret
# (kp_app.links: os.urandom at start), truncated to 16 bytes: only that controller makes
# probes it takes, and the timestamp lets it refuse an old one sent again.

LINK_PROBE_ETHERTYPE = 0x88B5
LINK_PROBE_DST = "01:6b:70:00:00:0e"
_PROBE_MAGIC = b"kp-link\0"
_PROBE_BODY = struct.Struct("!QIQ")
LINK_PROBE_TAG_BYTES = 16
_PROBE_LEN = 14 + len(_PROBE_MAGIC) + _PROBE_BODY.size + LINK_PROBE_TAG_BYTES


def _probe_tag(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, signed, hashlib.sha256).digest()[:LINK_PROBE_TAG_BYTES]


def link_probe(src_mac: str, dpid: int, port: int, key: bytes, now: float) -> bytes:
    """A probe out of `port` of switch `dpid`, signed with `key` at time `now` (s)."""
    signed = _PROBE_MAGIC + _PROBE_BODY.pack(dpid, port, max(0, int(now * 1000)))
    return _eth(LINK_PROBE_DST, src_mac, LINK_PROBE_ETHERTYPE) + signed + _probe_tag(key, signed)


def is_link_probe(raw: bytes) -> bool:
    """Of the probes' EtherType: kp's business, never a host's traffic (valid or not)."""
    return len(raw) >= 14 and struct.unpack_from("!H", raw, 12)[0] == LINK_PROBE_ETHERTYPE


def parse_link_probe(raw: bytes, key: bytes) -> Optional[Tuple[int, int, float]]:
    """(dpid, port, sent at, s) of a probe `key` signed, or None: not a probe, or a
    forged or altered one (the tag is compared in constant time)."""
    if (len(raw) < _PROBE_LEN or not is_link_probe(raw)
            or raw[14:14 + len(_PROBE_MAGIC)] != _PROBE_MAGIC):
        return None
    signed = raw[14:_PROBE_LEN - LINK_PROBE_TAG_BYTES]
    if not hmac.compare_digest(_probe_tag(key, signed),
                               raw[_PROBE_LEN - LINK_PROBE_TAG_BYTES:_PROBE_LEN]):
        return None
    dpid, port, millis = _PROBE_BODY.unpack_from(raw, 14 + len(_PROBE_MAGIC))
    return dpid, port, millis / 1000.0
