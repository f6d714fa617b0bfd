"""SCTP as both data planes see it: its checksum and the chunks that start and end a session.

SCTP (RFC 9260) has no pseudo-header: its checksum is a CRC32c (Castagnoli) over the
whole SCTP packet (common header with the checksum field taken as zero, then every
chunk), so a NAT of the IP addresses leaves it valid and a rewrite of a port needs it
computed again. A CRC is linear, not a ones'-complement sum, so RFC 1624's incremental
update does not apply. The result is stored in the common header least significant
byte first (RFC 9260 appendix A; Linux's sctp_compute_cksum stores cpu_to_le32).

A rewrite keeps a checksum that was wrong on arrival wrong by the same difference
(as Open vSwitch's packet_set_sctp_port does): stored' = stored ^ crc(before) ^ crc(after),
so a rewriting switch never turns a corrupt packet into a valid one.

Sessions (kp-switch's, csrc/lb.c and its twin lb_ref.py): an INIT chunk starts one, as a
TCP SYN does; ABORT, SHUTDOWN, SHUTDOWN ACK and SHUTDOWN COMPLETE move it to closing
(the short closing timeout, so a retransmitted SHUTDOWN COMPLETE still finds its
translation). `chunk_summary` is the twin of lb.c's sctp_summary.

csrc/crc32c.c is the C twin of `crc32c`.
"""
from typing import List

PROTO = 132
COMMON_HEADER = 12          # ports (2 x 2), verification tag (4), checksum (4)
CHECKSUM_OFFSET = 8
CHUNK_INIT, CHUNK_INIT_ACK, CHUNK_ABORT = 1, 2, 6
CHUNK_SHUTDOWN, CHUNK_SHUTDOWN_ACK, CHUNK_SHUTDOWN_COMPLETE = 7, 8, 14
MAX_CHUNKS_SEEN = 16        # chunks looked at per packet (a bound on the per-packet walk)

# chunk_summary bits (csrc/lb.c SCTP_*).
STARTS = 1                  # the first chunk is an INIT with verification tag 0
CLOSES = 2                  # an ABORT or a SHUTDOWN* chunk among the first chunks

_POLY = 0x82F63B78          # CRC32c, bit-reflected


def _table() -> List[int]:
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        out.append(c)
    return out


_TABLE = _table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32c of data (continuing from crc, a previous result)."""
    c = crc ^ 0xFFFFFFFF
    t = _TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def packet_crc(sctp: bytes) -> int:
    """The checksum an SCTP packet (common header and chunks) should carry: the CRC32c
    with the checksum field taken as zero."""
    return crc32c(bytes(sctp[CHECKSUM_OFFSET + 4:]),
                  crc32c(b"\0\0\0\0", crc32c(bytes(sctp[:CHECKSUM_OFFSET]))))


def stored_crc(sctp: bytes) -> int:
    return int.from_bytes(sctp[CHECKSUM_OFFSET:CHECKSUM_OFFSET + 4], "little")


def chunk_summary(sctp: bytes) -> int:
    """STARTS / CLOSES of an SCTP packet (common header and chunks, no padding after).
    A chunk cut short ends the walk."""
    out, off, n = 0, COMMON_HEADER, 0
    while n < MAX_CHUNKS_SEEN and len(sctp) - off >= 4:
        ctype = sctp[off]
        clen = int.from_bytes(sctp[off + 2:off + 4], "big")
        if n == 0 and ctype == CHUNK_INIT and not any(sctp[4:8]):
            out |= STARTS
        if ctype in (CHUNK_ABORT, CHUNK_SHUTDOWN, CHUNK_SHUTDOWN_ACK, CHUNK_SHUTDOWN_COMPLETE):
            out |= CLOSES
        if clen < 4:
            break
        off += (clen + 3) & ~3
        n += 1
    return out
