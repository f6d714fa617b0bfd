"""A switch's node addresses, announced in its OpenFlow description: the one format.

A switch that is a kp node says which node addresses (and so which pod subnets) it
serves in the ``dp_desc`` field of its OFPMP_DESC reply, which kp_app asks for when the
switch connects::

    kp-node ipv4=10.0.1.1/24 ipv6=fd00:0:0:1::1/64

``kp-node`` then ``ipv4=`` and/or ``ipv6=``, each an address with its prefix length, at
the end of the field; any human text may stand before it (kp-switch's "dpid ...",
Mininet's switch name). kp-switch writes it from ``--node-ip``/``--node-ip6``;
Open vSwitch from the bridge's ``other_config:dp-desc`` (topologies/kp.py sets both).
kp_app takes an announced address as ``ku conf node_ip ... dpid n`` would set it, unless
that was set by hand (kp_app.model.ServiceModel.announce_node).

Standard library only: kp_app, kp-switch and the Mininet custom file (run by Debian's
python3 without the venv, which loads this file by its path) all use it.
"""
import ipaddress
from typing import Optional, Tuple, Union

TAG = "kp-node"
FIELDS = ("ipv4", "ipv6")
DP_DESC_MAX = 255       # OpenFlow's DESC_STR_LEN (256) less the terminating NUL

Interface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
Announcement = Tuple[Optional[ipaddress.IPv4Interface], Optional[ipaddress.IPv6Interface]]


def _interface(value: str, field: str) -> Interface:
    version = 4 if field == "ipv4" else 6
    if "/" not in value:
        raise ValueError(f"{field}={value!r} has no /prefix length (the node's pod subnet)")
    try:
        interface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{field}={value!r} is not an address/prefix length") from None
    if interface.version != version:
        raise ValueError(f"{field}={value!r} is IPv{interface.version}, not IPv{version}")
    return interface


def format_announcement(ipv4: Optional[str] = None, ipv6: Optional[str] = None) -> str:
    """The announcement of these node addresses ('' for none). ValueError if one is not
    an address of its family with a prefix length."""
    words = [f"{field}={_interface(value, field)}"
             for field, value in (("ipv4", ipv4), ("ipv6", ipv6)) if value is not None]
    return " ".join([TAG] + words) if words else ""


def with_announcement(human: str, announcement: str) -> str:
    """A dp_desc: the human text, then the announcement (if any)."""
    text = " ".join(part for part in (human, announcement) if part)
    if len(text.encode()) > DP_DESC_MAX:
        raise ValueError(f"dp_desc {text!r} is longer than {DP_DESC_MAX} bytes")
    return text


def parse_announcement(dp_desc: Union[str, bytes]) -> Optional[Announcement]:
    """(ipv4 interface or None, ipv6 interface or None) from a switch's dp_desc; None
    when it announces nothing (no ``kp-node`` word). ValueError, naming what is wrong,
    when the announcement is malformed: an unknown or repeated field, a bad address,
    nothing after the tag."""
    if isinstance(dp_desc, bytes):
        dp_desc = dp_desc.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    words = dp_desc.split()
    if TAG not in words:
        return None
    if words.count(TAG) > 1:
        raise ValueError(f"{TAG!r} appears more than once")
    found = {}
    for word in words[words.index(TAG) + 1:]:
        field, sep, value = word.partition("=")
        if not sep or field not in FIELDS:
            raise ValueError(f"{word!r} is not ipv4=ADDRESS/LEN or ipv6=ADDRESS/LEN")
        if field in found:
            raise ValueError(f"{field} is given twice")
        found[field] = _interface(value, field)
    if not found:
        raise ValueError(f"{TAG!r} announces no address")
    return found.get("ipv4"), found.get("ipv6")
