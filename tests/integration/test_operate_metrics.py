"""/metrics and /healthz of a kp_app serving real traffic in Mininet, in every switch
case: the sessions counted per VIP and per pod are the connections the clients made
(in lb mode and ct mode the switch made them, and the figures come from the switch), and
the syncs that configured it are in kube-proxy's histogram."""
import json
import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

import kp_lab
from kp_lab.procs import wait_until

from test_kube_proxy import DIRECT, VIP, configure, serve


def scrape(controller) -> dict:
    with DIRECT.open(controller.metrics_url(), timeout=15) as response:
        return {f.name: f for f in text_string_to_metric_families(response.read().decode())}


def samples(family, **labels) -> list:
    return [s for s in family.samples
            if all(s.labels.get(k) == v for k, v in labels.items())]


def test_metrics_count_the_sessions_the_clients_made(kpnode, controller, controller_mode):
    configure(controller, kpnode)
    serve(kpnode, "http", 8080)
    pods = Counter()
    for client in kpnode.clients:
        for _ in range(10):
            result = kp_lab.http_get(client, kp_lab.url_for(VIP, 80))
            assert result["ok"], result
            pods[kpnode.ip(result["body"]["name"])] += 1
    found = scrape(controller)
    label = f"{VIP}/32 port 80"
    (new,) = samples(found["kp_vip_new_sessions"], vip=label)
    assert new.value == 20, new
    per_pod = {s.labels["pod"]: s.value for s in samples(found["kp_pod_new_sessions"],
                                                         vip=label) if s.value}
    assert per_pod == dict(pods)
    # Open vSwitch folds its datapath's packet counts into the flows' statistics every
    # second or so, so the packets of the last connections may show a scrape later
    def packets() -> float:
        (sample,) = samples(scrape(controller)["kp_vip_packets"], vip=label)
        return sample.value
    assert wait_until(lambda: packets() >= 20 * 4, 10), packets()
    # conf, VIP, pods: three syncs, each timed
    (count,) = [s for s in found["kubeproxy_sync_proxy_rules_duration_seconds"].samples
                if s.name.endswith("_count")]
    assert count.value == 3
    assert samples(found["kp_switch_packet_ins"], dpid="1")
    if controller_mode == "lb":     # kp-switch's own session table, as it reports it
        (made,) = samples(found["kp_switch_sessions_created"], dpid="1")
        (capacity,) = samples(found["kp_switch_session_capacity"], dpid="1")
        assert made.value == 20 and capacity.value > 0
    with DIRECT.open(urllib.request.Request(
            f"http://127.0.0.1:{controller.healthz_port}/healthz"), timeout=10) as response:
        assert response.status == 200 and json.loads(response.read())["nodeEligible"]
