"""kp_app watching a (fake) cluster, with real traffic through Mininet: a scale-up made
through the API server reaches the new pods, and a terminating pod gets new connections
only when no other pod is ready. The fake API server (kp_lab.fake_kube_api) speaks the
real list/watch protocol; kp_app reads it with the official client.

kpnode (topologies/kp.py): node 10.0.0.1, clients c1, c2, pods p1..p3 at .101...103."""
import re
import subprocess
import time
from collections import Counter

import pytest

import kp_lab
from kp_lab.fake_kube_api import FakeKubeApi
from test_kube_proxy import VIP, api, serve


def service():
    return {"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": VIP, "ports": [{"port": 80, "targetPort": 8080}]}}


def eslice(ready=(), terminating=()):
    endpoints = [{"addresses": [ip], "conditions": {"ready": True}} for ip in ready] + [
        {"addresses": [ip], "conditions": {"ready": False, "serving": True,
                                           "terminating": True}} for ip in terminating]
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": "web-a", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}


NODE = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n1"},
        "spec": {"podCIDR": "10.0.0.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}


@pytest.fixture
def kube():
    server = FakeKubeApi().start()
    server.put(service())
    server.put(NODE)
    server.put(eslice(ready=["10.0.0.101"]))
    yield server
    server.close()


@pytest.fixture
def controller_extra_args(kube, tmp_path):
    return ["--kubeconfig", kube.kubeconfig(str(tmp_path / "kubeconfig")),
            "--kp-node-name", "n1", "--kp-sync-period", "2"]


def active_pods(controller):
    status, vips = api(controller, "GET", "/vips")
    assert status == 200
    return sorted(p["address"] for v in vips for p in v["pods"] if p["state"] == "active")


def wait_for_pods(controller, wanted, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if active_pods(controller) == sorted(wanted):
            return
        time.sleep(0.1)
    raise AssertionError(f"pods {active_pods(controller)} after {timeout} s, not {wanted}")


def new_connections(lab, used, count=10):
    """Who answered each new connection (a reused 5-tuple is still its old session)."""
    names = Counter()
    for client in lab.clients:
        for _ in range(count):
            result = kp_lab.http_get(client, kp_lab.url_for(VIP, 80))
            assert result["ok"], result
            five = (result["body"]["peer"], result["body"]["peer_port"])
            if five not in used:
                names[result["body"]["name"]] += 1
            used.add(five)
    return names


def test_the_watch_scales_up_and_falls_back_to_a_terminating_pod(kpnode, controller, kube):
    wait_for_pods(controller, ["10.0.0.101"])
    assert api(controller, "GET", "/conf")[1]["node_ip"] == "10.0.0.1"     # from Node n1
    serve(kpnode, "http", 8080)
    used = set()
    assert set(new_connections(kpnode, used)) == {"p1"}
    # scale-up through the API server: the new pods get new connections
    kube.put(eslice(ready=["10.0.0.101", "10.0.0.102", "10.0.0.103"]))
    wait_for_pods(controller, ["10.0.0.101", "10.0.0.102", "10.0.0.103"])
    assert set(new_connections(kpnode, used, 15)) == {"p1", "p2", "p3"}
    # p3 terminating while p1, p2 are ready: p3 gets no new connection
    kube.put(eslice(ready=["10.0.0.101", "10.0.0.102"], terminating=["10.0.0.103"]))
    wait_for_pods(controller, ["10.0.0.101", "10.0.0.102"])
    assert set(new_connections(kpnode, used)) == {"p1", "p2"}
    # nothing else ready: the terminating pod serves (graceful termination)
    kube.put(eslice(terminating=["10.0.0.103"]))
    wait_for_pods(controller, ["10.0.0.103"])
    assert set(new_connections(kpnode, used)) == {"p3"}


def kp_flows(lab):
    """kp's flows on the switch, without their counters, and the youngest one's age."""
    sw = lab.switch("s1")
    target = f"tcp:127.0.0.1:{sw.listen}" if isinstance(sw, kp_lab.KpSwitch) else sw.name
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", target],
                         capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, out.stderr
    flows, ages = set(), []
    for line in out.stdout.splitlines():
        if "cookie=" not in line:
            continue
        ages += [float(a) for a in re.findall(r"duration=([0-9.]+)s", line)]
        flows.add(re.sub(r"(duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*, ?", "", line)
                  .strip())
    return flows, min(ages) if ages else None


def test_resyncs_with_nothing_changed_leave_the_switch_flows_untouched(kpnode, controller,
                                                                       kube):
    wait_for_pods(controller, ["10.0.0.101"])
    kube.put(eslice(ready=["10.0.0.101", "10.0.0.102"]))
    wait_for_pods(controller, ["10.0.0.101", "10.0.0.102"])
    time.sleep(1.0)                 # the change's programming is all on the switch
    before, _ = kp_flows(kpnode)
    started = time.monotonic()
    time.sleep(5.0)                 # --kp-sync-period 2: two full resyncs at least
    after, youngest = kp_flows(kpnode)
    assert before and after == before
    if youngest is not None:        # nothing deleted and added again meanwhile
        assert youngest >= time.monotonic() - started - 0.5, youngest
