"""What kp knows of a cluster it watches: the pure part of list and watch.

The Kubernetes API adapter (kp_app.kube_watch) feeds this store lists (`replace`) and
watch events (`event`); the store folds them into its objects and into the set of
Services and Nodes that changed since the last sync (`take_dirty`). A relist is diffed
against what was known by resourceVersion, so a relist after a 410 Gone, or a resync,
marks only what really changed. Nothing here does I/O or reads a clock.

`desired` turns the dirty Services into the VIPs they ask for (kp_app.kubernetes), one
Service at a time: a bad Service, or a bad EndpointSlice of a good one, is reported and
left out, and never keeps the others from being applied.

Node objects give node addresses (`node_addresses`). How a Node maps to a switch:
- the Node named by `--kp-node-name` (the node this kp_app serves; a DaemonSet gives it
  from spec.nodeName) gives the default node addresses, those of every switch that has
  none of its own (as `ku conf node_ip X` without a dpid), and its zone label is the
  zone topology hints are read for;
- a Node with the annotation `kp.io/dpid` (a number, e.g. "0x1" or "1") gives that
  switch's own addresses (as `ku conf node_ip X dpid N`), for one kp_app serving several
  (the annotation wins: the `--kp-node-name` Node with one gives only that switch's).
A Node's address on its pod subnet: its InternalIP of the family when that lies in its
pod CIDR, else the pod CIDR's first address (the pod bridge's gateway, as kubenet's
cbr0 has it), with the pod CIDR's prefix length.
"""
import ipaddress
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from kp_app import kubernetes
from kp_app.errors import KpError

SERVICE, SLICE, NODE = "Service", "EndpointSlice", "Node"
KINDS = (SERVICE, SLICE, NODE)
DPID_ANNOTATION = "kp.io/dpid"
ZONE_LABEL = "topology.kubernetes.io/zone"
Interfaces = Tuple[Optional[ipaddress.IPv4Interface], Optional[ipaddress.IPv6Interface]]


def object_key(obj: dict) -> str:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise ValueError("an object without metadata.name")
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata['name']}" if namespace else metadata["name"]


def _version(obj: dict) -> Optional[str]:
    return (obj.get("metadata") or {}).get("resourceVersion")


def _slice_owner(obj: dict) -> Optional[str]:
    """The 'namespace/name' of the Service a slice belongs to (None: no such label)."""
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels")
    name = labels.get(kubernetes.SERVICE_NAME_LABEL) if isinstance(labels, dict) else None
    if not isinstance(name, str) or not name:
        return None
    return f"{metadata.get('namespace') or 'default'}/{name}"


@dataclass
class Dirty:
    """What changed since the last sync."""
    services: Set[str] = field(default_factory=set)
    nodes: Set[str] = field(default_factory=set)
    service_changes: int = 0        # Service objects added, changed or deleted
    endpoint_changes: int = 0       # EndpointSlice objects added, changed or deleted

    def __bool__(self) -> bool:
        return bool(self.services or self.nodes)


class ClusterStore:
    def __init__(self) -> None:
        self.objects: Dict[str, Dict[str, dict]] = {kind: {} for kind in KINDS}
        self.slices_of: Dict[str, Dict[str, dict]] = {}     # service key -> slices
        self.dirty = Dirty()
        # service key -> (its objects' resourceVersions and the zone, its VIPs): a
        # resync of unchanged objects reads none of them again
        self._read: Dict[str, tuple] = {}

    # -- folding lists and events in ------------------------------------------------

    def replace(self, kind: str, items: List[dict]) -> int:
        """A full list of `kind`: objects new, changed (another resourceVersion) or gone
        since what was known are folded in as events would be. Returns how many."""
        listed = {}
        for item in items:
            listed[object_key(item)] = item
        known = self.objects[kind]
        changed = 0
        for key in [k for k in known if k not in listed]:
            changed += self._fold(kind, "DELETED", known[key])
        for key, item in listed.items():
            old = known.get(key)
            if old is None or _version(old) != _version(item) or _version(item) is None:
                changed += self._fold(kind, "MODIFIED" if old else "ADDED", item)
        return changed

    def event(self, kind: str, event_type: str, obj: dict) -> int:
        """One watch event (ADDED, MODIFIED, DELETED; BOOKMARK changes nothing)."""
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            return 0
        return self._fold(kind, event_type, obj)

    def _fold(self, kind: str, event_type: str, obj: dict) -> int:
        obj = dict(obj, kind=kind)      # list items carry no kind
        key = object_key(obj)
        known = self.objects[kind]
        old = known.pop(key, None)
        if event_type != "DELETED":
            known[key] = obj
        if kind == NODE:
            self.dirty.nodes.add(key)
            return 1
        if kind == SERVICE:
            self.dirty.services.add(key)
            self.dirty.service_changes += 1
            return 1
        for before in (old, obj):       # a slice may move to another Service
            owner = before and _slice_owner(before)
            if owner:
                self.slices_of.get(owner, {}).pop(key, None)
                self.dirty.services.add(owner)
        owner = _slice_owner(obj)
        if event_type != "DELETED" and owner:
            self.slices_of.setdefault(owner, {})[key] = obj
        self.dirty.endpoint_changes += 1
        return 1

    def mark_all(self) -> None:
        """A full resync: every Service and Node is looked at again."""
        self.dirty.services.update(self.objects[SERVICE])
        self.dirty.nodes.update(self.objects[NODE])

    def take_dirty(self) -> Dirty:
        dirty, self.dirty = self.dirty, Dirty()
        return dirty

    # -- what the objects ask for -----------------------------------------------------

    def desired(self, services, zone: Optional[str] = None
                ) -> Tuple[Dict[str, List[kubernetes.ServiceVip]], List[Tuple[str, str]]]:
        """The VIPs each of `services` asks for ([] for a Service that is gone), and
        (what, why) of each object left out because it does not check out."""
        desired: Dict[str, List[kubernetes.ServiceVip]] = {}
        skipped: List[Tuple[str, str]] = []
        for key in sorted(services):
            service = self.objects[SERVICE].get(key)
            if service is None:
                desired[key] = []
                self._read.pop(key, None)
                continue
            slices = list(self.slices_of.get(key, {}).values())
            versions = (zone, _version(service), tuple(sorted(
                (object_key(s), _version(s)) for s in slices)))
            cached = self._read.get(key)
            if cached is not None and cached[0] == versions:
                desired[key] = cached[1]
                continue
            try:
                desired.update(kubernetes.desired_services([service] + slices, zone))
                if versions[1] and all(v for _, v in versions[2]):   # (a fake's may lack them)
                    self._read[key] = (versions, desired[key])
                continue
            except KpError as error:
                first = error
                self._read.pop(key, None)
            # Find the culprit: the Service alone, else each slice with it.
            try:
                kubernetes.desired_services([service], zone)
            except KpError as error:
                skipped.append((f"Service {key}", _why(error)))
                continue
            good = []
            for item in slices:
                try:
                    kubernetes.desired_services([service, item], zone)
                    good.append(item)
                except KpError as error:
                    skipped.append((f"EndpointSlice {object_key(item)}", _why(error)))
            try:
                desired.update(kubernetes.desired_services([service] + good, zone))
            except KpError as error:    # the slices disagree with each other
                skipped.append((f"Service {key}", _why(error if good else first)))
        return desired, skipped

    def node(self, name: Optional[str]) -> Optional[dict]:
        return None if name is None else self.objects[NODE].get(name)


def _why(error: KpError) -> str:
    field_ = getattr(error, "field", None)
    return f"{field_}: {error}" if field_ else str(error)


def node_zone(node: Optional[dict]) -> Optional[str]:
    labels = ((node or {}).get("metadata") or {}).get("labels")
    zone = labels.get(ZONE_LABEL) if isinstance(labels, dict) else None
    return zone if isinstance(zone, str) and zone else None


def node_dpid(node: dict) -> Optional[int]:
    """The dpid the Node's kp.io/dpid annotation names; None without one. ValueError for
    one that is not a number of 64 bits."""
    annotations = (node.get("metadata") or {}).get("annotations")
    value = annotations.get(DPID_ANNOTATION) if isinstance(annotations, dict) else None
    if value is None:
        return None
    try:
        dpid = int(str(value), 0)
    except ValueError:
        raise ValueError(f"annotation {DPID_ANNOTATION}={value!r} is not a number") from None
    if not 0 <= dpid < 1 << 64:
        raise ValueError(f"annotation {DPID_ANNOTATION}={value!r} is not a 64-bit dpid")
    return dpid


def node_addresses(node: dict) -> Interfaces:
    """(IPv4 interface, IPv6 interface) of a Node: its address on its pod subnet per
    family (see the module's doc). ValueError for a pod CIDR or address that is not one."""
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    internal = []
    for entry in (node.get("status") or {}).get("addresses") or []:
        if isinstance(entry, dict) and entry.get("type") == "InternalIP":
            try:
                internal.append(ipaddress.ip_address(entry.get("address")))
            except ValueError:
                raise ValueError(f"status.addresses: {entry.get('address')!r} is not an "
                                 "IP address") from None
    found: Dict[int, ipaddress._BaseAddress] = {}
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr)
        except (TypeError, ValueError):
            raise ValueError(f"spec.podCIDRs: {cidr!r} is not a CIDR") from None
        if network.version in found or network.num_addresses < 2:
            continue
        inside = [a for a in internal if a in network]
        address = inside[0] if inside else network[1]
        found[network.version] = ipaddress.ip_interface(f"{address}/{network.prefixlen}")
    return found.get(4), found.get(6)
