"""kp_app's operations endpoints over real HTTP: /healthz and /livez, /metrics in
Prometheus' format (read back with prometheus_client's own parser), a Service's health
check node port, and the same under /v1. The WSGI apps of kp_app.operate_http are served
by a wsgiref server in a thread (as conftest serves the REST API), over a real KubeProxy
whose clocks the test holds."""
import contextlib
import copy
import json
import os
import threading
import urllib.error
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from wsgiref.simple_server import make_server

from kp_app import operate_http
from kp_app.kubeproxy import KubeProxy

from conftest import _QuietHandler, open_session

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def served(app):
    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def get(url: str, headers=None):
    """(status, headers, body bytes), for 4xx/5xx too."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def web() -> list:
    with open(os.path.join(ROOT, "tests", "manifests", "web.yaml")) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load_balancer(pods, health_port: int = 32000, ready: bool = True) -> list:
    """shop/lb: a LoadBalancer with externalTrafficPolicy Local and its slice."""
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "lb", "namespace": "shop"},
               "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.30",
                        "externalTrafficPolicy": "Local", "healthCheckNodePort": health_port,
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                   "targetPort": 8080, "nodePort": 30090}]}}
    slice_ = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"name": "lb-1", "namespace": "shop",
                           "labels": {"kubernetes.io/service-name": "lb"}},
              "addressType": "IPv4",
              "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
              "endpoints": [{"addresses": [p], "conditions": {"ready": ready}} for p in pods]}
    return [service, slice_]


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def kp(clock):
    return KubeProxy(lambda dpid, msgs: None, clock=clock, wall=clock)


def test_healthz_and_livez_answer_as_kube_proxy(kp, clock):
    kp.syncs.health_timeout = 60
    with served(operate_http.health_app(kp.syncs)) as url:
        status, headers, body = get(url + "/healthz")
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert headers["X-Content-Type-Options"] == "nosniff"
        answer = json.loads(body)
        assert answer == {"lastUpdated": answer["currentTime"],
                          "currentTime": "2027-01-15 08:00:00.000000 +0000 UTC",
                          "nodeEligible": True}
        kp.syncs.queued(endpoints=1)            # as the watch does, before applying
        clock.now += 61
        status, _, body = get(url + "/livez")
        assert status == 503 and json.loads(body)["lastUpdated"] == \
            "0001-01-01 00:00:00 +0000 UTC"     # never synced
        kp.apply_kubernetes(web())              # the sync that applies it
        assert get(url + "/healthz")[0] == 200 and get(url + "/livez")[0] == 200
        assert get(url + "/metrics")[0] == 404


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(family, name: str, **labels) -> float:
    for sample in family.samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no sample {name} {labels} in {family.samples}")


def test_metrics_have_kube_proxys_names_and_kps_counters(kp, clock):
    kp.apply_kubernetes(web())
    clock.now += 5
    open_session(kp, "10.0.0.11", "10.96.0.10", 80, ["10.0.0.101", "10.0.0.102", "10.0.0.103"])
    with served(operate_http.metrics_app(kp)) as url:
        status, headers, body = get(url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    found = families(body.decode())
    sync = found["kubeproxy_sync_proxy_rules_duration_seconds"]
    assert sync.type == "histogram"
    assert value(sync, "kubeproxy_sync_proxy_rules_duration_seconds_count") == 1
    assert value(sync, "kubeproxy_sync_proxy_rules_duration_seconds_bucket", le="0.001") == 1
    assert value(found["kubeproxy_sync_proxy_rules_last_timestamp_seconds"],
                 "kubeproxy_sync_proxy_rules_last_timestamp_seconds") == 1_800_000_000.0
    for kind in ("service", "endpoint"):
        name = f"kubeproxy_sync_proxy_rules_{kind}_changes"
        assert value(found[name], name + "_total") == 1
        assert value(found[name + "_pending"], name + "_pending") == 0
    assert "kubeproxy_network_programming_duration_seconds" in found
    vip = {"vip": "10.96.0.10/32 port 80", "protocol": "tcp", "service": "shop/web"}
    assert value(found["kp_vip_new_sessions"], "kp_vip_new_sessions_total", **vip) == 1
    assert value(found["kp_vip_active_sessions"], "kp_vip_active_sessions", **vip) == 1
    assert value(found["kp_sessions"], "kp_sessions") == 1
    pods = [s for s in found["kp_pod_new_sessions"].samples if s.value == 1]
    assert len(pods) == 1 and pods[0].labels["vip"] == vip["vip"]
    assert value(found["kp_switch_packet_ins"], "kp_switch_packet_ins_total", dpid="1") >= 4
    assert value(found["kp_switch_service_packet_ins"],
                 "kp_switch_service_packet_ins_total", dpid="1") == 1


def test_switch_figures_come_from_the_switch(kp):
    """lb mode's session table and kp-switch's cache figures, as the switch reports them."""
    kp.switch_connected(7, {1: "eth1"})
    kp.cache_stats(7, {"hits": 10, "misses": 2, "entries": 3})
    kp.lb_stats(7, {"sessions": 4, "capacity": 4096, "created": 9, "untracked": 1,
                    "dropped": 0}, [])
    with served(operate_http.metrics_app(kp)) as url:
        found = families(get(url + "/metrics")[2].decode())
    assert value(found["kp_switch_cache_hits"], "kp_switch_cache_hits_total", dpid="7") == 10
    assert found["kp_switch_cache_entries"].type == "gauge"
    assert value(found["kp_switch_sessions"], "kp_switch_sessions", dpid="7") == 4
    assert value(found["kp_switch_session_capacity"], "kp_switch_session_capacity",
                 dpid="7") == 4096
    assert value(found["kp_switch_untracked"], "kp_switch_untracked_total", dpid="7") == 1
    assert value(found["kp_sessions"], "kp_sessions") == 4


def test_a_health_check_node_port_counts_local_endpoints(kp):
    kp.set_conf(node_ip="10.0.0.1/24")
    kp.apply_kubernetes(load_balancer(["10.0.0.101", "10.0.0.102", "10.0.1.7"]))
    assert kp.health_check_ports() == {"shop/lb": 32000}
    with served(operate_http.service_health_app(kp, "shop/lb")) as url:
        status, headers, body = get(url + "/")
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"service": {"namespace": "shop", "name": "lb"},
                                    "localEndpoints": 2, "serviceProxyHealthy": True}
        kp.apply_kubernetes(load_balancer(["10.0.1.7", "10.0.1.8"]))   # none on this node
        status, _, body = get(url + "/anything")
        assert status == 503 and json.loads(body)["localEndpoints"] == 0


def test_health_check_ports_only_for_local_load_balancers(kp):
    docs = load_balancer(["10.0.0.101"])
    cluster = copy.deepcopy(docs)
    cluster[0]["spec"]["externalTrafficPolicy"] = "Cluster"
    kp.apply_kubernetes(cluster)
    assert kp.health_check_ports() == {}
    kp.apply_kubernetes(docs)
    assert kp.health_check_ports() == {"shop/lb": 32000}
    bad = copy.deepcopy(docs)
    bad[0]["spec"]["healthCheckNodePort"] = 70000
    before = kp.vips()
    with pytest.raises(Exception) as error:
        kp.apply_kubernetes(bad)
    assert "spec.healthCheckNodePort" in str(error.value.field)
    assert kp.vips() == before and kp.health_check_ports() == {"shop/lb": 32000}
    kp.delete_kubernetes(docs)
    assert kp.health_check_ports() == {}


def test_metrics_and_healthz_under_the_rest_api(api):
    status, headers, body = get(api.url + "/v1/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert "kubeproxy_sync_proxy_rules_duration_seconds" in families(body.decode())
    status, headers, body = get(api.url + "/v1/metrics",
                                {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    status, _, body = get(api.url + "/v1/healthz")
    assert status == 200 and json.loads(body)["nodeEligible"] is True
