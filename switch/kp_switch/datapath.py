"""Which fast path implementation the switch runs on, and on which port I/O: the one
place that chooses.

The C extension `kp_switch._fastpath` when it imports; `KP_FASTPATH=ref` forces the
pure-Python twin `kp_switch.fastpath_ref` (debugging), `KP_FASTPATH=c` requires C.
Ports (`open_datapath`): AF_XDP or AF_PACKET, the same for every port of a switch;
"auto" is AF_XDP when every port takes it, else AF_PACKET, with the reason.
"""
import os
from typing import List, Optional, Tuple

from . import fastpath_ref

_want = os.environ.get("KP_FASTPATH", "").strip().lower()
if _want == "ref":
    impl = fastpath_ref
else:
    try:
        from . import _fastpath as impl
    except ImportError:
        if _want == "c":
            raise
        impl = fastpath_ref

NAME = "ref" if impl is fastpath_ref else "c"
Datapath = impl.Datapath
parse = impl.parse
MAX_FLOW_IDS = getattr(impl, "MAX_FLOW_IDS", 1 << 18)
# Datapath threads a switch may run (kp-switch --threads): the C datapath's limit
# (csrc/datapath.h DP_MAX_THREADS), 1 on the twin.
MAX_THREADS = impl.MAX_THREADS


def rewrite(packet, actions, in_port=0):
    """The packet after `actions` (set-field, push/pop VLAN, dec TTL), as the fast path
    would send it; used for packet-in data.  Outputs in `actions` are ignored."""
    acts = [a for a in actions if a[0] != "output"]
    if not acts:
        return packet
    outs = fastpath_ref.apply_actions(packet, acts + [("output", 0)], in_port)
    return outs[-1][1] if outs else packet


PORT_IO_CHOICES = ("auto", "afxdp", "afpacket")


def open_datapath(ports: List[Tuple[int, str]], buckets: int, port_io: str = "auto",
                  threads: int = 1) -> Tuple[object, str, Optional[str]]:
    """(datapath, the port I/O it runs on, why not AF_XDP when "auto" fell back, else None).

    "afxdp" and "afpacket" raise OSError when the ports cannot be opened so; "auto"
    tries AF_XDP on all ports (the faster: see switch/FASTPATH.md) and falls back to
    AF_PACKET on any refusal (no kernel support, not root, a driver without XDP, an
    interface with several receive queues or an XDP program of someone else's, several
    datapath threads).  threads: 1..MAX_THREADS datapath threads (ValueError else)."""
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError("%r datapath threads: want 1..%d" % (threads, MAX_THREADS))
    if port_io not in PORT_IO_CHOICES:
        raise ValueError("port I/O must be one of %s, not %r" % (", ".join(PORT_IO_CHOICES),
                                                                 port_io))
    if port_io != "auto":
        return Datapath(ports, buckets, port_io, threads), port_io, None
    try:
        return Datapath(ports, buckets, "afxdp", threads), "afxdp", None
    except OSError as e:
        why = e.strerror or str(e)
    return Datapath(ports, buckets, "afpacket", threads), "afpacket", why
