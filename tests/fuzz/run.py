"""`./run fuzz [SECONDS]`: the suite's fuzzers for longer than the suite runs them.

Not a test module (pytest does not collect it): a driver that runs, until its time is
up, the same checks the suite's bounded fuzz tests make, on fresh random inputs:
  packets   C parser, actions, segmentation and checksum completion against the Python
            twin on mutated sample frames and random bytes (tests/switch/
            test_fastpath_parse.py, test_fastpath_actions.py); run under the ASan/UBSan
            build by scripts/fuzz, so a memory error aborts with a report;
  openflow  the OpenFlow decoder on mutated and random messages: every one decodes or
            is refused with OFError, never the decoder's catch-all, never a hang
            (tests/switch/test_of_hostile.py).
Time is split evenly.  Any disagreement or bad outcome stops the run, prints the input
(hex) and exits 1.  Prints what ran: the number of inputs per fuzzer and the seed.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "switch"))

import conftest  # noqa: E402  (loads the extension KP_FASTPATH_SO names, as the suite)
from kp_switch import fastpath_ref as ref  # noqa: E402

C = conftest.IMPLS.get("c")
PKTS = conftest.sample_packets()
NAMES = sorted(PKTS)
FIELDS = [("eth_dst", "02:00:00:00:00:09"), ("ipv4_src", "10.9.9.9"), ("ipv4_dst", "10.0.0.99"),
          ("ipv6_dst", "fd00::99"), ("ipv6_src", "fd00::98"), ("tcp_dst", 8080),
          ("tcp_src", 1), ("udp_dst", 53), ("udp_src", 65535), ("ip_dscp", 46),
          ("ip_ecn", 3), ("vlan_vid", 0x1005), ("icmpv4_type", 0), ("icmpv6_code", 1),
          ("ipv6_flabel", 0xFFFFF), ("arp_op", 2)]


def _mutant(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    pkt = bytearray(PKTS[rng.choice(NAMES)])
    if r < 0.3 and len(pkt) > 54:      # an IPv6-style extension header spliced in
        pos = rng.randrange(14, len(pkt))
        pkt[pos:pos] = bytes([rng.choice((0, 6, 17, 43, 44, 58, 60)), rng.randrange(4)]) + \
            bytes(rng.randrange(256) for _ in range(6))
    for _ in range(rng.randrange(5)):
        if pkt:
            pkt[rng.randrange(len(pkt))] = rng.randrange(256)
    if rng.random() < 0.3:
        del pkt[rng.randrange(len(pkt) + 1):]
    return bytes(pkt)


def _actions(rng: random.Random) -> list:
    acts = []
    for _ in range(rng.randrange(8)):
        k = rng.random()
        if k < 0.6:
            acts.append(("set_field",) + rng.choice(FIELDS))
        elif k < 0.7:
            acts.append(("push_vlan", rng.choice((0x8100, 0x88A8))))
        elif k < 0.8:
            acts.append(("pop_vlan",))
        elif k < 0.9:
            acts.append(("dec_ttl",))
        else:
            acts.append(("output", rng.randrange(1, 5)))
    return acts + [("output", 1)]


def _fail(what: str, pkt: bytes, extra: object = "") -> None:
    print("FUZZ FAILURE (%s): %s %s" % (what, pkt.hex(), extra), flush=True)
    sys.exit(1)


def _run(impl, pkt: bytes, acts: list, port: int) -> tuple:
    """("ok", outputs) or ("refused",): an action the implementation refuses (a field
    the packet lacks is refused the same way by both, the reason's text may differ)."""
    try:
        return ("ok", impl.apply_actions(pkt, acts, port))
    except ValueError:
        return ("refused",)


def fuzz_packets(deadline: float, rng: random.Random) -> int:
    if C is None:
        print("packets: the C extension is not built", flush=True)
        sys.exit(1)
    n = 0
    while time.monotonic() < deadline:
        for _ in range(200):
            pkt, port = _mutant(rng), rng.randrange(1 << 32)
            if C.parse_blob(pkt, port) != ref.parse_blob(pkt, port) or \
                    C.parse(pkt, port) != ref.parse(pkt, port):
                _fail("parse", pkt, port)
            acts = _actions(rng)
            if _run(C, pkt, acts, port) != _run(ref, pkt, acts, port):
                _fail("actions", pkt, acts)
            size = rng.choice((1, 87, 88, 500, 1400, rng.randrange(1, 65536)))
            if C.segment_udp(pkt, size) != ref.segment_udp(pkt, size):
                _fail("segment_udp", pkt, size)
            mtu = rng.choice((576, 1500, 9000, 65535))
            if C.segment_tcp(pkt, mtu, size) != ref.segment_tcp(pkt, mtu, size):
                _fail("segment_tcp", pkt, (mtu, size))
            start, off = rng.randrange(-1, len(pkt) + 4), rng.randrange(0, 40)
            if C.complete_partial_checksum(pkt, start, off) != \
                    ref.complete_partial_checksum(pkt, start, off):
                _fail("complete_partial_checksum", pkt, (start, off))
            n += 1
    return n


def fuzz_openflow(deadline: float, rng: random.Random) -> int:
    import test_of_hostile as oh

    class Hang(BaseException):
        pass

    def hang(*_):
        raise Hang("the decoder did not return")

    old = signal.signal(signal.SIGALRM, hang)
    n, outcomes = 0, {"ok": 0, "error": 0}
    try:
        while time.monotonic() < deadline:
            for data in oh.fuzz_messages(rng.randrange(1 << 30), 500):
                signal.alarm(10)
                try:
                    outcomes[oh.decode_outcome(data)[0]] += 1
                except Hang:
                    _fail("openflow decoder hang", data)
                except AssertionError as e:
                    _fail("openflow decoder bug", data, e)
                finally:
                    signal.alarm(0)
                n += 1
    finally:
        signal.signal(signal.SIGALRM, old)
    print("openflow: %(ok)d decoded, %(error)d refused" % outcomes, flush=True)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seconds", nargs="?", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", choices=("packets", "openflow"))
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    fuzzers = [("packets", fuzz_packets), ("openflow", fuzz_openflow)]
    if args.only:
        fuzzers = [f for f in fuzzers if f[0] == args.only]
    share = args.seconds / len(fuzzers)
    print("fuzz: seed %d, %.0f s each: %s (ASan/UBSan build: %s)"
          % (seed, share, ", ".join(f[0] for f in fuzzers),
             bool(os.environ.get("KP_FASTPATH_SO"))), flush=True)
    for i, (name, fn) in enumerate(fuzzers):
        n = fn(time.monotonic() + share, random.Random(seed + i))
        print("%s: %d inputs, no failure" % (name, n), flush=True)


if __name__ == "__main__":
    main()
