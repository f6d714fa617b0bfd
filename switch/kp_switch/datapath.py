"""Which fast path implementation the switch runs on: the one place that chooses.

The C extension `kp_switch._fastpath` when it imports; `KP_FASTPATH=ref` forces the
pure-Python twin `kp_switch.fastpath_ref` (debugging), `KP_FASTPATH=c` requires C.
"""
import os

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


def rewrite(packet, actions, in_port=0):
    """The packet after `actions` (set-field, push/pop VLAN, dec TTL), as the fast path
    would send it; used for packet-in data.  Outputs in `actions` are ignored."""
    acts = [a for a in actions if a[0] != "output"]
    if not acts:
        return packet
    outs = fastpath_ref.apply_actions(packet, acts + [("output", 0)], in_port)
    return outs[-1][1] if outs else packet
