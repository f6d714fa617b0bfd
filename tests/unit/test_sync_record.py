"""kp_app.sync_record through KubeProxy: what counts as a sync, what it counts, and
kube-proxy's health decision, with the clocks injected."""
import copy
import datetime
import os

import pytest
import yaml

from kp_app import health, state_file
from kp_app.errors import KpError
from kp_app.kubeproxy import KubeProxy
from kp_app.sync_record import Histogram, SyncRecord
from test_node import Clock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def clock():
    clock = Clock()
    clock.now = 1000.0
    return clock


@pytest.fixture
def kp(clock):
    # the same clock as monotonic and wall time: ages and timestamps agree
    return KubeProxy(lambda dpid, msgs: None, clock=clock, wall=clock)


def web() -> list:
    with open(os.path.join(ROOT, "tests", "manifests", "web.yaml")) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def test_each_change_is_one_sync_and_nested_calls_are_not_more(kp):
    kp.add_vip("10.96.0.20/32", 80, 8080, protocol="tcp")
    kp.add_pods("10.96.0.20/32", 80, ["10.0.0.101"])
    assert kp.syncs.syncs == 2
    kp.apply_kubernetes(web())       # several add_vip/add_pods inside
    assert kp.syncs.syncs == 3 and kp.syncs.duration.count == 3


def test_a_refused_change_is_no_sync(kp):
    with pytest.raises(KpError):
        kp.add_vip("10.96.0.300/32", 80)
    assert (kp.syncs.syncs, kp.syncs.refused, kp.syncs.last_synced) == (0, 1, None)


def test_apply_counts_service_and_endpoint_changes(kp, clock):
    docs = web()
    kp.apply_kubernetes(docs)
    assert (kp.syncs.service_changes_total, kp.syncs.endpoint_changes_total) == (1, 1)
    kp.apply_kubernetes(docs)        # nothing changed: nothing counted
    assert (kp.syncs.service_changes_total, kp.syncs.endpoint_changes_total) == (1, 1)
    fewer = copy.deepcopy(docs)
    slice_ = next(d for d in fewer if d["kind"] == "EndpointSlice")
    slice_["endpoints"] = slice_["endpoints"][:1]
    changed = (datetime.datetime.fromtimestamp(clock.now - 3, datetime.timezone.utc)
               .strftime("%Y-%m-%dT%H:%M:%SZ"))
    slice_.setdefault("metadata", {}).setdefault("annotations", {})[
        "endpoints.kubernetes.io/last-change-trigger-time"] = changed
    kp.apply_kubernetes(fewer)
    assert (kp.syncs.service_changes_total, kp.syncs.endpoint_changes_total) == (1, 2)
    # network programming: from the cluster's change to the end of the sync, 3 s
    assert kp.syncs.programming.count == 1 and kp.syncs.programming.sum == pytest.approx(3)
    kp.delete_kubernetes(fewer)
    assert kp.syncs.service_changes_total == 2


def test_a_state_restore_is_one_sync_and_keeps_health_check_ports(kp):
    docs = web()
    docs[0]["spec"].update(type="LoadBalancer", externalTrafficPolicy="Local",
                           healthCheckNodePort=31999)
    kp.set_conf(udp_timeout=30)
    kp.apply_kubernetes(docs)
    data = state_file.dump(kp)
    fresh = KubeProxy(lambda dpid, msgs: None)
    state_file.restore(fresh, data)
    assert fresh.syncs.syncs == 1 and fresh.model.vips.keys() == kp.model.vips.keys()
    assert fresh.health_check_ports() == {"shop/web": 31999}
    assert fresh.conf()["udp_timeout"] == 30
    data["health_check_ports"] = {"shop/web": "31999"}
    with pytest.raises(KpError) as error:
        state_file.restore(KubeProxy(lambda dpid, msgs: None), data)
    assert error.value.field == "health_check_ports"


def test_health_is_kube_proxys(clock):
    record = SyncRecord(clock, clock, health_timeout=60)
    assert record.health() == (True, None, clock.now)      # healthy while starting
    record.queued(services=1, endpoints=2)
    clock.now += 59
    assert record.health()[0] is True                      # queued, not late yet
    clock.now += 1
    assert record.health() == (False, None, clock.now)     # late: 503
    assert (record.service_changes_pending, record.endpoint_changes_pending) == (1, 2)
    with record.syncing():
        clock.now += 0.5
    assert record.health() == (True, clock.now, clock.now)
    assert record.endpoint_changes_pending == 0 and record.duration.sum == 0.5


def test_health_answers_as_kube_proxy(clock):
    record = SyncRecord(clock, clock, health_timeout=10)
    status, headers, body = health.proxy_health(record, "/healthz")
    assert status == 200 and ("X-Content-Type-Options", "nosniff") in headers
    now = health.go_time(clock.now)
    assert body.decode() == ('{"lastUpdated": "%s", "currentTime": "%s", '
                             '"nodeEligible": true}' % (now, now))
    record.queued(endpoints=1)
    clock.now += 11
    status, _, body = health.proxy_health(record, "/livez")
    assert status == 503 and b'"lastUpdated": "0001-01-01 00:00:00 +0000 UTC"' in body
    assert b"nodeEligible" not in body
    record.node_eligible = False
    with record.syncing():
        pass
    assert health.proxy_health(record, "/livez")[0] == 200     # livez ignores the node
    assert health.proxy_health(record, "/healthz")[0] == 503
    assert record.health_answers == {("/healthz", 200): 1, ("/livez", 503): 1,
                                     ("/livez", 200): 1, ("/healthz", 503): 1}


def test_go_time_is_gos_time_string():
    assert health.go_time(0) == "1970-01-01 00:00:00.000000 +0000 UTC"


def test_histogram_buckets_are_cumulative():
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 5):
        h.observe(value)
    assert h.buckets() == [("0.1", 1), ("1.0", 2), ("+Inf", 3)] and h.sum == 5.55


def test_syncs_in_two_threads_are_two(clock):
    """Under ryu-manager two REST requests may interleave (green threads): each is a sync
    of its own, not one nested in the other."""
    import threading
    record = SyncRecord(clock, clock)
    inside, release = threading.Event(), threading.Event()

    def slow():
        with record.syncing():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=slow)
    thread.start()
    assert inside.wait(5)
    with record.syncing():      # while the other is still inside its sync
        pass
    assert record.syncs == 1
    release.set()
    thread.join(5)
    assert record.syncs == 2
