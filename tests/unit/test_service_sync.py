"""Planning a Kubernetes apply against the model: table sizes, and what a plan that cannot
be made leaves behind (nothing)."""
import copy

import pytest

from kp_app import service_sync
from kp_app.errors import Conflict
from kp_app.kubeproxy import KubeProxy
from kp_app.kubernetes import ServiceVip
from kp_app.maglev import MaglevTable


@pytest.mark.parametrize("pods, new_len", [(0, 1024), (10, 1024), (11, 2048), (100, 16384),
                                           (20000, 1 << 20)])
def test_a_new_vip_gets_100_table_entries_per_pod_and_at_least_1024(pods, new_len):
    assert service_sync.new_len_for(pods) == new_len


def spec(prefix="10.96.0.10/32", port=80, target=8080, node_port=None, pods=()):
    return ServiceVip(prefix, port, target, node_port, "tcp", (), tuple(pods))


def test_a_big_service_gets_a_table_big_enough_to_stay_balanced():
    kp = KubeProxy(lambda dpid, msgs: None)
    pods = [f"10.1.0.{i}" for i in range(1, 41)]
    kp.apply_kubernetes({"kind": "List", "items": [
        {"kind": "Service", "metadata": {"name": "big", "namespace": "shop"},
         "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}},
        {"kind": "Endpoints", "metadata": {"name": "big", "namespace": "shop"},
         "subsets": [{"addresses": [{"ip": p} for p in pods], "ports": [{"port": 8080}]}]}]})
    vip = kp.vip("10.96.0.10/32", 80)
    assert (vip["new_len"], vip["target_port"], vip["service"]) == (4096, 8080, "shop/big")
    assert sorted(p["table_entries"] for p in vip["pods"]) == [102] * 24 + [103] * 16


def test_a_plan_that_fails_half_way_leaves_the_model_as_it_was():
    kp = KubeProxy(lambda dpid, msgs: None)
    kp.add_vip("10.96.0.99/32", 81, 8081, node_port=30081)
    kp.model.services.add("shop/web")
    kp.add_vip("10.96.0.10/32", 80, 8080, node_port=30080, service="shop/web")
    before = copy.deepcopy(kp.vips())
    # port 80 would go first (freeing 30080), then port 8000 fails on node port 30081
    with pytest.raises(Conflict, match="node_port 30081"):
        service_sync.plan(kp.model, {"shop/web": [spec(port=8000, node_port=30081)]})
    assert kp.vips() == before


def _web(pods, name="web"):
    return {"kind": "List", "items": [
        {"kind": "Service", "metadata": {"name": name},
         "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}},
        {"kind": "Endpoints", "metadata": {"name": name},
         "subsets": [{"addresses": [{"ip": p} for p in pods], "ports": [{"port": 8080}]}]}]}


@pytest.fixture
def builds(monkeypatch):
    """Every table of pods the model builds, from here on."""
    import kp_app.maglev
    built = []

    class Counted(kp_app.maglev.MaglevTable):
        def __init__(self, pods, new_len):
            super().__init__(pods, new_len)
            if pods:
                built.append(self)
    monkeypatch.setattr(kp_app.maglev, "MaglevTable", Counted)
    return built


def test_the_tables_built_to_try_the_plan_are_the_ones_the_vips_get(builds):
    kp = KubeProxy(lambda dpid, msgs: None)
    kp.apply_kubernetes(_web(["10.1.0.1", "10.1.0.2"]))
    vip = kp.model.find_vip("10.96.0.10/32", 80)
    assert builds == [vip.table]         # built once, on the scratch model, and kept


def test_pods_in_and_out_in_one_apply_build_one_table(builds):
    kp = KubeProxy(lambda dpid, msgs: None)
    kp.apply_kubernetes(_web(["10.1.0.1", "10.1.0.2"]))
    builds.clear()
    answer = kp.apply_kubernetes(_web(["10.1.0.2", "10.1.0.3"]))
    assert [(v["pods_added"], v["pods_removed"]) for v in answer["vips"]] == [
        (["10.1.0.3"], ["10.1.0.1"])]
    # not also [.1, .2, .3] on the way
    assert [[str(p) for p in t.pods] for t in builds] == [["10.1.0.2", "10.1.0.3"]]


def test_tables_built_ahead_are_the_ones_apply_takes():
    kp = KubeProxy(lambda dpid, msgs: None)
    kp.apply_kubernetes(_web(["10.1.0.1", "10.1.0.2"]))
    document = _web(["10.1.0.2", "10.1.0.3"])
    wanted = kp.kubernetes_tables(document)
    assert [(sorted(map(str, pods)), n) for pods, n in wanted] == [
        (["10.1.0.2", "10.1.0.3"], 1024)]
    ahead = []

    def build(todo):
        ahead.extend(MaglevTable(pods, n) for pods, n in todo)
        return ahead
    assert kp.model.tables.build_ahead(wanted, build, min_size=1) == 1
    assert kp.model.tables.build_ahead(wanted, build, min_size=1) == 0     # there already
    built = kp.model.tables.built
    kp.apply_kubernetes(document)
    assert kp.model.find_vip("10.96.0.10/32", 80).table is ahead[0]
    assert kp.model.tables.built == built      # found, not built again
    assert kp.kubernetes_tables({"kind": "Pod"}) == []   # apply itself says why
    new = _web(["10.1.0.5"], name="other")
    new["items"][0]["spec"]["clusterIP"] = "10.96.0.11"
    (pods, n), = kp.kubernetes_tables(new)
    assert (list(map(str, pods)), n) == (["10.1.0.5"], 1024)


def test_an_endpoint_that_goes_ends_its_udp_sessions_and_drains_its_tcp_ones():
    from kp_app import frames, pipeline
    from kp_app.node import gateway_mac
    from kp_app.pipeline import FlowDelete
    from test_node import l4_packet
    sent = []
    kp = KubeProxy(lambda dpid, msgs: sent.extend(msgs))
    kp.set_conf(node_ip="10.0.0.1")
    kp.switch_connected(1, {1: "c1", 2: "p1", 3: "p2"})
    gw = gateway_mac(1)

    def dns(pods):
        return {"kind": "List", "items": [
            {"kind": "Service", "metadata": {"name": "dns"},
             "spec": {"clusterIP": "10.96.0.53", "ports": [
                 {"name": "tcp", "port": 53, "protocol": "TCP"},
                 {"name": "udp", "port": 53, "protocol": "UDP"}]}},
            {"kind": "Endpoints", "metadata": {"name": "dns"}, "subsets": [{
                "addresses": [{"ip": p} for p in pods],
                "ports": [{"name": "tcp", "port": 53, "protocol": "TCP"},
                          {"name": "udp", "port": 53, "protocol": "UDP"}]}]}]}
    kp.apply_kubernetes(dns(["10.0.0.101"]))
    kp.packet_in(1, 2, frames.arp(2, "00:00:00:00:01:01", "10.0.0.101", gw, "10.0.0.1"))
    kp.packet_in(1, 3, frames.arp(2, "00:00:00:00:01:02", "10.0.0.102", gw, "10.0.0.1"))
    kp.packet_in(1, 1, frames.arp(2, "00:00:00:00:00:11", "10.0.0.11", gw, "10.0.0.1"))
    for proto in (frames.TCP, frames.UDP):
        kp.packet_in(1, 1, l4_packet("10.0.0.11", 40000, "10.96.0.53", 53, proto=proto,
                                     eth_src="00:00:00:00:00:11", eth_dst=gw))
    assert sorted(s["protocol"] for s in kp.sessions()["sessions"]) == ["tcp", "udp"]
    sent.clear()
    kp.apply_kubernetes(dns(["10.0.0.102"]))          # .101 is no longer an endpoint
    assert [s["protocol"] for s in kp.sessions()["sessions"]] == ["tcp"]
    deleted = [m for m in sent if isinstance(m, FlowDelete)
               and pipeline.cookie_parts(m.cookie)[0] == pipeline.KIND_FORWARD]
    assert [dict(m.match)["ip_proto"] for m in deleted] == [17]
    pods = {p["address"]: p["state"] for p in kp.vip("10.96.0.53/32", 53)["pods"]}
    assert pods == {"10.0.0.101": "draining", "10.0.0.102": "active"}
