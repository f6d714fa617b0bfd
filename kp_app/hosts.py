"""The hosts behind one switch's ports: which MAC is behind which port (L2), and which
MAC and port an IP address is (the hosts the node routes to: pods, clients).

Bindings. An address, and a MAC, is bound to the port it was first learned on: a frame
from another port that claims it (an ARP or neighbour advertisement, a spoofed source)
does not move it (the move is refused and counted) unless the binding is released: the
port went down or away (`forget_port`), or the binding is idle, no frame from its host
for `HOST_IDLE_SECONDS` (a host that really moved is learned at its new port after
that). On the port it is bound to, an address may change its MAC (a pod restarted).
Only what the controller sees refreshes a binding; the Node asks a bound host that is
in use (a pod of a VIP) again, out of its port, before it goes idle (`stale`).

Bounds. Each table holds at most `MAX_HOSTS` entries. When one is full, a new entry
takes the place of the entry idle longest, if that one is idle; else of the entry seen
least recently that is not in use (the Node says which are: pods of VIPs, sessions'
clients and pods); if every
entry is in use and none idle, the new one is not learned (refused, counted), so a flood
of new addresses or MACs from a host port never pushes out a pod kp sends traffic to.

Where the switch forwards ARP and ND itself (lb and ct modes), a learned address's
claims pass on to other hosts only from the port it is bound to (its guard flows,
kp_app.pipeline.host_guard_flows, which follow the binding: `learn(guard=True)`).

Refused claims are counted (`refused`, the Node's `claims_refused`) and logged, at most
one line per REFUSAL_LOG_SECONDS. kp's own addresses (the node's, services') are never
learned: the Node refuses their claims before they get here (`refuse_own`).

Pure: the Node learns into it from packet-ins (with `now`); what changed comes back as
flows (kp_app.pipeline).
"""
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from kp_app import pipeline
from kp_app.model import Address

LOG = logging.getLogger("kp_app")

HOST_IDLE_SECONDS = 300.0   # a binding no frame refreshed for this long is released
MAX_HOSTS = 4096            # entries per table (addresses; MACs) of one switch
REFUSAL_LOG_SECONDS = 10.0  # refused claims are logged at most once in this long


@dataclass
class Host:
    mac: str
    port: int
    seen: Optional[float] = None    # None: adopted from the switch's flows, not seen yet


@dataclass
class Learned:
    """What one learn changed: the entry is new or moved (its flow to be installed),
    the claim was refused (a bound entry elsewhere, or no room), and the entries pushed
    out to make room (their flows to be deleted): [(key, Host)]."""
    changed: bool = False
    refused: bool = False
    evicted: List[Tuple[object, Host]] = field(default_factory=list)
    moved_from: Optional[Host] = None   # the binding an idle entry's move replaced


@dataclass
class Learning:
    """What learning one frame's sender gave: flows (new and moved hosts, and deletes of
    those pushed out), the addresses newly learned, whether a claim was refused."""
    flows: list = field(default_factory=list)
    addresses: list = field(default_factory=list)
    refused: bool = False


def _never(_key) -> bool:
    return False


class _BoundTable:
    """key (an address or a MAC) -> Host, bound to its port, bounded. `entries` is in
    the order they were last seen (the least recently seen first): a full table finds
    its victim at the front, not by sorting."""

    def __init__(self, limit: int, idle: float) -> None:
        self.entries: "OrderedDict[object, Host]" = OrderedDict()
        self.limit, self.idle = limit, idle

    def is_idle(self, host: Host, now: float) -> bool:
        return host.seen is not None and now - host.seen >= self.idle

    def learn(self, key, mac: str, port: int, now: float,
              in_use: Callable[[object], bool]) -> Learned:
        known = self.entries.get(key)
        if known is not None:
            if known.port == port:
                changed = known.mac != mac
                known.mac, known.seen = mac, now
                self.entries.move_to_end(key)
                return Learned(changed=changed)
            if not self.is_idle(known, now):
                return Learned(refused=True)
            self.entries[key] = Host(mac, port, now)    # released by idleness: moved
            self.entries.move_to_end(key)
            return Learned(changed=True, moved_from=known)
        evicted = []
        if len(self.entries) >= self.limit:
            victim = self._victim(now, in_use)
            if victim is None:
                return Learned(refused=True)
            evicted.append((victim, self.entries.pop(victim)))
        self.entries[key] = Host(mac, port, now)
        return Learned(changed=True, evicted=evicted)

    def _victim(self, now: float, in_use: Callable[[object], bool]):
        """The entry idle longest if it is idle, else the least recently seen one not
        in use (None: every one is)."""
        oldest = next(iter(self.entries), None)
        if oldest is not None and self.is_idle(self.entries[oldest], now):
            return oldest
        return next((k for k in self.entries if not in_use(k)), None)

    def forget_port(self, port: int) -> list:
        keys = [k for k, h in self.entries.items() if h.port == port]
        for key in keys:
            del self.entries[key]
        return keys


class HostTable:
    """address -> Host, and MAC -> port, each bound and bounded (the module's text).
    `refused` counts the claims refused: moves of a bound entry, and no room."""

    def __init__(self, limit: int = MAX_HOSTS, idle: float = HOST_IDLE_SECONDS) -> None:
        self._addresses = _BoundTable(limit, idle)
        self._macs = _BoundTable(limit, idle)
        self.refused = 0
        self._logged: Tuple[float, int] = (float("-inf"), 0)    # (when, `refused` then)

    @property
    def idle(self) -> float:
        return self._addresses.idle

    def __contains__(self, address) -> bool:
        return address in self._addresses.entries

    def __len__(self) -> int:
        return len(self._addresses.entries)

    def get(self, address) -> Optional[Host]:
        return self._addresses.entries.get(address)

    def items(self) -> Iterator[Tuple[Address, Host]]:
        return iter(list(self._addresses.entries.items()))

    def port_of(self, mac: str) -> Optional[int]:
        host = self._macs.entries.get(mac)
        return None if host is None else host.port

    def mac_items(self) -> Iterator[Tuple[str, int]]:
        return iter([(m, h.port) for m, h in self._macs.entries.items()])

    def learn_mac(self, mac: str, port: int, now: float) -> Learned:
        learned = self._macs.learn(mac, mac, port, now, _never)
        self.refused += learned.refused
        return learned

    def learn_address(self, address, mac: str, port: int, now: float,
                      in_use: Callable[[object], bool] = _never) -> Learned:
        """`in_use(address)`: an entry that must not be pushed out for a new one."""
        learned = self._addresses.learn(address, mac, port, now, in_use)
        self.refused += learned.refused
        return learned

    def learn(self, gateway_mac: str, src_mac: str, claimed: Optional[Tuple[Address, str]],
              port: int, now: float, in_use: Callable[[object], bool] = _never,
              guard: bool = False) -> Learning:
        """Learn a frame's Ethernet source at `port`, and the (address, MAC) it claims
        (kp_app.neighbours.claim), if any, with their flows (routed ones via
        `gateway_mac`; with `guard`, where the switch forwards ARP and ND itself, the
        address's guards: pipeline.host_guard_flows)."""
        out = Learning()
        mac_learned = self.learn_mac(src_mac, port, now)
        out.refused = mac_learned.refused
        if mac_learned.changed:
            out.flows.append(pipeline.host_flow(src_mac, port))
        out.flows += [_host_delete(None, m, h) for m, h in mac_learned.evicted]
        if claimed is not None:
            address, mac = claimed
            new = address not in self._addresses.entries
            learned = self.learn_address(address, mac, port, now, in_use)
            out.refused = out.refused or learned.refused
            out.flows += [_host_delete(gateway_mac, a, h) for a, h in learned.evicted]
            if guard:
                gone = learned.evicted + ([(address, learned.moved_from)]
                                          if learned.moved_from else [])
                out.flows += [pipeline.strict_delete(f) for a, h in gone
                              for f in pipeline.host_guard_flows(a, h.port)]
            if learned.changed:
                out.flows.append(pipeline.host_route_flow(gateway_mac, address, mac, port))
                if guard and (new or learned.moved_from is not None):
                    out.flows += pipeline.host_guard_flows(address, port)
                out.addresses.append(address)
        return out

    def refuse_own(self, dpid: int, address, src_mac: str, port: int, now: float) -> None:
        """An ARP or ND frame claimed one of kp's own addresses: counted and logged."""
        self.refused += 1
        self._log(dpid, now, f"{address} (kp's own) claimed by {src_mac} on port {port}")

    def log_refusal(self, dpid: int, now: float, src_mac: str, port: int,
                    claimed: Optional[Tuple[Address, str]]) -> None:
        known = self.get(claimed[0]) if claimed is not None else None
        bound = self._macs.entries.get(src_mac)
        self._log(dpid, now, f"{src_mac} on port {port}" + (
            f" claiming {claimed[0]} (bound to port {known.port})" if known and
            known.port != port else "") + (
            f" (the MAC is bound to port {bound.port})" if bound and bound.port != port
            else ""))

    def _log(self, dpid: int, now: float, what: str) -> None:
        """One line per REFUSAL_LOG_SECONDS, with the count since the last line."""
        last, refused_then = self._logged
        if now - last < REFUSAL_LOG_SECONDS:
            return
        LOG.warning("switch %016x: refused a host's claim: %s (%d refused since the "
                    "last such line)", dpid, what, self.refused - refused_then)
        self._logged = (now, self.refused)

    def stale(self, now: float, in_use: Callable[[object], bool]) -> List[Tuple[Address, Host]]:
        """Addresses in use that no frame refreshed for half the idle time, and not yet
        idle (the Node asks them again, out of their port: a live host answers before
        its binding is released, a gone one is asked no more); and stamps the adopted
        ones with `now`."""
        out = []
        for address, host in self._addresses.entries.items():
            if host.seen is None:
                host.seen = now
            elif self.idle / 2 <= now - host.seen < self.idle and in_use(address):
                out.append((address, host))
        for host in self._macs.entries.values():
            if host.seen is None:
                host.seen = now
        return out

    def adopt(self, mac: Optional[str], port: int, address=None) -> None:
        """What a switch's flows say was learned before (a controller restart): bound as
        if just seen, once `stale` stamps it."""
        table = self._macs if address is None else self._addresses
        key = mac if address is None else address
        if key not in table.entries and len(table.entries) < table.limit:
            table.entries[key] = Host(mac, port)

    def forget_port(self, port: int) -> Tuple[List[str], List[Address]]:
        """Forget (release) every MAC and address behind `port`: (the MACs, the
        addresses)."""
        return self._macs.forget_port(port), self._addresses.forget_port(port)


def _host_delete(gateway_mac: Optional[str], key, host: Host) -> pipeline.FlowDelete:
    """The flow of one host pushed out of a full table: its routed flow (an address,
    `gateway_mac` given) or its L2 flow (a MAC)."""
    return pipeline.strict_delete(
        pipeline.host_flow(key, host.port) if gateway_mac is None
        else pipeline.host_route_flow(gateway_mac, key, host.mac, host.port))
