"""The pure part of watching a cluster: folding lists and events into a store, diffing a
relist, turning Node objects into node addresses, and a sync into a real KubeProxy
(one batch through the checked plan; bad objects left out; hand-made VIPs kept)."""

import pytest

from kp_app.cluster_state import NODE, SERVICE, SLICE, ClusterStore, node_addresses, node_dpid
from kp_app.cluster_sync import ClusterSync
from kp_app.kubeproxy import KubeProxy
from test_kubernetes import endpoint, eslice, port, service


def versioned(obj, rv):
    obj = dict(obj)
    obj["metadata"] = dict(obj["metadata"], resourceVersion=str(rv))
    return obj


def node(name="n1", cidr="10.0.1.0/24", internal="192.168.0.1", labels=None,
         annotations=None):
    return {"kind": "Node", "metadata": {"name": name, "labels": labels or {},
                                         "annotations": annotations or {}},
            "spec": {"podCIDR": cidr} if cidr else {},
            "status": {"addresses": [{"type": "InternalIP", "address": internal}]}}


def slice_a(*ips, **conditions):
    return eslice("web-a", [endpoint(ip, **conditions) for ip in ips], [port(8080)])


def test_events_fold_and_mark_the_services_they_touch():
    store = ClusterStore()
    store.event(SERVICE, "ADDED", service())
    store.event(SLICE, "ADDED", slice_a("10.0.0.1"))
    store.event(SLICE, "BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    dirty = store.take_dirty()
    assert (dirty.services, dirty.service_changes, dirty.endpoint_changes) == (
        {"default/web"}, 1, 1)
    assert not store.take_dirty()
    moved = slice_a("10.0.0.1")
    moved["metadata"]["labels"] = {"kubernetes.io/service-name": "api"}
    store.event(SLICE, "MODIFIED", moved)       # both the old and the new owner
    assert store.take_dirty().services == {"default/web", "default/api"}
    assert store.slices_of["default/web"] == {}
    store.event(SLICE, "DELETED", moved)
    assert store.slices_of["default/api"] == {}


def test_a_relist_marks_only_what_changed_by_resource_version():
    store = ClusterStore()
    other = service(name="api")
    store.replace(SERVICE, [versioned(service(), 1), versioned(other, 2)])
    store.take_dirty()
    assert store.replace(SERVICE, [versioned(service(), 1), versioned(other, 2)]) == 0
    assert not store.take_dirty()
    assert store.replace(SERVICE, [versioned(service(), 5)]) == 2     # changed, api gone
    assert store.take_dirty().services == {"default/web", "default/api"}
    assert list(store.objects[SERVICE]) == ["default/web"]


def test_desired_leaves_out_a_bad_slice_and_a_bad_service_alone():
    store = ClusterStore()
    store.event(SERVICE, "ADDED", service())
    store.event(SERVICE, "ADDED", service(name="bad", ports=[port(0)]))
    store.event(SLICE, "ADDED", slice_a("10.0.0.1"))
    store.event(SLICE, "ADDED", eslice("web-b", [endpoint("not-an-ip")], [port(8080)]))
    desired, skipped = store.desired({"default/web", "default/bad", "default/gone"})
    assert [v.pods for v in desired["default/web"]] == [("10.0.0.1",)]
    assert desired["default/gone"] == [] and "default/bad" not in desired
    assert [what for what, _ in skipped] == ["Service default/bad",
                                             "EndpointSlice default/web-b"]


def test_node_addresses_from_the_pod_cidr_and_internal_ip():
    v4, v6 = node_addresses(node())
    assert (str(v4), v6) == ("10.0.1.1/24", None)      # the pod CIDR's gateway
    inside = node(internal="10.0.1.7")
    inside["spec"] = {"podCIDRs": ["10.0.1.0/24", "fd00:1::/64"]}
    assert tuple(map(str, node_addresses(inside))) == ("10.0.1.7/24", "fd00:1::1/64")
    assert node_addresses(node(cidr=None)) == (None, None)
    with pytest.raises(ValueError, match="not a CIDR"):
        node_addresses(node(cidr="10.0.1.0/33"))
    assert node_dpid(node(annotations={"kp.io/dpid": "0x2a"})) == 42
    assert node_dpid(node()) is None
    with pytest.raises(ValueError, match="kp.io/dpid"):
        node_dpid(node(annotations={"kp.io/dpid": "two"}))


@pytest.fixture
def kp():
    sent = []
    proxy = KubeProxy(lambda dpid, msgs: sent.append((dpid, msgs)))
    proxy.sent = sent
    proxy.switch_connected(1, {1: "eth1"})
    return proxy


def test_a_sync_applies_a_batch_and_a_resync_sends_nothing(kp):
    store = ClusterStore()
    sync = ClusterSync(kp, "n1", wall_clock=lambda: 1000.0)
    store.replace(SERVICE, [versioned(service(), 1)])
    store.replace(SLICE, [versioned(slice_a("10.0.0.1", "10.0.0.2"), 2)])
    store.replace(NODE, [versioned(node(labels={"topology.kubernetes.io/zone": "a"}), 3)])
    sync.pending(store)
    assert (sync.status.service_changes_pending, sync.status.endpoint_changes_pending) == (1, 1)
    result = sync.sync(store, prune=True)
    assert [v["action"] for v in result["services"]] == ["created"] and result["nodes"] == ["n1"]
    assert kp.conf()["node_ip"] == "10.0.1.1"
    assert sync.status.last_sync == 1000.0 and sync.status.endpoint_changes_total == 1
    assert "observers" not in sync.status.to_dict()
    durations = []
    sync.status.observers.append(durations.append)
    kp.sent.clear()
    store.mark_all()
    assert sync.sync(store) == {"services": [], "nodes": [], "skipped": []}
    assert kp.sent == []
    assert durations == [sync.status.last_sync_duration] and sync.status.syncs == 2


def test_hand_made_vips_are_never_taken_over_and_others_still_apply(kp):
    kp.add_vip("10.96.0.10/32", 80, 8080)           # ku vip: the same VIP as default/web
    store = ClusterStore()
    store.event(SERVICE, "ADDED", service())
    store.event(SERVICE, "ADDED", service(name="api", clusterIP="10.96.0.11"))
    result = ClusterSync(kp).sync(store)
    assert [v["service"] for v in result["services"]] == ["default/api"]
    assert [what for what, _ in result["skipped"]] == ["Service default/web"]
    assert kp.vip("10.96.0.10/32", 80)["service"] is None
    store.event(SERVICE, "DELETED", service())
    ClusterSync(kp).sync(store)
    assert kp.vip("10.96.0.10/32", 80)["service"] is None     # still there, by hand


def test_a_deleted_service_takes_its_vips_and_a_prune_forgets_stale_ones(kp):
    kp.apply_kubernetes([service(name="old", clusterIP="10.96.0.12")])  # e.g. a state file
    store = ClusterStore()
    store.event(SERVICE, "ADDED", service())
    sync = ClusterSync(kp)
    sync.sync(store, prune=True)
    assert kp.model.services == {"default/web"}
    store.event(SERVICE, "DELETED", service())
    assert [v["action"] for v in sync.sync(store)["services"]] == ["deleted"]
    assert kp.model.services == set() and kp.vips() == []


def test_a_node_by_annotation_gives_its_switch_addresses_not_over_hand_set_ones(kp):
    store = ClusterStore()
    store.event(NODE, "ADDED", node("n2", cidr="10.0.2.0/24",
                                    annotations={"kp.io/dpid": "2"}))
    store.event(NODE, "ADDED", node("n3", cidr="10.0.3.0/24"))   # not ours, no dpid
    kp.set_conf(node_ip="10.9.9.1/24", dpid=3)
    sync = ClusterSync(kp, "n1")
    assert sync.sync(store)["nodes"] == ["n2"]
    assert kp.conf()["nodes"]["2"]["node_ip"] == "10.0.2.1"
    assert kp.conf()["node_ip"] is None
    store.event(NODE, "DELETED", node("n2", annotations={"kp.io/dpid": "2"}))
    sync.sync(store)
    assert "2" not in kp.conf()["nodes"]
    assert kp.conf()["nodes"]["3"]["node_ip"] == "10.9.9.1"


def test_the_zone_of_our_node_changes_which_pods_are_used(kp):
    store = ClusterStore()
    hinted = [{**endpoint(ip), "hints": {"forZones": [{"name": z}]}}
              for ip, z in (("10.0.0.1", "a"), ("10.0.0.2", "b"))]
    store.event(SERVICE, "ADDED", service(trafficDistribution="PreferClose"))
    store.event(SLICE, "ADDED", eslice("web-a", hinted, [port(8080)]))
    store.event(NODE, "ADDED", node(labels={"topology.kubernetes.io/zone": "a"}))
    sync = ClusterSync(kp, "n1")
    sync.sync(store)
    assert [p["address"] for p in kp.vip("10.96.0.10/32", 80)["pods"]] == ["10.0.0.1"]
    store.event(NODE, "MODIFIED", node(labels={"topology.kubernetes.io/zone": "b"}))
    sync.sync(store)
    active = [p["address"] for p in kp.vip("10.96.0.10/32", 80)["pods"]
              if p["state"] == "active"]
    assert active == ["10.0.0.2"]


def test_node_addresses_from_the_cluster_are_not_kept_as_set_by_hand(kp):
    from kp_app import state_file
    store = ClusterStore()
    store.event(NODE, "ADDED", node())
    ClusterSync(kp, "n1").sync(store)
    assert kp.conf()["node_ip"] == "10.0.1.1"
    saved = state_file.dump(kp)["conf"]
    assert saved["node_ip"] is None         # the watch gives it again after a restart
    kp.set_conf(node_ip="10.0.7.1/24")      # by hand: kept, and the Node no longer wins
    assert state_file.dump(kp)["conf"]["node_ip"] == "10.0.7.1/24"
    store.event(NODE, "MODIFIED", node(cidr="10.0.8.0/24"))
    ClusterSync(kp, "n1").sync(store)
    assert kp.conf()["node_ip"] == "10.0.7.1"


def test_a_sync_hands_the_tables_it_needs_to_be_built_ahead(kp):
    from kp_app.maglev import MaglevTable
    asked = []

    def build(wanted):
        asked.extend(wanted)
        return [MaglevTable(pods, new_len) for pods, new_len in wanted]

    store = ClusterStore()
    store.event(SERVICE, "ADDED", service())
    store.event(SLICE, "ADDED", slice_a(*[f"10.0.2.{i}" for i in range(1, 101)]))
    ClusterSync(kp, build=build).sync(store)
    assert [(len(pods), new_len) for pods, new_len in asked] == [(100, 16384)]
    (vip,) = kp.vips()
    assert vip["new_len"] == 16384 and len(vip["pods"]) == 100


def test_a_few_bad_services_among_many_cost_few_plans(kp, monkeypatch):
    kp.add_vip("10.96.3.7/32", 80, 8080)            # by hand: s007 wants it
    store = ClusterStore()
    for i in range(64):
        store.event(SERVICE, "ADDED", service(name=f"s{i:03}", clusterIP=f"10.96.3.{i}"))
    plans = []
    apply = kp.apply_services
    monkeypatch.setattr(kp, "apply_services", lambda *a, **k: plans.append(1) or apply(*a, **k))
    result = ClusterSync(kp).sync(store)
    assert [what for what, _ in result["skipped"]] == ["Service default/s007"]
    assert len(result["services"]) == 63 and len(plans) <= 2 * 7 + 1


def test_a_resync_reads_again_only_objects_of_another_resource_version(kp, monkeypatch):
    from kp_app import kubernetes
    store = ClusterStore()
    store.replace(SERVICE, [versioned(service(), 1), versioned(service(name="api",
                                                                       clusterIP="10.96.0.11"), 2)])
    store.replace(SLICE, [versioned(slice_a("10.0.0.1"), 3)])
    sync = ClusterSync(kp)
    sync.sync(store)
    read = []
    parse = kubernetes.desired_services
    monkeypatch.setattr(kubernetes, "desired_services",
                        lambda objs, zone=None: read.append(len(objs)) or parse(objs, zone))
    store.mark_all()
    assert sync.sync(store)["services"] == [] and read == []
    store.replace(SLICE, [versioned(slice_a("10.0.0.2"), 4)])
    assert [v["pods_added"] for v in sync.sync(store)["services"]] == [["10.0.0.2"]]
    assert read == [2]          # web and its slice, not api
