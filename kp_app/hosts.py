"""The hosts behind one switch's ports: which MAC is behind which port (L2), and which
MAC and port an IP address is (the hosts the node routes to: pods, clients).

Pure data: the Node learns into it from packet-ins and turns what changed into flows.
"""
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from kp_app.model import Address


@dataclass
class Host:
    mac: str
    port: int


class HostTable:
    """address -> Host, and MAC -> port."""

    def __init__(self) -> None:
        self.addresses: Dict[Address, Host] = {}
        self.macs: Dict[str, int] = {}

    def __contains__(self, address) -> bool:
        return address in self.addresses

    def __len__(self) -> int:
        return len(self.addresses)

    def get(self, address) -> Optional[Host]:
        return self.addresses.get(address)

    def items(self) -> Iterator[Tuple[Address, Host]]:
        return iter(list(self.addresses.items()))

    def port_of(self, mac: str) -> Optional[int]:
        return self.macs.get(mac)

    def mac_items(self) -> Iterator[Tuple[str, int]]:
        return iter(list(self.macs.items()))

    def learn_mac(self, mac: str, port: int) -> bool:
        """True if `mac` is new behind `port` (its flow is to be (re)installed)."""
        if self.macs.get(mac) == port:
            return False
        self.macs[mac] = port
        return True

    def learn_address(self, address, mac: str, port: int) -> bool:
        """True if `address` is new as (`mac`, `port`)."""
        known = self.addresses.get(address)
        if known is not None and (known.mac, known.port) == (mac, port):
            return False
        self.addresses[address] = Host(mac, port)
        return True

    def adopt(self, mac: Optional[str], port: int, address=None) -> None:
        """What a switch's flows say was learned before (a controller restart)."""
        if address is None:
            self.macs.setdefault(mac, port)
        else:
            self.addresses.setdefault(address, Host(mac, port))

    def forget_port(self, port: int) -> Tuple[List[str], List[Address]]:
        """Forget every MAC and address behind `port`: (the MACs, the addresses)."""
        macs = [m for m, p in self.macs.items() if p == port]
        addresses = [a for a, h in self.addresses.items() if h.port == port]
        for mac in macs:
            del self.macs[mac]
        for address in addresses:
            del self.addresses[address]
        return macs, addresses
