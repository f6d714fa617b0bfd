"""kp_app watching a cluster through the official client, against the fake API server
(tests/api/fake_kube_api.py) that speaks the real list/watch protocol: scripted
scenarios, each read back through kp's real REST API and the messages a connected
switch would get."""
import time

import pytest

from kp_lab.fake_kube_api import FakeKubeApi
from kp_app import kube_watch
from kp_app.cluster_sync import ClusterSync

WEB_IP = "10.96.0.10"


def service(name="web", cluster_ip=WEB_IP, **spec):
    return {"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": cluster_ip, "ports": [{"port": 80, "targetPort": 8080}],
                     **spec}}


def endpoint(ip, ready=True, serving=None, terminating=False):
    return {"addresses": [ip], "conditions": {
        "ready": ready, "serving": ready if serving is None else serving,
        "terminating": terminating}}


def eslice(endpoints, name="web-a", service_name="web"):
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}


def node(name="n1", cidr="10.0.1.0/24", internal="10.0.1.1"):
    return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": internal}]}}


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {condition.__doc__ or condition}")


class Rig:
    def __init__(self, api, kube, watch):
        self.api, self.kube, self.watch = api, kube, watch

    def get(self, path):
        with self.watch.lock:       # no sync under the REST read
            return self.api.get(path)

    def pods(self, state="active"):
        vips = [v for v in self.get("/v1/vips") if v["service"] == "default/web"]
        if not vips:
            return None
        return sorted(p["address"] for p in vips[0]["pods"] if p["state"] == state)

    def synced_after(self, syncs):
        return wait_for(lambda: self.watch.status.syncs > syncs)


@pytest.fixture
def rig(api, tmp_path):
    kube = FakeKubeApi().start()
    api.service.switch_connected(1, {1: "eth1", 2: "eth2"})
    client = kube_watch.api_client(kube.kubeconfig(str(tmp_path / "kubeconfig")))
    watch = kube_watch.ClusterWatch(client, ClusterSync(api.service, "n1"), sync_period=3600,
                                    batch_delay=0.05, watch_timeout=20, backoff=(0.05, 0.5))
    try:
        yield Rig(api, kube, watch)
    finally:
        watch.stop()
        kube.close()


def test_a_service_created_is_listed_then_watched_into_vips(rig):
    rig.kube.put(service())
    rig.watch.start()
    wait_for(lambda: rig.watch.status.synced_once)
    assert rig.get("/v1/kubernetes/services") == [
        {"service": "default/web", "vips": [f"{WEB_IP}/32 port 80"]}]
    assert rig.pods() == []
    rig.kube.put(eslice([endpoint("10.0.1.11")]))
    wait_for(lambda: rig.pods() == ["10.0.1.11"])
    rig.kube.put(service("api", "10.96.0.11"))     # a watch event, not a list
    wait_for(lambda: len(rig.get("/v1/kubernetes/services")) == 2)
    assert rig.kube.lists() == 3 and rig.watch.status.relists == 3
    watched = rig.kube.watches("Service")[0]
    assert watched["allowWatchBookmarks"] == "true" and watched["resourceVersion"]


def test_scaled_to_100_pods_in_one_batch(rig):
    rig.kube.put(service())
    rig.kube.put(eslice([endpoint("10.0.1.11")]))
    rig.watch.start()
    wait_for(lambda: rig.pods() == ["10.0.1.11"])
    syncs = rig.watch.status.syncs
    ips = [f"10.0.2.{i}" for i in range(1, 101)]
    for count in range(10, 101, 10):       # a burst of 10 updates, as a rollout makes
        rig.kube.put(eslice([endpoint(ip) for ip in ips[:count]]))
    wait_for(lambda: rig.pods() == sorted(ips))
    assert rig.watch.status.syncs - syncs < 10      # batched, not one sync per event
    assert rig.watch.status.endpoint_changes_total == 11
    assert rig.watch.status.endpoint_changes_pending == 0


def test_a_terminating_pod_is_used_only_when_nothing_else_is_ready(rig):
    rig.kube.put(service())
    rig.kube.put(eslice([endpoint("10.0.1.11"), endpoint("10.0.1.12")]))
    rig.watch.start()
    wait_for(lambda: rig.pods() == ["10.0.1.11", "10.0.1.12"])
    rig.kube.put(eslice([endpoint("10.0.1.11"),
                         endpoint("10.0.1.12", ready=False, serving=True, terminating=True)]))
    wait_for(lambda: rig.pods() == ["10.0.1.11"])
    rig.kube.put(eslice([endpoint("10.0.1.11", ready=False, serving=False, terminating=True),
                         endpoint("10.0.1.12", ready=False, serving=True, terminating=True)]))
    wait_for(lambda: rig.pods() == ["10.0.1.12"])
    rig.kube.put(eslice([endpoint("10.0.1.13"),
                         endpoint("10.0.1.12", ready=False, serving=True, terminating=True)]))
    wait_for(lambda: rig.pods() == ["10.0.1.13"])     # drained as soon as one is ready
    rig.kube.put(eslice([]))
    wait_for(lambda: rig.pods() == [])


def test_the_watch_cut_mid_chunk_resumes_without_a_relist(rig):
    rig.kube.put(service())
    rig.watch.start()
    wait_for(lambda: rig.watch.status.synced_once)
    seen = rig.kube.put(eslice([endpoint("10.0.1.11")]))
    wait_for(lambda: rig.pods() == ["10.0.1.11"])
    lists = rig.kube.lists()
    rig.kube.cut_watches()
    rig.kube.put(eslice([endpoint("10.0.1.12")]))
    wait_for(lambda: rig.pods() == ["10.0.1.12"])
    assert rig.kube.lists() == lists            # resumed from its resourceVersion
    resumed = rig.kube.watches("EndpointSlice")[-1]
    assert int(resumed["resourceVersion"]) >= seen
    assert rig.watch.status.watch_restarts >= 3


def test_a_bookmark_moves_the_resource_version_the_watch_resumes_from(rig):
    rig.kube.put(service())
    rig.watch.start()
    wait_for(lambda: rig.watch.status.synced_once)
    for _ in range(3):
        rig.kube.put(node("other", "10.0.9.0/24", "10.0.9.1"))    # Nodes move on
    rig.kube.bookmark()
    marked = rig.kube.version
    wait_for(lambda: rig.watch.resource_versions["EndpointSlice"] == str(marked))
    rig.kube.cut_watches()
    wait_for(lambda: any(q["resourceVersion"] == str(marked)
                         for q in rig.kube.watches("EndpointSlice")))


@pytest.mark.parametrize("gone_as_event", [False, True], ids=["http-410", "error-event-410"])
def test_410_gone_is_answered_by_a_relist(rig, gone_as_event):
    rig.kube.gone_as_event = gone_as_event
    rig.kube.put(service())
    rig.kube.put(service("api", "10.96.0.11"))
    rig.kube.put(eslice([endpoint("10.0.1.11")]))
    rig.watch.start()
    wait_for(lambda: rig.pods() == ["10.0.1.11"])
    lists = rig.kube.lists()
    rig.kube.cut_watches()
    # while the watches are down, the history they would resume from is compacted away
    rig.kube.compact()
    rig.kube.put(eslice([endpoint("10.0.1.12")]))
    rig.kube.delete("Service", "default/api")
    rig.kube.compact()
    wait_for(lambda: rig.pods() == ["10.0.1.12"])
    # the relist is diffed: the Service deleted meanwhile goes with its VIP
    wait_for(lambda: [s["service"] for s in rig.get("/v1/kubernetes/services")]
             == ["default/web"])
    assert rig.kube.lists() >= lists + 3         # each kind listed again
    assert rig.watch.status.relists >= 6


def test_a_node_added_gives_the_node_addresses(rig):
    rig.kube.put(service())
    rig.watch.start()
    wait_for(lambda: rig.watch.status.synced_once)
    assert rig.get("/v1/conf")["node_ip"] is None
    sent = len(rig.api.sent)
    rig.kube.put(node())
    wait_for(lambda: rig.get("/v1/conf")["node_ip"] == "10.0.1.1")
    assert rig.get("/v1/conf")["node_subnet"] == "10.0.1.0/24"
    assert len(rig.api.sent) > sent         # the switch reprogrammed for its node address
    rig.kube.delete("Node", "n1")
    wait_for(lambda: rig.get("/v1/conf")["node_ip"] is None)


def test_a_resync_with_nothing_changed_changes_nothing(rig):
    rig.watch.sync_period = 0.2
    rig.kube.put(service())
    rig.kube.put(eslice([endpoint("10.0.1.11"), endpoint("10.0.1.12")]))
    rig.kube.put(node())
    rig.watch.start()
    wait_for(lambda: rig.pods() == ["10.0.1.11", "10.0.1.12"])
    wait_for(lambda: rig.get("/v1/conf")["node_ip"] == "10.0.1.1")
    before = (rig.get("/v1/vips"), rig.get("/v1/conf"))
    with rig.watch.lock:
        sent = len(rig.api.sent)
        syncs = rig.watch.status.syncs
    wait_for(lambda: rig.watch.status.syncs >= syncs + 3)
    with rig.watch.lock:
        assert rig.api.sent[sent:] == []       # not one message to the switch
    assert (rig.get("/v1/vips"), rig.get("/v1/conf")) == before


def test_a_bad_object_is_logged_and_skipped_never_half_applied(rig):
    rig.kube.put(service())
    rig.kube.put(eslice([endpoint("10.0.1.11")]))
    rig.watch.start()
    wait_for(lambda: rig.pods() == ["10.0.1.11"])
    bad = service()
    bad["spec"]["ports"] = [{"port": 80, "targetPort": 8080}, {"port": 99999}]
    rig.kube.put(bad)
    rig.kube.put(service("api", "10.96.0.11"))
    wait_for(lambda: len(rig.get("/v1/kubernetes/services")) == 2)
    assert rig.pods() == ["10.0.1.11"]                      # web as it was
    assert [s.split(":")[0] for s in rig.watch.status.skipped] == ["Service default/web"]
    rig.api.service.add_vip("10.96.0.12/32", 80, 8080)      # by hand
    rig.kube.put(service("taker", "10.96.0.12"))
    wait_for(lambda: rig.watch.status.sync_errors >= 2)
    assert rig.get("/v1/vips/10.96.0.12/32/80")["service"] is None


# -- ryu-manager kp_app --kubeconfig: the green path under eventlet's monkey patching --

def rest(ctl, path):
    import json
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(ctl.url(path), timeout=10) as response:
        return json.loads(response.read())


def test_ryu_manager_watches_the_cluster_and_keeps_serving(tmp_path):
    """The watches are green threads blocked on their sockets most of the time: REST
    (served by the same hub as OpenFlow) answers throughout, and every change arrives."""
    import kp_lab
    kube = FakeKubeApi().start()
    try:
        kube.put(service())
        kube.put(eslice([endpoint("10.0.1.11")]))
        kube.put(node())
        args = ["--kubeconfig", kube.kubeconfig(str(tmp_path / "kubeconfig")),
                "--kp-node-name", "n1", "--kp-sync-period", "1"]
        with kp_lab.ControllerProcess(extra_args=args) as ctl:
            def pods():
                vips = rest(ctl, "/v1/vips")
                return vips and sorted(p["address"] for p in vips[0]["pods"]
                                       if p["state"] == "active")
            wait_for(lambda: pods() == ["10.0.1.11"])
            assert rest(ctl, "/v1/conf")["node_ip"] == "10.0.1.1"
            kube.put(eslice([endpoint(f"10.0.1.{i}") for i in range(11, 31)]))
            wait_for(lambda: pods() == sorted(f"10.0.1.{i}" for i in range(11, 31)))
            lists = kube.lists()
            kube.cut_watches()
            kube.put(eslice([endpoint("10.0.1.40")]))
            wait_for(lambda: pods() == ["10.0.1.40"])
            assert kube.lists() == lists
            for _ in range(20):         # the watches sit open: REST still answers
                assert rest(ctl, "/v1/show")
    finally:
        kube.close()


def test_ryu_manager_refuses_a_kubeconfig_it_cannot_read(tmp_path):
    import subprocess
    import kp_lab
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\n")    # no context
    ctl = kp_lab.ControllerProcess(extra_args=["--kubeconfig", str(bad)])
    proc = subprocess.run(ctl.command(), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert "kp_app: --kubeconfig:" in proc.stderr + open(ctl.log_file).read()


def test_failures_back_off_exponentially_then_the_watch_goes_on(api, tmp_path):
    kube = FakeKubeApi().start()
    delays = []

    def sleep(seconds):
        if seconds != watch.batch_delay:
            delays.append(seconds)
        time.sleep(seconds)

    client = kube_watch.api_client(kube.kubeconfig(str(tmp_path / "kubeconfig")))
    watch = kube_watch.ClusterWatch(client, ClusterSync(api.service), sleep=sleep,
                                    sync_period=3600, batch_delay=0.005, backoff=(0.01, 0.08))
    try:
        kube.put(service())
        kube.failures = {"Service": 6, "EndpointSlice": 6, "Node": 6}
        watch.start()
        wait_for(lambda: watch.status.synced_once)
        assert sorted(delays) == sorted([0.01, 0.02, 0.04, 0.08, 0.08, 0.08] * 3)
        kube.put(service("api", "10.96.0.11"))
        wait_for(lambda: len(api.service.kubernetes_services()) == 2)
    finally:
        watch.stop()
        kube.close()


def test_a_list_comes_in_pages_of_one_snapshot(rig):
    rig.watch.page_size = 7
    for i in range(30):
        rig.kube.put(service(f"s{i:02}", f"10.96.1.{i + 1}"))
    rig.watch.start()
    wait_for(lambda: rig.watch.status.synced_once)
    assert len(rig.get("/v1/kubernetes/services")) == 30
    pages = [q for path, q in rig.kube.requests
             if path == "/api/v1/services" and "watch" not in q]
    assert len(pages) == 5 and all(q["limit"] == "7" for q in pages)
    assert rig.kube.lists("Service") == 1


def test_in_cluster_service_account_files_are_used_without_a_kubeconfig(tmp_path):
    assert kube_watch.api_client(None, str(tmp_path), {}) is None      # no files: no cluster
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    assert kube_watch.api_client(None, str(tmp_path), {}) is None      # not in a Pod
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    configuration = kube_watch.api_client(None, str(tmp_path), env).configuration
    assert configuration.host == "https://10.96.0.1:443"
    assert configuration.ssl_ca_cert == str(tmp_path / "ca.crt")
    assert configuration.get_api_key_with_prefix("BearerToken").lower() == "bearer sa-token"


def test_a_watch_that_ends_at_once_backs_off_rather_than_spinning(api, tmp_path):
    kube = FakeKubeApi().start()
    client = kube_watch.api_client(kube.kubeconfig(str(tmp_path / "kubeconfig")))
    # timeoutSeconds=0: the fake ends every watch at once, with no event
    watch = kube_watch.ClusterWatch(client, ClusterSync(api.service), sync_period=3600,
                                    batch_delay=0.005, watch_timeout=0, backoff=(0.2, 0.4))
    try:
        kube.put(service())
        watch.start()
        wait_for(lambda: watch.status.synced_once)
        watches = len(kube.watches("Service"))
        time.sleep(1.0)
        # backing off 0.2 s, then 0.4 s: some 3 more watches in that second (without the
        # backoff, one every few ms: tens, even on a loaded machine)
        assert 1 <= len(kube.watches("Service")) - watches <= 6
        assert kube.lists("Service") == 1           # and never a relist
    finally:
        watch.stop()
        kube.close()
