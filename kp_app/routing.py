"""Routing between nodes: which other node's gateway a packet for an address goes to.

`routes` is [(subnet, next node's gateway MAC, port towards it)], set by KubeProxy from
the discovered links (kp_app.kubeproxy._apply_topology) and programmed as
kp_app.pipeline.route_flows; the controller routes with the same list when a packet
reaches it (the longest prefix wins, as the flows' priorities make it on the switch).
"""
from typing import Optional, Sequence, Tuple

from kp_app import frames

ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST = 8, 128


def next_hop(routes: Sequence, address) -> Optional[Tuple[str, int]]:
    """(next node's gateway MAC, port) when `address` is in another node's subnet."""
    best = None
    for subnet, mac, port in routes:
        if address.version == subnet.version and address in subnet:
            if best is None or subnet.prefixlen > best[0].prefixlen:
                best = (subnet, mac, port)
    return None if best is None else best[1:]


def is_echo_request(frame: frames.Frame) -> bool:
    """A ping (ICMP or ICMPv6 echo request): the node answers those sent to itself."""
    return frame.icmp_type in (ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST) and (
        frame.ip_proto in (frames.ICMP, frames.ICMPV6))
