"""Kubernetes objects read as kube-proxy reads them: Services, Endpoints and EndpointSlices
in, the VIPs kp should have out; every malformed input an InvalidInput naming where."""
import copy

import pytest

from kp_app.errors import InvalidInput
from kp_app.kubernetes import ServiceVip, desired_services, objects, service_names

WEB = "Service default/web: "
SLICE = "EndpointSlice default/web-a: "
LABEL = "metadata.labels[kubernetes.io/service-name]"


def port(number=80, name="http", **extra):
    return {"name": name, "port": number, **extra}


def service(name="web", namespace="default", ports=None, status=None, **spec):
    ports = [port(targetPort="web")] if ports is None else ports
    spec = {"clusterIP": "10.96.0.10", "ports": ports, **spec}
    obj = {"apiVersion": "v1", "kind": "Service", "spec": spec,
           "metadata": {"name": name, "namespace": namespace}}
    return obj if status is None else {**obj, "status": status}


def endpoints(subsets, name="web"):
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": "default"}, "subsets": subsets}


def subset(ips, ports, not_ready=()):
    return {"addresses": [{"ip": ip} for ip in ips],
            "notReadyAddresses": [{"ip": ip} for ip in not_ready], "ports": ports}


def endpoint(*addresses, **conditions):
    return {"addresses": list(addresses), "conditions": conditions}


def eslice(name, endpoints_, ports, address_type="IPv4", service_name="web"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": address_type, "endpoints": endpoints_, "ports": ports}


def vip(prefix="10.96.0.10/32", port=80, target_port=8080, pods=(), protocol="tcp",
        node_port=None, external_ips=()):
    return ServiceVip(prefix, port, target_port, node_port, protocol,
                      tuple(external_ips), tuple(pods))


def test_endpoints_resolve_a_named_target_port():
    ready = ["10.0.0.2", "10.0.0.10", "10.0.0.2"]
    objs = [service(), endpoints([subset(ready, [port(8080)], not_ready=["10.0.0.3"])])]
    # ipaddress order, not text order; the duplicate and the not-ready address are gone
    assert desired_services(objs) == {"default/web": [vip(pods=["10.0.0.2", "10.0.0.10"])]}


def test_ports_match_endpoints_by_name_and_protocol():
    dns = service("kube-dns", "kube-system", [port(53, "dns", protocol="UDP", targetPort=53),
                                              port(53, "dns-tcp", protocol="TCP", targetPort=53)])
    slice_ = eslice("kube-dns-x", [endpoint("10.0.0.5")], service_name="kube-dns",
                    ports=[port(5353, "dns", protocol="UDP"), port(5354, "dns-tcp")])
    slice_["metadata"]["namespace"] = "kube-system"
    assert desired_services([dns, slice_])["kube-system/kube-dns"] == [
        vip(port=53, target_port=5354, pods=["10.0.0.5"]),
        vip(port=53, target_port=5353, pods=["10.0.0.5"], protocol="udp")]


def test_sctp_service_ports_become_sctp_vips():
    """kube-proxy proxies SCTP: a Service port of protocol SCTP is an SCTP VIP, its
    endpoints matched by name and protocol."""
    ngap = service("amf", ports=[port(38412, "ngap", protocol="SCTP", targetPort=38412),
                                 port(80, "http", targetPort=8080)])
    slice_ = eslice("amf-x", [endpoint("10.0.0.7")], service_name="amf",
                    ports=[port(38412, "ngap", protocol="SCTP"), port(8080)])
    assert desired_services([ngap, slice_])["default/amf"] == [
        vip(port=80, target_port=8080, pods=["10.0.0.7"]),
        vip(port=38412, target_port=38412, pods=["10.0.0.7"], protocol="sctp")]


def test_slice_readiness_true_null_and_absent_count_false_does_not():
    listed = [endpoint("10.0.0.1", ready=True), endpoint("10.0.0.2", ready=None),
              endpoint("10.0.0.3"), endpoint("10.0.0.4", ready=False), {"addresses": ["10.0.0.5"]}]
    objs = [service(), eslice("web-a", listed, [port(8080)])]
    assert desired_services(objs)["default/web"][0].pods == (
        "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5")


def test_slices_are_preferred_over_endpoints():
    objs = [service(), endpoints([subset(["10.0.0.1"], [port(8080)])]),
            eslice("web-a", [endpoint("10.0.0.9")], [port(9090)])]
    assert desired_services(objs)["default/web"] == [vip(target_port=9090, pods=["10.0.0.9"])]


def test_fqdn_slices_and_null_slice_ports_serve_nothing():
    objs = [service(), endpoints([subset(["10.0.0.1"], [port(8080)])]),
            eslice("web-f", [endpoint("db.example.com")], [port(8080)], address_type="FQDN"),
            eslice("web-n", [endpoint("10.0.0.9")], [port(None)])]
    assert desired_services(objs)["default/web"] == [vip(target_port=80, pods=())]


def test_dual_stack_splits_pods_by_family():
    objs = [service(clusterIPs=["10.96.0.10", "fd00:96:0::a"]),
            eslice("web-4", [endpoint("10.0.0.1")], [port(8080)]),
            eslice("web-6", [endpoint("fd00:10::2"), endpoint("fd00:10::1")], [port(8080)], "IPv6")]
    assert desired_services(objs)["default/web"] == [
        vip(pods=["10.0.0.1"]), vip("fd00:96::a/128", pods=["fd00:10::1", "fd00:10::2"])]


def test_node_port_and_load_balancer_split_external_addresses_by_family():
    ingress = [{"ip": "192.0.2.9"}, {"hostname": "lb.example"}, {"ip": "2001:db8::1"}]
    balancer = service("lb", type="LoadBalancer", clusterIPs=["10.96.0.20", "fd00:96::20"],
                       ports=[port(443, targetPort=8443, nodePort=30443)],
                       externalIPs=["192.0.2.9", "2001:db8::9", "192.0.2.1"],
                       status={"loadBalancer": {"ingress": ingress}})
    node_port = service("np", type="NodePort", ports=[port(80, targetPort=8080, nodePort=30080)])
    cluster_ip = service("cip", ports=[port(80, targetPort=8080, nodePort=30080)])
    assert desired_services([balancer, node_port, cluster_ip]) == {
        "default/cip": [vip()],
        "default/lb": [vip("10.96.0.20/32", 443, 8443, node_port=30443,
                           external_ips=["192.0.2.1", "192.0.2.9"]),
                       vip("fd00:96::20/128", 443, 8443, node_port=30443,
                           external_ips=["2001:db8::1", "2001:db8::9"])],
        "default/np": [vip(node_port=30080)]}


def test_a_load_balancer_may_opt_out_of_node_ports():
    objs = [service(type="LoadBalancer", allocateLoadBalancerNodePorts=False,
                    ports=[port(80, targetPort=8080)])]
    assert desired_services(objs)["default/web"] == [vip()]


@pytest.mark.parametrize("target_port, expected",
                         [(8080, 8080), ("8080", 8080), ("web", 80), (None, 80)])
def test_target_port_without_endpoints(target_port, expected):
    objs = [service(ports=[port(80, targetPort=target_port)])]
    assert desired_services(objs)["default/web"] == [vip(target_port=expected)]


def test_headless_and_external_name_have_no_vips_but_are_listed():
    objs = [service("headless", clusterIP="None"),
            service("ext", type="ExternalName", clusterIP=None, externalName="db.example.com"),
            endpoints([subset(["10.0.0.1"], [port(8080)])], name="headless")]
    assert desired_services(objs) == {"default/ext": [], "default/headless": []}


def test_objects_flattens_documents_lists_and_service_lists():
    one, two, three = service("a"), service("b"), endpoints([], name="a")
    docs = [None, one, {"apiVersion": "v1", "kind": "List", "items": [two]},
            {"kind": "ServiceList", "items": [three]}, [None, service("c")]]
    assert [o["metadata"]["name"] for o in objects(docs)] == ["a", "b", "a", "c"]
    assert objects(one) == [one] and objects(None) == []


@pytest.mark.parametrize("document, field", [
    ("kind: Service", None), ([service(), 42], "[1]"),
    ({"kind": "ServiceList", "items": "x"}, "items"),
    ([None, {"kind": "List", "items": 1}], "[1].items"),
    ([{"kind": "List", "items": [None]}], "[0].items[0]")])
def test_objects_rejects_what_is_not_objects(document, field):
    with pytest.raises(InvalidInput) as error:
        objects(document)
    assert error.value.field == field


def test_service_names():
    objs = [service("b", "prod"), endpoints([], name="b"), service("a"), service("a")]
    assert service_names(objs) == ["default/a", "prod/b"]
    with pytest.raises(InvalidInput) as error:
        service_names([service(), {"kind": "Pod", "metadata": {"name": "p"}}])
    assert error.value.field == "items[1]: kind"


ERRORS = [
    ([{"kind": "Deployment", "metadata": {"name": "x"}}], "items[0]: kind", "Deployment"),
    ([service(), {"metadata": {"name": "x"}}], "items[1]: kind", "kind"),
    ([{"kind": "Service", "metadata": {}}], "items[0]: metadata.name", "name"),
    (["Service"], "items[0]", "not a Kubernetes object"),
    ([service(clusterIP=None)], WEB + "spec.clusterIP", "kubectl get svc"),
    ([service(clusterIP="10.96.0.300")], WEB + "spec.clusterIP", "not an IP"),
    ([service(clusterIPs=["10.96.0.1", "10.96.0.2"])], WEB + "spec.clusterIPs[1]", "IPv4"),
    ([service(type="Magic")], WEB + "spec.type", "Magic"),
    ([service(ports=[port(80), port(53, "dns", protocol="QUIC")])], WEB + "spec.ports[1].protocol",
     "TCP, UDP or SCTP"),
    ([service(type="NodePort")], WEB + "spec.ports[0].nodePort", "API server allocates"),
    ([service(ports=[port(70000)])], WEB + "spec.ports[0].port", "1-65535"),
    ([service(ports=[port(80), port(80, "b")])], WEB + "spec.ports[1].port", "twice"),
    ([service(ports=[port(80), port(81, None)])], WEB + "spec.ports[1].name", "name each"),
    ([service(ports=[port(targetPort="Not_A_Name")])], WEB + "spec.ports[0].targetPort",
     "port name"),
    ([service(externalIPs=["nope"])], WEB + "spec.externalIPs[0]", "not an IP"),
    ([service(), service()], WEB + "metadata.name", "given twice"),
    ([service(), {**eslice("web-a", [], []), "metadata": {"name": "web-a"}}], SLICE + LABEL,
     "label"),
    ([endpoints([])], "Endpoints default/web: metadata.name", "include the Service"),
    ([service(), eslice("web-a", [], [], service_name="api")], SLICE + LABEL, "default/api"),
    ([service(), eslice("web-a", [endpoint("10.0.0.1")], [port(8080)]),
      eslice("web-b", [endpoint("10.0.0.2")], [port(8081)])], WEB + "spec.ports[0]", "8080, 8081"),
    ([service(), eslice("web-a", [endpoint("fd00::1")], [])], SLICE + "endpoints[0].addresses[0]",
     "IPv6"),
    ([service(), eslice("web-a", [], [], address_type="IPv5")], SLICE + "addressType", "IPv5"),
    ([service(), endpoints([subset(["10.0.0.1"], [port("8080")])])],
     "Endpoints default/web: subsets[0].ports[0].port", "not a port"),
    # malformed types
    ([{**service(), "spec": []}], WEB + "spec", "mapping"),
    ([service(ports="80")], WEB + "spec.ports", "list"),
    ([service(ports=[port("eighty")])], WEB + "spec.ports[0].port", "not a port"),
    ([service(ports=[port(True)])], WEB + "spec.ports[0].port", "not a port"),
    ([service(), eslice("web-a", [{"addresses": "10.0.0.1"}], [])],
     SLICE + "endpoints[0].addresses", "list"),
    ([service(), eslice("web-a", [endpoint("10.0.0.1", ready="yes")], [])],
     SLICE + "endpoints[0].conditions.ready", "true or false"),
    ([service(), endpoints([{"addresses": [{"ip": None}]}])],
     "Endpoints default/web: subsets[0].addresses[0].ip", "not set"),
    ([service(sessionAffinity="Sticky")], WEB + "spec.sessionAffinity", "None or ClientIP"),
    ([service(externalTrafficPolicy="Nearest")], WEB + "spec.externalTrafficPolicy",
     "Cluster or Local"),
    ([service(internalTrafficPolicy=1)], WEB + "spec.internalTrafficPolicy", "a string"),
    ([service(loadBalancerSourceRanges=["10.0.0.0/33"])],
     WEB + "spec.loadBalancerSourceRanges[0]", "not a CIDR"),
    ([service(sessionAffinity="ClientIP",
              sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}})],
     WEB + "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "out of range 1-86400"),
]


@pytest.mark.parametrize("config, timeout", [(None, 10800), ({"clientIP": {}}, 10800),
                                             ({"clientIP": {"timeoutSeconds": 60}}, 60)])
def test_client_ip_session_affinity_and_its_timeout(config, timeout):
    extra = {} if config is None else {"sessionAffinityConfig": config}
    (vip_,) = desired_services([service(sessionAffinity="ClientIP", **extra)])["default/web"]
    assert vip_.affinity_timeout == timeout
    (none,) = desired_services([service(sessionAffinity="None")])["default/web"]
    assert none.affinity_timeout == 0


@pytest.mark.parametrize("objs, field, words", ERRORS, ids=[e[1] for e in ERRORS])
def test_errors_name_the_field(objs, field, words):
    with pytest.raises(InvalidInput) as error:
        desired_services(objs)
    assert error.value.field == field
    assert words in error.value.message


def paths(value, path=()):
    """Every path into nested dicts and lists, so each branch and leaf can be broken in turn."""
    yield path
    if isinstance(value, (dict, list)):
        for key, child in (value.items() if isinstance(value, dict) else enumerate(value)):
            yield from paths(child, path + (key,))


def replaced(document, path, bad):
    if not path:
        return bad
    document = copy.deepcopy(document)
    holder = document
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = bad
    return document


def test_malformed_values_anywhere_raise_only_invalid_input():
    valid = [service(type="LoadBalancer", clusterIPs=["10.96.0.10", "fd00::a"],
                     ports=[port(80, targetPort="web", nodePort=30080)], externalIPs=["192.0.2.1"],
                     status={"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}}),
             endpoints([subset(["10.0.0.1"], [port(8080)], not_ready=["10.0.0.2"])]),
             eslice("web-a", [endpoint("10.0.0.3", ready=True)], [port(8080, protocol="TCP")])]
    assert desired_services(valid)
    rejected = 0
    for path in paths(valid):
        for bad in (None, [], {}, "x", 0, -1, True, 70000, "None", ["x"], [{}], {"x": 1}):
            try:        # anything but InvalidInput escapes and fails the test
                desired_services(replaced(valid, path, bad))
            except InvalidInput as error:
                assert isinstance(error.field, str)
                rejected += 1
    assert rejected > 100


def test_external_traffic_policy():
    (local,) = desired_services([service(type="NodePort", externalTrafficPolicy="Local",
                                         ports=[port(targetPort=8080, nodePort=30080)])]
                                )["default/web"]
    assert local.external_policy == "local" and local.node_port == 30080
    (default,) = desired_services([service()])["default/web"]
    assert default.external_policy == default.internal_policy == "cluster"
    (internal,) = desired_services([service(internalTrafficPolicy="Local")])["default/web"]
    assert internal.internal_policy == "local" and internal.external_policy == "cluster"


def test_load_balancer_source_ranges_go_with_their_family():
    (v4, v6) = desired_services([service(
        clusterIPs=["10.96.0.10", "fd00::a"],
        loadBalancerSourceRanges=["fd00:1::/64", "10.1.0.7/16", "10.2.0.0/16"])]
    )["default/web"]
    assert v4.source_ranges == ("10.1.0.0/16", "10.2.0.0/16")    # as networks, sorted
    assert v6.source_ranges == ("fd00:1::/64",)
