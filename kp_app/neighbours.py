"""ARP and IPv6 neighbour discovery: what kp answers, what a frame claims, how kp asks.

kp answers ARP requests and neighbour solicitations for the addresses it owns (the
node's, and every service address: VIPs, external IPs); everything else between hosts
is theirs (forwarded, or in lb/ct modes switched by the switch itself: see
kp_app.pipeline.base_flows). A host that claims one of kp's addresses is refused
(kp_app.node, kp_app.hosts); where the switch forwards ARP and ND itself, `Guards`' flows
send such claims to the controller only. Pure, over kp_app.frames and kp_app.pipeline.
"""
import ipaddress
from typing import Callable, Dict, List, Optional, Tuple

from kp_app import frames, pipeline

ARP_REQUEST, ARP_REPLY = 1, 2


def answer(frame: frames.Frame, gateway_mac: str,
           is_ours: Callable[[object], bool]) -> Optional[bytes]:
    """kp's ARP reply or neighbour advertisement to a request for one of its own
    addresses, or None when the frame asks for no address of kp's."""
    if frame.is_arp:
        if frame.arp_op == ARP_REQUEST and frame.arp_tpa is not None and is_ours(frame.arp_tpa):
            return frames.arp_reply(frame, gateway_mac)
    elif frame.is_nd:
        if (frame.icmp_type == frames.ND_NS and frame.nd_target is not None
                and is_ours(frame.nd_target)):
            return frames.neighbor_advert(frame, gateway_mac)
    return None


def claim(frame: frames.Frame) -> Optional[Tuple[object, str]]:
    """(address, MAC) a frame says its sender is: an ARP sender, a neighbour
    advertisement's target, else the IP source behind the Ethernet source."""
    if frame.is_arp and frame.arp_spa and not frame.arp_spa.is_unspecified:
        return frame.arp_spa, frame.arp_sha
    if frame.is_nd and frame.icmp_type == frames.ND_NA and frame.nd_target:
        return frame.nd_target, frame.nd_lladdr or frame.eth_src
    if frame.ip_src is not None and not frame.ip_src.is_unspecified:
        return frame.ip_src, frame.eth_src
    return None


def solicitation(gateway_mac: str, node_ipv4, address) -> bytes:
    """kp asking for `address`'s MAC (ARP request, or neighbour solicitation)."""
    if address.version == 4:
        return frames.arp_request(gateway_mac, node_ipv4, address)
    return frames.neighbor_solicit(gateway_mac, None, address)


class Guards:
    """The guard flows (pipeline.neighbour_guard_flows) of kp's own addresses on one
    switch that forwards ARP and ND itself: the node's, and each VIP's prefix and
    external IPs, which VIPs of the same address share."""

    def __init__(self) -> None:
        self._networks: Dict[int, tuple] = {}   # vip id -> its networks

    @staticmethod
    def node_flows(node) -> List[pipeline.FlowAdd]:
        """The node's addresses' (kp_app.model.NodeAddresses)."""
        return [f for address in (node.ipv4, node.ipv6) if address is not None
                for f in pipeline.neighbour_guard_flows(ipaddress.ip_network(address))]

    def vip_flows(self, vip) -> List[pipeline.FlowAdd]:
        networks = (vip.prefix,) + tuple(ipaddress.ip_network(a) for a in vip.external_ips)
        self._networks[vip.id] = networks
        return [f for n in networks for f in pipeline.neighbour_guard_flows(n)]

    def forget(self, vip_id: int) -> List[pipeline.FlowDelete]:
        """A VIP went: deletes of its guards that no other VIP's addresses need."""
        gone = self._networks.pop(vip_id, ())
        kept = {n for networks in self._networks.values() for n in networks}
        return [pipeline.strict_delete(f) for n in gone if n not in kept
                for f in pipeline.neighbour_guard_flows(n)]
