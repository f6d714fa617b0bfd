"""Kubernetes objects -> the VIPs kp should have, exactly as kube-proxy would proxy them.

The input is what `kubectl get svc,endpoints,endpointslices -A -o yaml` or a hand-written
manifest gives, already parsed into dicts and lists. Nothing here does I/O. The whole
input is validated before anything is returned; every problem is an InvalidInput whose
field points at it, e.g. "Service default/web: spec.ports[1].protocol".

kube-proxy's rules, in brief:
- A Service gets one VIP per (cluster IP, port). Headless and ExternalName Services get
  none. NodePort and LoadBalancer VIPs carry their node port; externalIPs and load
  balancer ingress IPs go with the cluster IP of their family.
- Pods come from the EndpointSlices labelled with the Service's name if there are any,
  else from the Endpoints object of the same name. As kube-proxy's CategorizeEndpoints:
  the ready endpoints; when none is ready, those both serving and terminating (graceful
  termination: a rolling update's old pods finish while no new one is ready yet); then
  none. Topology hints are honoured when the Service asks for them (trafficDistribution,
  e.g. PreferClose, or the topology-mode annotation Auto), the node's zone is known,
  every ready endpoint has zone hints and one of them is for that zone: then only the
  endpoints hinted for the node's zone are used.
- A service port matches endpoint ports by (name, protocol); the endpoints' port number
  is the target port, which is how a named targetPort gets resolved.

(A little over 500 lines: the reading of these three kinds and kube-proxy's rules for
them are one concept, which `ku apply` and the cluster watch share.)

(Over 500 lines: one concern, what a manifest means to kube-proxy: each of its rules
above with the check of the fields it reads, for Services, Endpoints and EndpointSlices.)
"""
import datetime
import ipaddress
import re
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

from kp_app.errors import InvalidInput
from kp_app.model import ip_address_of

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

KINDS = ("Service", "Endpoints", "EndpointSlice")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SLICE_LABEL_PATH = f"metadata.labels[{SERVICE_NAME_LABEL}]"
SLICE_VERSIONS = {"IPv4": 4, "IPv6": 6, "FQDN": None}
# IANA_SVC_NAME: lowercase letters, digits and single inner '-', at least one letter.
PORT_NAME = re.compile(r"(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*")
MAX_NESTING = 8
DEFAULT_AFFINITY_TIMEOUT = 10800    # Kubernetes' default for ClientIP: 3 hours
MAX_AFFINITY_TIMEOUT = 86400
TOPOLOGY_ANNOTATIONS = ("service.kubernetes.io/topology-mode",
                        "service.kubernetes.io/topology-aware-hints")    # the older name
TYPE_NAMES = {dict: "a mapping", list: "a list", str: "a string", bool: "true or false"}
NOT_EXPORTED = "not set: {}; export the Service from the cluster (e.g. kubectl get svc -o yaml)"


@dataclass(frozen=True)
class ServiceVip:
    """One VIP a Service asks for: one cluster IP (or external address family) x one port."""
    prefix: str                 # the cluster IP as a host prefix: "10.96.0.10/32", "fd00::a/128"
    port: int                   # the service port
    target_port: int            # the pods' port number (resolved from the endpoints)
    node_port: Optional[int]    # only for type NodePort / LoadBalancer, else None
    protocol: str               # "tcp", "udp" or "sctp"
    external_ips: Tuple[str, ...]   # externalIPs + load balancer ingress IPs of this family
    pods: Tuple[str, ...]       # ready endpoint addresses of this family
    affinity_timeout: int = 0   # sessionAffinity ClientIP: its timeoutSeconds (0: None)
    external_policy: str = "cluster"    # externalTrafficPolicy, lowercase
    internal_policy: str = "cluster"    # internalTrafficPolicy, lowercase
    source_ranges: Tuple[str, ...] = ()   # loadBalancerSourceRanges of this family, sorted

    def policies(self) -> dict:
        """As kp_app.model.Vip.policies(): what a VIP may change in place."""
        return {"affinity_timeout": self.affinity_timeout,
                "external_policy": self.external_policy,
                "internal_policy": self.internal_policy,
                "source_ranges": list(self.source_ranges)}


class _Ident(NamedTuple):
    kind: str
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def where(self) -> str:
        return f"{self.kind} {self.key}"


class _Port(NamedTuple):
    field: str                      # where it is, for errors found later
    name: str
    port: int
    protocol: str
    target: Union[int, str, None]   # a number, a port name, or None: same as port
    node_port: Optional[int]


class _Service(NamedTuple):
    cluster_ips: List[Address]      # empty when kube-proxy does not proxy it
    ports: List[_Port]
    external: List[Address]
    affinity_timeout: int
    external_policy: str
    internal_policy: str
    source_ranges: List[ipaddress.IPv4Network]     # or IPv6
    topology: bool = False          # it asks for topology hints to be honoured


class _Endpoint(NamedTuple):
    address: Address
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    zones: Tuple[str, ...] = ()     # hints.forZones


class _Group(NamedTuple):
    """An Endpoints subset or an EndpointSlice: endpoints that all serve the same ports."""
    ports: Tuple[Tuple[str, str, int], ...]     # (name, protocol, number)
    addresses: Tuple[_Endpoint, ...]


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _expect(value, kind: type, field: str):
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InvalidInput(f"{_show(value)} is not {TYPE_NAMES[kind]}", field)
    return value


def _typed(mapping: dict, key: str, kind: type, field: str, default):
    value = mapping.get(key)
    return default if value is None else _expect(value, kind, field)


def _port_number(value, field: str, missing: str = "not set") -> int:
    if value is None:
        raise InvalidInput(missing, field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{_show(value)} is not a port number (an integer 1-65535)", field)
    if not 1 <= value <= 65535:
        raise InvalidInput(f"{value} is out of range 1-65535", field)
    return value


def _address(value, field: str, version: Optional[int] = None) -> Address:
    if value is None or value == "":
        raise InvalidInput("not set: an IP address is needed here", field)
    try:
        address = ip_address_of(_expect(value, str, field))
    except ValueError:
        raise InvalidInput(f"{value!r} is not an IP address", field) from None
    if version is not None and address.version != version:
        raise InvalidInput(f"{address} is IPv{address.version} in an IPv{version} EndpointSlice",
                           field)
    return address


def _protocol(value, field: str) -> str:
    if value is None:
        return "tcp"
    if value in ("TCP", "tcp", "UDP", "udp", "SCTP", "sctp"):
        return value.lower()
    raise InvalidInput(f"{_show(value)} is not a protocol: use TCP, UDP or SCTP", field)


def objects(document) -> List[dict]:
    """Flatten a document, a List (kind List, ServiceList, ...), or a list of YAML documents
    (None documents are skipped) into the list of object dicts it holds."""
    flat: List[dict] = []
    _flatten(document, "", 0, flat)
    return flat


def _flatten(document, path: str, depth: int, flat: List[dict]) -> None:
    if depth > MAX_NESTING:
        raise InvalidInput("nested too deeply to be Kubernetes objects", path or None)
    if document is None:    # an empty YAML document, e.g. after a trailing '---'
        return
    kind = document.get("kind") if isinstance(document, dict) else None
    if isinstance(document, list):
        for index, item in enumerate(document):
            _flatten(item, f"{path}[{index}]", depth + 1, flat)
    elif isinstance(kind, str) and kind.endswith("List"):
        path = f"{path}.items".lstrip(".")
        for index, item in enumerate(_typed(document, "items", list, path, [])):
            if not isinstance(item, dict):
                raise InvalidInput(f"{_show(item)} is not a Kubernetes object", f"{path}[{index}]")
            _flatten(item, f"{path}[{index}]", depth + 1, flat)
    elif isinstance(document, dict):
        flat.append(document)
    else:
        raise InvalidInput(f"{_show(document)} is not a Kubernetes object, a List or a list "
                           "of them", path or None)


def _identify(obj, index: int) -> _Ident:
    at = f"items[{index}]"
    if not isinstance(obj, dict):
        raise InvalidInput(f"{_show(obj)} is not a Kubernetes object (a mapping with kind and "
                           "metadata)", at)
    kind = obj.get("kind")
    if kind is None:
        raise InvalidInput("not set: every object needs a kind (Service, Endpoints or "
                           "EndpointSlice)", f"{at}: kind")
    if kind not in KINDS:
        raise InvalidInput(f"kind {_show(kind)} is not read by kp: kp reads only Service, "
                           "Endpoints and EndpointSlice objects; leave the others out",
                           f"{at}: kind")
    metadata = _typed(obj, "metadata", dict, f"{at}: metadata", {})
    name = metadata.get("name")
    if name is None or name == "":
        raise InvalidInput(f"not set: every {kind} needs a name", f"{at}: metadata.name")
    namespace = _typed(metadata, "namespace", str, f"{at}: metadata.namespace", "") or "default"
    return _Ident(kind, namespace, _expect(name, str, f"{at}: metadata.name"))


def _parse_service(obj: dict, where: str) -> _Service:
    at = f"{where}: spec"
    spec = _typed(obj, "spec", dict, at, {})
    service_type = _typed(spec, "type", str, f"{at}.type", "ClusterIP")
    if service_type not in SERVICE_TYPES:
        raise InvalidInput(f"type {service_type!r} is unknown: use one of "
                           f"{', '.join(SERVICE_TYPES)}", f"{at}.type")
    # A LoadBalancer may opt out of node ports; a NodePort Service always has them.
    node_port_required = service_type == "NodePort" or (
        service_type == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False)
    ports = _service_ports(spec, at, service_type in NODE_PORT_TYPES, node_port_required)
    external = _external_ips(obj, spec, where)
    cluster_ips = [] if service_type == "ExternalName" else _cluster_ips(spec, at)
    return _Service(cluster_ips, ports, external, _affinity_timeout(spec, at),
                    _traffic_policy(spec, "externalTrafficPolicy", at),
                    _traffic_policy(spec, "internalTrafficPolicy", at),
                    _source_ranges(spec, at), _topology(obj, spec, where))


def _topology(obj: dict, spec: dict, where: str) -> bool:
    """Whether the Service asks for its endpoints' topology hints to be honoured."""
    if _typed(spec, "trafficDistribution", str, f"{where}: spec.trafficDistribution", ""):
        return True
    metadata = _typed(obj, "metadata", dict, f"{where}: metadata", {})
    annotations = _typed(metadata, "annotations", dict, f"{where}: metadata.annotations", {})
    return any(str(annotations.get(name, "")).lower() == "auto"
               for name in TOPOLOGY_ANNOTATIONS)


def _source_ranges(spec: dict, at: str) -> list:
    at = f"{at}.loadBalancerSourceRanges"
    ranges = []
    for i, value in enumerate(_typed(spec, "loadBalancerSourceRanges", list, at, [])):
        try:
            ranges.append(ipaddress.ip_network(_expect(value, str, f"{at}[{i}]").strip(),
                                               strict=False))
        except ValueError:
            raise InvalidInput(f"{value!r} is not a CIDR", f"{at}[{i}]") from None
    return ranges


def _traffic_policy(spec: dict, name: str, at: str) -> str:
    policy = _typed(spec, name, str, f"{at}.{name}", "Cluster")
    if policy.lower() not in ("cluster", "local"):
        raise InvalidInput(f"{policy!r} is not a traffic policy: use Cluster or Local",
                           f"{at}.{name}")
    return policy.lower()


def _affinity_timeout(spec: dict, at: str) -> int:
    affinity = _typed(spec, "sessionAffinity", str, f"{at}.sessionAffinity", "None")
    if affinity not in ("None", "ClientIP"):
        raise InvalidInput(f"{affinity!r} is not a session affinity: use None or ClientIP",
                           f"{at}.sessionAffinity")
    if affinity == "None":
        return 0
    config = _typed(spec, "sessionAffinityConfig", dict, f"{at}.sessionAffinityConfig", {})
    at = f"{at}.sessionAffinityConfig.clientIP"
    timeout = _typed(_typed(config, "clientIP", dict, at, {}), "timeoutSeconds", int,
                     f"{at}.timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
    if not 1 <= timeout <= MAX_AFFINITY_TIMEOUT:
        raise InvalidInput(f"{timeout} is out of range 1-{MAX_AFFINITY_TIMEOUT}",
                           f"{at}.timeoutSeconds")
    return timeout


def _cluster_ips(spec: dict, at: str) -> List[Address]:
    listed = _typed(spec, "clusterIPs", list, f"{at}.clusterIPs", [])
    if listed:
        values, fields = listed, [f"{at}.clusterIPs[{i}]" for i in range(len(listed))]
    else:
        values, fields = [spec.get("clusterIP")], [f"{at}.clusterIP"]
    if "None" in values:    # headless: DNS only, kube-proxy does not proxy it
        return []
    addresses: List[Address] = []
    for value, field in zip(values, fields):
        if value is None or value == "":
            raise InvalidInput(NOT_EXPORTED.format("kp needs the address the API server "
                                                   "assigned"), field)
        address = _address(value, field)
        if any(other.version == address.version for other in addresses):
            raise InvalidInput(f"a second IPv{address.version} cluster IP: a Service has at "
                               "most one per family", field)
        addresses.append(address)
    return addresses


def _external_ips(obj: dict, spec: dict, where: str) -> List[Address]:
    listed = _typed(spec, "externalIPs", list, f"{where}: spec.externalIPs", [])
    addresses = [_address(value, f"{where}: spec.externalIPs[{i}]")
                 for i, value in enumerate(listed)]
    status = _typed(obj, "status", dict, f"{where}: status", {})
    balancer = _typed(status, "loadBalancer", dict, f"{where}: status.loadBalancer", {})
    at = f"{where}: status.loadBalancer.ingress"
    for i, entry in enumerate(_typed(balancer, "ingress", list, at, [])):
        entry = _expect(entry, dict, f"{at}[{i}]")
        if entry.get("ip") is not None:     # a hostname-only ingress is a name kp cannot route
            addresses.append(_address(entry["ip"], f"{at}[{i}].ip"))
    return addresses


def _service_ports(spec: dict, at: str, has_node_ports: bool,
                   node_port_required: bool) -> List[_Port]:
    entries = _typed(spec, "ports", list, f"{at}.ports", [])
    ports: List[_Port] = []
    for index, entry in enumerate(entries):
        field = f"{at}.ports[{index}]"
        entry = _expect(entry, dict, field)
        name = _typed(entry, "name", str, f"{field}.name", "")
        if len(entries) > 1 and not name:
            raise InvalidInput("not set: a Service with several ports must name each one",
                               f"{field}.name")
        port = _Port(field, name, _port_number(entry.get("port"), f"{field}.port"),
                     _protocol(entry.get("protocol"), f"{field}.protocol"),
                     _target_port(entry.get("targetPort"), f"{field}.targetPort"), None)
        if has_node_ports and (node_port_required or entry.get("nodePort") is not None):
            missing = NOT_EXPORTED.format("the API server allocates it")
            node_port = _port_number(entry.get("nodePort"), f"{field}.nodePort", missing)
            port = port._replace(node_port=node_port)
        for other in ports:
            if (other.port, other.protocol) == (port.port, port.protocol):
                raise InvalidInput(f"port {port.port}/{port.protocol.upper()} is given twice (also "
                                   f"{other.field})", f"{field}.port")
            if name and other.name == name:
                raise InvalidInput(f"port name {name!r} is given twice (also {other.field})",
                                   f"{field}.name")
        ports.append(port)
    return ports


def _target_port(value, field: str) -> Union[int, str, None]:
    if value is None or value == "" or (value == 0 and not isinstance(value, bool)):
        return None     # the API server defaults these to the service port
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return _port_number(int(value), field)
    if isinstance(value, str):
        if len(value) <= 15 and PORT_NAME.fullmatch(value):
            return value
        raise InvalidInput(f"{_show(value)} is neither a port number nor a port name (at most 15 "
                           "lowercase letters, digits and '-', with a letter)", field)
    return _port_number(value, field)


def _endpoint_ports(holder: dict, at: str, null_port_allowed: bool) -> Tuple:
    ports = []
    for i, entry in enumerate(_typed(holder, "ports", list, at, [])):
        entry = _expect(entry, dict, f"{at}[{i}]")
        if null_port_allowed and entry.get("port") is None:   # a slice port of null serves no port
            continue
        ports.append((_typed(entry, "name", str, f"{at}[{i}].name", ""),
                      _protocol(entry.get("protocol"), f"{at}[{i}].protocol"),
                      _port_number(entry.get("port"), f"{at}[{i}].port")))
    return tuple(ports)


def _parse_endpoints(obj: dict, where: str) -> List[_Group]:
    groups = []
    for i, subset in enumerate(_typed(obj, "subsets", list, f"{where}: subsets", [])):
        at = f"{where}: subsets[{i}]"
        subset = _expect(subset, dict, at)
        addresses = []
        for j, entry in enumerate(_typed(subset, "addresses", list, f"{at}.addresses", [])):
            entry = _expect(entry, dict, f"{at}.addresses[{j}]")
            addresses.append(_Endpoint(_address(entry.get("ip"), f"{at}.addresses[{j}].ip")))
        groups.append(_Group(_endpoint_ports(subset, f"{at}.ports", False), tuple(addresses)))
    return groups


def _slice_service(obj: dict, where: str) -> str:
    labels = _typed(obj["metadata"], "labels", dict, f"{where}: metadata.labels", {})
    service = labels.get(SERVICE_NAME_LABEL)
    if not isinstance(service, str) or not service:
        raise InvalidInput("not set: an EndpointSlice names its Service in the label "
                           f"{SERVICE_NAME_LABEL}", f"{where}: {SLICE_LABEL_PATH}")
    return service


def _parse_slice(obj: dict, where: str) -> Optional[_Group]:
    """The slice's ready pods, or None for an FQDN slice, which kube-proxy ignores."""
    address_type = obj.get("addressType")
    if not isinstance(address_type, str) or address_type not in SLICE_VERSIONS:
        raise InvalidInput(f"{_show(address_type)} is not an address type: use IPv4, IPv6 or FQDN",
                           f"{where}: addressType")
    version = SLICE_VERSIONS[address_type]
    if version is None:
        return None
    addresses = []
    for i, endpoint in enumerate(_typed(obj, "endpoints", list, f"{where}: endpoints", [])):
        at = f"{where}: endpoints[{i}]"
        endpoint = _expect(endpoint, dict, at)
        listed = _typed(endpoint, "addresses", list, f"{at}.addresses", [])
        parsed = [_address(value, f"{at}.addresses[{j}]", version)
                  for j, value in enumerate(listed)]
        conditions = _typed(endpoint, "conditions", dict, f"{at}.conditions", {})
        # A null ready or serving means unknown, which consumers must treat as true (as
        # kube-proxy does), a null terminating false. One endpoint's addresses are one
        # pod's, and kube-proxy uses the first.
        ready = _typed(conditions, "ready", bool, f"{at}.conditions.ready", True)
        serving = _typed(conditions, "serving", bool, f"{at}.conditions.serving", True)
        terminating = _typed(conditions, "terminating", bool, f"{at}.conditions.terminating",
                             False)
        if parsed:
            addresses.append(_Endpoint(parsed[0], ready, serving, terminating,
                                       _zone_hints(endpoint, at)))
    return _Group(_endpoint_ports(obj, f"{where}: ports", True), tuple(addresses))


def _zone_hints(endpoint: dict, at: str) -> Tuple[str, ...]:
    hints = _typed(endpoint, "hints", dict, f"{at}.hints", {})
    zones = []
    for i, entry in enumerate(_typed(hints, "forZones", list, f"{at}.hints.forZones", [])):
        entry = _expect(entry, dict, f"{at}.hints.forZones[{i}]")
        zones.append(_expect(entry.get("name"), str, f"{at}.hints.forZones[{i}].name"))
    return tuple(zones)


def _parse_all(objs) -> Tuple[Dict[str, _Service], Dict[str, List[_Group]]]:
    """Validate every object; return the Services and the endpoint groups of each, by key."""
    if not isinstance(objs, list):
        raise InvalidInput(f"{_show(objs)} is not a list of objects", "items")
    services: Dict[str, _Service] = {}
    endpoints: Dict[str, List[_Group]] = {}
    slices: Dict[str, List[_Group]] = {}
    owners: List[Tuple[str, str]] = []    # (service key, field), checked after all Services
    seen = set()
    for index, obj in enumerate(objs):
        ident = _identify(obj, index)
        where = ident.where
        if (ident.kind, ident.key) in seen:
            raise InvalidInput(f"given twice: {where} appears more than once in the input; "
                               "keep one", f"{where}: metadata.name")
        seen.add((ident.kind, ident.key))
        if ident.kind == "Service":
            services[ident.key] = _parse_service(obj, where)
        elif ident.kind == "Endpoints":
            endpoints[ident.key] = _parse_endpoints(obj, where)
            owners.append((ident.key, f"{where}: metadata.name"))
        else:
            key = f"{ident.namespace}/{_slice_service(obj, where)}"
            owners.append((key, f"{where}: {SLICE_LABEL_PATH}"))
            group = _parse_slice(obj, where)
            if group is not None:
                slices.setdefault(key, []).append(group)
    for key, field in owners:
        if key not in services:
            raise InvalidInput(f"its Service {key} is not in the input: include the Service in the "
                               "same file or request", field)
    # As kube-proxy: a Service's EndpointSlices when it has any, else its Endpoints.
    return services, {key: slices.get(key) or endpoints.get(key, []) for key in services}


def desired_services(objs: List[dict], zone: Optional[str] = None
                     ) -> Dict[str, List[ServiceVip]]:
    """'namespace/name' -> the VIPs of each Service in objs, sorted by (prefix, port, protocol).
    Headless and ExternalName Services map to []. `zone`: the zone of the node kp serves
    (its label topology.kubernetes.io/zone), for topology hints; None: unknown."""
    services, groups = _parse_all(objs)
    return {key: _service_vips(services[key], groups[key], zone) for key in sorted(services)}


def service_names(objs: List[dict]) -> List[str]:
    """The 'namespace/name' of every Service in objs, sorted, each once."""
    if not isinstance(objs, list):
        raise InvalidInput(f"{_show(objs)} is not a list of objects", "items")
    idents = [_identify(obj, index) for index, obj in enumerate(objs)]
    return sorted({ident.key for ident in idents if ident.kind == "Service"})


def _use_topology(service: _Service, endpoints: List[_Endpoint], zone: Optional[str]) -> bool:
    """kube-proxy's canUseTopology: hints only when every ready endpoint has some and at
    least one is for the node's zone (else the hints are stale or partial: ignore them)."""
    if not service.topology or zone is None:
        return False
    ready = [e for e in endpoints if e.ready]
    return (all(e.zones for e in ready) and any(zone in e.zones for e in ready))


def _usable(service: _Service, endpoints: List[_Endpoint], zone: Optional[str]
            ) -> List[_Endpoint]:
    """kube-proxy's cluster endpoints: the ready ones (in the node's zone when hints are
    honoured); when none is ready, the serving and terminating ones."""
    topology = _use_topology(service, endpoints, zone)
    chosen = [e for e in endpoints if e.ready and (not topology or zone in e.zones)]
    return chosen or [e for e in endpoints if e.serving and e.terminating]


def _service_vips(service: _Service, groups: List[_Group], zone: Optional[str] = None
                  ) -> List[ServiceVip]:
    vips = []
    for port in service.ports:
        endpoints = [(endpoint, number)
                     for group in groups for name, protocol, number in group.ports
                     if (name, protocol) == (port.name, port.protocol)
                     for endpoint in group.addresses]
        for cluster_ip in service.cluster_ips:
            # one family at a time, as kube-proxy runs one proxier per family
            family = [(e, n) for e, n in endpoints if e.address.version == cluster_ip.version]
            usable = set(_usable(service, [e for e, _ in family], zone))
            backends = [(e.address, number) for e, number in family if e in usable]
            vips.append(_vip(service, port, cluster_ip, backends))
    return sorted(vips, key=lambda vip: (vip.prefix, vip.port, vip.protocol))


def _vip(service: _Service, port: _Port, cluster_ip: Address, backends) -> ServiceVip:
    version = cluster_ip.version
    pods = {(address, number) for address, number in backends if address.version == version}
    numbers = sorted({number for _, number in pods})
    if len(numbers) > 1:
        raise InvalidInput(f"the IPv{version} endpoints of this port listen on different ports "
                           f"({', '.join(map(str, numbers))}): kp gives one target port per VIP, "
                           "so the pods must agree", port.field)
    # Without pods an unresolvable named port falls back to the service port: the VIP
    # refuses connections anyway, so the number never reaches anything.
    fallback = port.target if isinstance(port.target, int) else port.port
    return ServiceVip(
        prefix=f"{cluster_ip}/{cluster_ip.max_prefixlen}",
        port=port.port,
        target_port=numbers[0] if numbers else fallback,
        node_port=port.node_port,
        protocol=port.protocol,
        # kube-proxy drops external addresses of a family the Service has no cluster IP of.
        external_ips=_strings(a for a in service.external if a.version == version),
        pods=_strings(address for address, _ in pods),
        affinity_timeout=service.affinity_timeout,
        external_policy=service.external_policy,
        internal_policy=service.internal_policy,
        # kube-proxy applies them to the load balancer's IPs; kp to all external IPs
        source_ranges=tuple(str(n) for n in sorted(
            {n for n in service.source_ranges if n.version == version})))


def _strings(addresses) -> Tuple[str, ...]:
    return tuple(str(address) for address in sorted(set(addresses)))


# -- what kube-proxy reads besides the VIPs ------------------------------------------------

TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


def health_check_ports(objs: List[dict]) -> Dict[str, int]:
    """'namespace/name' -> spec.healthCheckNodePort of each Service kube-proxy serves a
    health check for: type LoadBalancer with externalTrafficPolicy Local (the API server
    allocates the port for those only; elsewhere kube-proxy ignores it, and so does kp)."""
    ports: Dict[str, int] = {}
    for index, obj in enumerate(objs):
        ident = _identify(obj, index)
        if ident.kind != "Service":
            continue
        at = f"{ident.where}: spec"
        spec = _typed(obj, "spec", dict, at, {})
        value = spec.get("healthCheckNodePort")
        if value is None or value == 0:
            continue
        port = _port_number(value, f"{at}.healthCheckNodePort")
        if (_typed(spec, "type", str, f"{at}.type", "ClusterIP") == "LoadBalancer"
                and _traffic_policy(spec, "externalTrafficPolicy", at) == "local"):
            ports[ident.key] = port
    return ports


def change_trigger_times(objs: List[dict]) -> Dict[str, float]:
    """'namespace/name' -> the latest time (seconds since the epoch) at which the
    endpoints controller says a Service's endpoints were changed, from the
    last-change-trigger-time annotation of its EndpointSlices (or Endpoints): where
    kube-proxy's network programming duration starts. Objects without one, or with one
    that is not an RFC 3339 time, give none (kube-proxy skips them too)."""
    times: Dict[str, float] = {}
    for obj in objs:
        if not isinstance(obj, dict) or obj.get("kind") not in ("Endpoints", "EndpointSlice"):
            continue
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict):
            continue
        annotations = metadata.get("annotations")
        labels = metadata.get("labels")
        text = annotations.get(TRIGGER_TIME_ANNOTATION) if isinstance(annotations, dict) else None
        service = (labels.get(SERVICE_NAME_LABEL) if isinstance(labels, dict) else None) \
            if obj["kind"] == "EndpointSlice" else metadata.get("name")
        if not isinstance(text, str) or not isinstance(service, str):
            continue
        try:
            when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        key = f"{metadata.get('namespace') or 'default'}/{service}"
        times[key] = max(when, times.get(key, when))
    return times
