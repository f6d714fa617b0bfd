"""What applying Kubernetes Services changes in the model, checked in full first.

Each applied Service owns the VIPs it asks for (`Vip.service`). Applying it again brings
them to what it asks for now: a VIP it no longer has goes, a new one comes, one whose
target port, node port, protocol or external addresses changed is replaced, and one that
only changed pods, session affinity or traffic policies keeps its sessions
(removed pods drain their TCP sessions, as with `ku pod ... del`; their UDP sessions end,
as kube-proxy clears their conntrack entries). VIPs made by hand, or owned by another
Service, are never touched: asking for one is a conflict. The whole plan is tried on a
scratch model before anything real changes.
"""
import dataclasses
import ipaddress
from typing import Dict, List, Optional, Tuple

from kp_app.errors import Conflict, InvalidInput
from kp_app.kubernetes import ServiceVip
from kp_app.maglev import MaglevTable
from kp_app.model import DEFAULT_NEW_LEN, MAX_NEW_LEN, Address, ServiceModel, Vip

TABLE_PER_POD = 100     # new-connection table entries per pod a new VIP is given


@dataclasses.dataclass(frozen=True)
class VipChange:
    service: str
    prefix: str
    port: int
    action: str                     # created | replaced | updated | unchanged | deleted
    spec: Optional[ServiceVip]      # None when deleted
    add: Tuple[str, ...] = ()       # pods to add (all of a made VIP's)
    remove: Tuple[str, ...] = ()    # pods to remove (updated)

    @property
    def label(self) -> str:
        return f"{self.prefix} port {self.port}"


def new_len_for(pods: int) -> int:
    """A new VIP's table: the default 1024 entries, or 100 per pod (a power of 2) for big services,
    so that the table stays balanced when pods come and go."""
    length = DEFAULT_NEW_LEN
    while length < TABLE_PER_POD * pods and length < MAX_NEW_LEN:
        length *= 2
    return length


def _one_vip_per_port(service: str, vips: List[ServiceVip]) -> List[ServiceVip]:
    """kp has one VIP per (address, port): a port served over TCP and UDP (DNS) becomes
    one VIP of protocol "any", which needs both to go to the same pods and port."""
    by_key: Dict[Tuple[str, int], List[ServiceVip]] = {}
    for vip in vips:
        by_key.setdefault((vip.prefix, vip.port), []).append(vip)
    merged = []
    for (prefix, port), same in sorted(by_key.items(), key=lambda kv: (_key(*kv[0]))):
        first = same[0]
        if len(same) > 1:
            if any(v.protocol == "sctp" for v in same):
                protocols = " and ".join(sorted(v.protocol.upper() for v in same))
                raise InvalidInput(
                    f"{prefix} port {port} over {protocols} cannot be one VIP: kp has one "
                    f"VIP per address and port, and only TCP with UDP makes protocol any",
                    f"Service {service}: spec.ports")
            if any(dataclasses.replace(v, protocol=first.protocol) != first for v in same):
                raise InvalidInput(
                    f"{prefix} port {port} over TCP and UDP must have the same target port, "
                    f"node port, external IPs and pods: kp has one VIP per address and port",
                    f"Service {service}: spec.ports")
            first = dataclasses.replace(first, protocol="any")
        merged.append(first)
    return merged


def _key(prefix: str, port: int):
    return (ipaddress.ip_network(prefix), port)


def _same_service(vip: Vip, spec: ServiceVip) -> bool:
    return (vip.target_port == spec.target_port and vip.node_port == spec.node_port
            and vip.protocol == spec.protocol
            and set(vip.external_ips) == {ipaddress.ip_address(a) for a in spec.external_ips})


@dataclasses.dataclass(frozen=True)
class Plan:
    """Made in this order: deletes (a replaced VIP's too) free node ports and addresses
    for the makes; updates only change pods."""
    deletes: List[VipChange]
    makes: List[VipChange]
    updates: List[VipChange]
    # the made VIPs' new-connection tables, built when the plan was tried: held here so
    # that the real changes find them in the model's store (kp_app.maglev.TableStore)
    tables: List[MaglevTable] = dataclasses.field(default_factory=list)

    def changes(self) -> List[VipChange]:
        """Each VIP once, for the report."""
        return ([c for c in self.deletes if c.action == "deleted"] + self.makes
                + self.updates)


def plan(model: ServiceModel, desired: Dict[str, List[ServiceVip]]) -> Plan:
    """The changes that bring each Service's VIPs to `desired`, tried. Raises
    InvalidInput or Conflict, and changes nothing, when they cannot all be made."""
    untried = changes(model, desired)
    return dataclasses.replace(untried, tables=_try(model, untried.deletes, untried.makes))


def changes(model: ServiceModel, desired: Dict[str, List[ServiceVip]]) -> Plan:
    """The changes, not tried yet (InvalidInput or Conflict for what is already clear)."""
    deletes, makes, updates = [], [], []
    by_service: Dict[str, Dict] = {}
    for vip in model.vips.values():
        if vip.service in desired:      # (a VIP's key hashes slowly: only those needed)
            by_service.setdefault(vip.service, {})[vip.key] = vip
    for service in sorted(desired):
        owned = by_service.get(service, {})
        wanted = {_key(s.prefix, s.port): s for s in _one_vip_per_port(service, desired[service])}
        for key, vip in owned.items():
            if key not in wanted:
                deletes.append(VipChange(service, str(key[0]), key[1], "deleted", None))
        for key, spec in wanted.items():
            vip = owned.get(key)
            if vip is None:
                other = model.vips.get(key)
                if other is not None:
                    owner = (f"Service {other.service}" if other.service
                             else "no Service (it was made with ku vip)")
                    raise Conflict(f"VIP {other.label()} already exists and belongs to {owner}",
                                   f"Service {service}")
                makes.append(VipChange(service, spec.prefix, spec.port, "created", spec,
                                       spec.pods))
            elif not _same_service(vip, spec):
                deletes.append(VipChange(service, spec.prefix, spec.port, "replaced", spec,
                                         spec.pods))
                makes.append(deletes[-1])
            else:
                active = set(vip.active_pods())
                pods = {ipaddress.ip_address(a) for a in spec.pods}
                add = tuple(str(a) for a in sorted(pods - active))
                remove = tuple(str(a) for a in sorted(active - pods))
                changed = add or remove or vip.policies() != spec.policies()
                updates.append(VipChange(service, spec.prefix, spec.port,
                                         "updated" if changed else "unchanged", spec,
                                         add, remove))
    return Plan(deletes, makes, updates)


def changed_services(model: ServiceModel, plan: Plan, desired: Dict[str, List[ServiceVip]],
                     health_ports: Dict[str, int]) -> Tuple[set, set]:
    """(Services whose VIPs or settings the plan changes, Services whose endpoints it
    changes), as kube-proxy counts Service and EndpointSlice changes (before the plan is
    made: it compares with the model as it is)."""
    endpoints = {c.service for c in plan.changes() if c.add or c.remove}
    services = {c.service for c in plan.changes()
                if c.action in ("created", "replaced", "deleted")}
    for change in plan.updates:
        if model.find_vip(change.prefix, change.port).policies() != change.spec.policies():
            services.add(change.service)
    services |= set(desired) - model.services       # new ones, headless too
    services |= {name for name in desired
                 if model.health_check_ports.get(name) != health_ports.get(name)}
    return services, endpoints


def _pods(addresses) -> List[Address]:
    return [ipaddress.ip_address(a) for a in addresses]


def tables_to_build(model: ServiceModel, untried: Plan) -> List[Tuple[List[Address], int]]:
    """(pods, new_len) of each table the plan's changes will build, so that big ones can
    be built ahead, off the controller's loop."""
    wanted = [(_pods(c.spec.pods), new_len_for(len(c.spec.pods)))
              for c in untried.makes if c.spec.pods]
    for change in untried.updates:
        if change.add or change.remove:
            vip = model.vips[_key(change.prefix, change.port)]
            wanted.append((_pods(change.spec.pods), vip.new_len))
    return wanted


def _try(model: ServiceModel, deletes: List[VipChange],
         makes: List[VipChange]) -> List[MaglevTable]:
    """Make the VIPs on a scratch model that has the real one's other VIPs (without
    their pods): every value and conflict check add_vip and add_pods do, nothing real.
    Returns the tables of the VIPs made with pods."""
    tables = []
    if not makes:     # nothing to try (and indexing 10,000 VIPs for it costs 20 ms)
        return tables
    scratch = ServiceModel(model.tables)
    gone = {_key(c.prefix, c.port) for c in deletes}
    for key, vip in model.vips.items():
        if key not in gone:     # (the real VIP itself: the scratch changes none it adopts)
            scratch.adopt(vip)
    for change in makes:
        spec = change.spec
        vip = scratch.add_vip(spec.prefix, spec.port, spec.target_port, spec.node_port,
                              spec.protocol, None, new_len_for(len(spec.pods)),
                              list(spec.external_ips), change.service, **spec.policies())
        if spec.pods:
            scratch.add_pods(vip, list(spec.pods))
            tables.append(vip.table)
    return tables
