"""The megaflow tier of the flow cache (`_CacheForTest`, explicit time), C and twin:
masked entries answer every key equal on the mask, a hit copies the exact key into the
exact tier, invalidation covers them, the counters do not overlap, bad masks are
refused; the 64-bit epochs across a forced wrap of their low 32 bits (issue #13); and
C against the twin on random operation sequences with masks."""
from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import IMPLS
from kp_switch import fastpath_ref as ref
from kp_switch.megaflow import IN_PORT_MASK, mask_blob

C = IMPLS.get("c")
IDLE = ref.CACHE_IDLE_MS
OUT2 = [("output", 2)]


def csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_frame(src="10.0.0.1", dst="10.96.0.10", proto=17, sport=1234, dport=80,
               tos=0, vlan=None) -> bytes:
    l4 = struct.pack("!HHHH", sport, dport, 8, 0) if proto == 17 else \
        struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x10, 1000, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(l4), 1, 0, 64, proto, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = bytes.fromhex("020000000002020000000001")
    if vlan is not None:
        eth += struct.pack("!HH", 0x8100, vlan)
    return eth + b"\x08\x00" + ip + l4


def ipv6_frame(src="fd00::1", dst="fd00:96::10", sport=1234, dport=80) -> bytes:
    l4 = struct.pack("!HHHH", sport, dport, 8, 0)
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(l4), 17, 64,
                     ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed)
    return bytes.fromhex("020000000002020000000001") + b"\x86\xdd" + ip + l4


def blob(fp, frame: bytes, in_port: int = 1) -> bytes:
    return fp.parse_blob(frame, in_port)[1]


# The megaflow of a "udp to VIP:80 from anywhere" flow: in_port, eth_type, ip_proto,
# ipv4_dst and udp_dst looked at.
VIP_MASK = mask_blob({"in_port": IN_PORT_MASK, "eth_type": 0xFFFF, "ip_proto": 0xFF,
                      "ipv4_dst": 0xFFFFFFFF, "udp_dst": 0xFFFF})


def counts(c):
    s = c.stats()
    return s["hits"], s["mf_hits"], s["misses"]


def test_megaflow_answers_other_keys_and_copies_them_into_the_exact_tier(fp):
    c = fp._CacheForTest(64)
    assert c.insert(blob(fp, ipv4_frame(sport=1000)), OUT2, [5], 0, VIP_MASK)
    s = c.stats()
    assert (s["inserts"], s["mf_inserts"], s["entries"], s["mf_entries"], s["mf_subtables"]) \
        == (1, 1, 1, 1, 1)
    other = blob(fp, ipv4_frame(src="10.0.7.7", sport=2000))
    assert c.lookup(other, 1) == (OUT2, [5])          # the megaflow
    assert counts(c) == (0, 1, 0)
    assert c.stats()["entries"] == 2                  # ... copied into the exact tier
    assert c.lookup(other, 2) == (OUT2, [5])          # now an exact hit
    assert counts(c) == (1, 1, 0)
    # Not equal on the mask: another destination port, address, protocol or in_port.
    for miss in (ipv4_frame(dport=81), ipv4_frame(dst="10.96.0.11"),
                 ipv4_frame(proto=6, sport=1000)):
        assert c.lookup(blob(fp, miss), 3) is None
    assert c.lookup(blob(fp, ipv4_frame(sport=1000), in_port=2), 3) is None
    assert counts(c) == (1, 1, 4)                     # one counter per lookup


def test_which_headers_a_packet_has_is_always_matched(fp):
    """A mask that looks only at in_port still keeps UDP, TCP, IPv6 and tagged packets
    apart: `present` is part of every megaflow."""
    c = fp._CacheForTest(64)
    only_port = mask_blob({"in_port": IN_PORT_MASK})
    assert c.insert(blob(fp, ipv4_frame()), OUT2, [1], 0, only_port)
    assert c.lookup(blob(fp, ipv4_frame(src="10.9.9.9", dport=9)), 1) == (OUT2, [1])
    for other in (ipv4_frame(proto=6), ipv6_frame(), ipv4_frame(vlan=5)):
        assert c.lookup(blob(fp, other), 1) is None


def test_ipv6_prefix_megaflow(fp):
    c = fp._CacheForTest(64)
    mask = mask_blob({"in_port": IN_PORT_MASK, "eth_type": 0xFFFF,
                      "ipv6_dst": int(ipaddress.IPv6Address("ffff:ffff:ffff:ffff::"))})
    assert c.insert(blob(fp, ipv6_frame()), OUT2, [3], 0, mask)
    assert c.lookup(blob(fp, ipv6_frame(src="fd00::99", dst="fd00:96::abcd")), 1) == (OUT2, [3])
    assert c.lookup(blob(fp, ipv6_frame(dst="fd00:97::10")), 1) is None


def test_invalidation_covers_megaflows_and_their_exact_copies(fp):
    c = fp._CacheForTest(64)
    a, b = blob(fp, ipv4_frame(sport=1)), blob(fp, ipv4_frame(sport=2))
    c.insert(a, OUT2, [5, 6], 0, VIP_MASK)
    assert c.lookup(b, 1) == (OUT2, [5, 6])           # b copied into the exact tier
    c.invalidate_flow(7)                              # another id: nothing changes
    assert c.lookup(b, 2) and c.lookup(blob(fp, ipv4_frame(sport=3)), 2)
    c.invalidate_flow(6)
    for k in (a, b, blob(fp, ipv4_frame(sport=4))):
        assert c.lookup(k, 3) is None
    c.insert(a, OUT2, [8], 4, VIP_MASK)               # a fresh answer goes in again
    assert c.lookup(b, 5) == (OUT2, [8])
    c.invalidate_all()
    assert c.lookup(b, 6) is None and c.lookup(blob(fp, ipv4_frame(sport=9)), 6) is None


def test_megaflows_expire_when_idle(fp):
    c = fp._CacheForTest(64)
    c.insert(blob(fp, ipv4_frame(sport=1)), OUT2, [1], 0, VIP_MASK)
    assert c.lookup(blob(fp, ipv4_frame(sport=2)), IDLE) is not None    # refreshed
    assert c.lookup(blob(fp, ipv4_frame(sport=3)), 2 * IDLE) is not None
    assert c.lookup(blob(fp, ipv4_frame(sport=4)), 3 * IDLE + 1) is None


def test_subtables_are_bounded_and_released(fp):
    """One subtable per distinct mask, at most MF_SUBTABLES; when a subtable's entries
    are all dead and reaped, its place is free for another mask."""
    c = fp._CacheForTest(64)
    k = blob(fp, ipv4_frame())
    prefixes = [0xFFFFFFFF ^ ((1 << (32 - n)) - 1) for n in range(1, 33)]
    masks = [mask_blob({"in_port": IN_PORT_MASK, "ipv4_src": p}) for p in prefixes]
    masks.append(mask_blob({"in_port": IN_PORT_MASK, "udp_dst": 0xFFFF}))
    assert len(masks) == fp.MF_SUBTABLES + 1
    for i, m in enumerate(masks[:-1]):
        assert c.insert(k, OUT2, [i], 0, m)
    s = c.stats()
    assert (s["mf_subtables"], s["mf_entries"], s["mf_insert_failures"]) == \
        (fp.MF_SUBTABLES, fp.MF_SUBTABLES, 0)
    assert c.insert(k, OUT2, [99], 0, masks[-1])      # the exact entry still goes in
    s = c.stats()
    assert (s["mf_subtables"], s["mf_insert_failures"]) == (fp.MF_SUBTABLES, 1)
    c.invalidate_all()
    for _ in range(fp.MF_BUCKETS // fp.MF_SWEEP_BUCKETS + 1):    # the inserts' sweeps
        c.insert(k, OUT2, [1], 1, masks[0])
    s = c.stats()
    assert (s["mf_subtables"], s["mf_entries"]) == (1, 1)
    assert c.lookup(blob(fp, ipv4_frame(src="10.1.1.1")), 2) == (OUT2, [1])


@pytest.mark.parametrize("bad", [
    b"\0" * 99,                                       # wrong size
    bytes(22) + b"\xff\xff" + bytes(76),              # vlan_vid mask beyond 13 bits
    bytes(24) + b"\x08" + bytes(75),                  # vlan_pcp beyond 3 bits
    bytes(30) + b"\x01" + bytes(69),                  # the pad
    bytes(88) + b"\xff" + bytes(11),                  # arp_sha: never in a cached key
    bytes(72) + b"\x01" + bytes(27),                  # nd_target
])
def test_bad_masks_are_refused_and_change_nothing(fp, bad):
    c = fp._CacheForTest(64)
    before = c.stats()
    with pytest.raises(ValueError):
        c.insert(blob(fp, ipv4_frame()), OUT2, [1], 0, bad)
    assert c.stats() == before


def test_mask_blob_refuses_fields_no_megaflow_has():
    for name in ("arp_spa", "ipv6_nd_target", "metadata"):
        with pytest.raises(ValueError):
            mask_blob({name: 1})
    with pytest.raises(ValueError):
        mask_blob({"udp_dst": 1 << 16})


def test_an_uncacheable_key_gets_no_megaflow_either(fp):
    from test_fastpath_parse import PKTS
    c = fp._CacheForTest(64)
    assert not c.insert(blob(fp, PKTS["arp_req"]), OUT2, [], 0, VIP_MASK)
    s = c.stats()
    assert (s["insert_failures"], s["mf_insert_failures"], s["mf_entries"]) == (1, 1, 0)


# ------------------------------------------------------------------ epochs (issue #13)

def test_an_old_invalidation_does_not_kill_new_entries_after_2_31_epochs(fp):
    """With 32-bit epochs compared with wrap-around, flow 7's stamp from 2^31
    invalidations back looked newer than any insert: nothing with id 7 was ever cached
    again (all caching stopped after ~17 h at 8k sessions/s)."""
    c = fp._CacheForTest(16)
    k = blob(fp, ipv4_frame())
    c.invalidate_flow(7)
    c.advance_epoch(2**31 + 10)
    assert c.insert(k, OUT2, [7], 0)
    assert c.lookup(k, 1) == (OUT2, [7])
    c.advance_epoch(2**31)                            # 2^32 + 10 past the stamp
    assert c.insert(k, OUT2, [7], 2) and c.lookup(k, 3) == (OUT2, [7])


def test_slots_across_the_low_32_bit_wrap(fp):
    c = fp._CacheForTest(16)
    k, m = blob(fp, ipv4_frame(sport=1)), blob(fp, ipv4_frame(sport=2))
    c.advance_epoch(2**32 - 3)
    assert c.insert(k, OUT2, [1], 0)
    by_sport = mask_blob({"in_port": IN_PORT_MASK, "udp_src": 0xFFFF})
    c.insert(m, OUT2, [2], 0, by_sport)
    for _ in range(6):                                # the low half wraps under them
        c.invalidate_flow(9)
    assert c.lookup(k, 1) == (OUT2, [1])
    c.invalidate_flow(1)
    assert c.lookup(k, 2) is None
    assert c.lookup(blob(fp, ipv4_frame(src="10.3.3.3", sport=2)), 2) == (OUT2, [2])
    c.invalidate_all()
    assert c.lookup(blob(fp, ipv4_frame(src="10.4.4.4", sport=2)), 3) is None
    assert c.insert(k, OUT2, [1], 4) and c.lookup(k, 5) == (OUT2, [1])


def test_age_sweep_drops_slots_too_old_for_their_32_bit_stamp(fp):
    """An exact slot 2^31 or more invalidations old is dropped (counted invalidated)
    before its 32-bit stamp could alias; megaflows keep their full 64-bit epoch."""
    c = fp._CacheForTest(16)
    k = blob(fp, ipv4_frame(sport=1))
    c.insert(k, OUT2, [1], 0, VIP_MASK)
    c.advance_epoch(2**31 - 1)
    assert c.lookup(k, 1) == (OUT2, [1]) and counts(c) == (1, 0, 0)
    c.advance_epoch(1)
    assert c.stats()["invalidated"] == 1 and c.stats()["entries"] == 0
    assert c.lookup(k, 2) == (OUT2, [1]) and counts(c) == (1, 1, 0)    # megaflow, recopied
    c.advance_epoch(2**32)
    assert c.lookup(blob(fp, ipv4_frame(sport=5)), 3) == (OUT2, [1])


def test_advance_epoch_checks_its_argument(fp):
    c = fp._CacheForTest(4)
    for bad in (-1, 2**62, 1.5, "1"):
        with pytest.raises((ValueError, TypeError)):
            c.advance_epoch(bad)


# ------------------------------------------------------------------ differential

FRAMES = [ipv4_frame(src=s, dst=d, proto=p, sport=sp, dport=dp)
          for s in ("10.0.0.1", "10.0.1.1") for d in ("10.96.0.10", "10.96.0.11")
          for p in (6, 17) for sp in (1, 2) for dp in (80, 443)] + \
    [ipv6_frame(sport=sp, dst=d) for sp in (1, 2) for d in ("fd00::2", "fd00:96::10")]
MASKS = [
    VIP_MASK,
    mask_blob({"in_port": IN_PORT_MASK}),
    mask_blob({"in_port": IN_PORT_MASK, "eth_type": 0xFFFF, "ipv4_src": 0xFFFFFF00}),
    mask_blob({"in_port": IN_PORT_MASK, "tcp_dst": 0xFFFF, "ipv4_dst": 0xFFFFFFFF}),
    mask_blob({"in_port": IN_PORT_MASK, "ipv6_dst": 0xFFFF << 112}),
    mask_blob({"in_port": IN_PORT_MASK, "udp_src": 1}),
]

mf_op = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, len(FRAMES) - 1), st.integers(0, 5),
              st.lists(st.integers(0, 9), max_size=3), st.integers(0, 3 * IDLE // 2),
              st.one_of(st.none(), st.integers(0, len(MASKS) - 1)), st.integers(1, 2)),
    st.tuples(st.just("lookup"), st.integers(0, len(FRAMES) - 1),
              st.integers(0, 3 * IDLE // 2), st.integers(1, 2)),
    st.tuples(st.just("inval"), st.integers(0, 9)),
    st.tuples(st.just("inval_all"),),
    st.tuples(st.just("advance"), st.sampled_from([1, 2**31 - 1, 2**31, 2**32 + 1])),
)


@pytest.mark.skipif(C is None, reason="extension not built")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([1, 2, 8]), st.lists(mf_op, max_size=80))
def test_random_megaflow_sequences_agree(buckets, ops):
    a, b = C._CacheForTest(buckets), ref._CacheForTest(buckets)
    now = 0
    for o in ops:
        if o[0] == "insert":
            now += o[4] // 8
            k = ref.parse_blob(FRAMES[o[1]], o[6])[1]
            acts = [("set_field", "ipv4_dst", "10.0.0.%d" % o[2]), ("output", o[2])]
            m = None if o[5] is None else MASKS[o[5]]
            assert a.insert(k, acts, o[3], now, m) == b.insert(k, acts, o[3], now, m)
        elif o[0] == "lookup":
            now += o[2] // 8
            k = ref.parse_blob(FRAMES[o[1]], o[3])[1]
            assert a.lookup(k, now) == b.lookup(k, now)
        elif o[0] == "inval":
            a.invalidate_flow(o[1])
            b.invalidate_flow(o[1])
        elif o[0] == "inval_all":
            a.invalidate_all()
            b.invalidate_all()
        else:
            a.advance_epoch(o[1])
            b.advance_epoch(o[1])
        assert a.stats() == b.stats()


@pytest.mark.skipif(C is None, reason="extension not built")
@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=100, max_size=100))
def test_mask_validation_agrees_on_any_blob(m):
    k = ref.parse_blob(FRAMES[0], 1)[1]
    results = []
    for impl in (C, ref):
        c = impl._CacheForTest(4)
        try:
            c.insert(k, OUT2, [1], 0, m)
            results.append((c.lookup(ref.parse_blob(FRAMES[1], 1)[1], 1), c.stats()))
        except ValueError:
            results.append("refused")
    assert results[0] == results[1]


def test_constants_agree(fp):
    for name in ("MF_SUBTABLES", "MF_BUCKETS", "MF_WAYS", "MF_SWEEP_BUCKETS",
                 "MF_BYTES_PER_FLOW", "AGE_LIMIT"):
        assert getattr(fp, name) == getattr(ref, name)
    assert fp.MF_BYTES_PER_FLOW == 96
