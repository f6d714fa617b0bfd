"""Thousands of Services applied, changed and deleted around one that is in use (issue
#18): it keeps serving, a new TCP connection per request with none failing, the switch
stays connected, and `ku apply -f` reports what it did once it is done (an apply job it
follows: its request never has to last as long as the apply).

The kpnode topology on kp-switch (lb mode): client c1, pods p1..p3."""
import json
import threading

import kp_lab
from test_kube_proxy import VIP, api, configure, ku, serve

SERVICES = 3000


def manifest(moved: int = 0) -> dict:
    """SERVICES Services of three endpoints each (not on the node's subnet); `moved`
    shifts every endpoint, so that applying it again changes every Service."""
    items = []
    for i in range(SERVICES):
        name = "bulk%d" % i
        ip = "10.97.%d.%d" % (i // 250, i % 250 + 1)
        items.append({"apiVersion": "v1", "kind": "Service",
                      "metadata": {"name": name, "namespace": "scale"},
                      "spec": {"clusterIP": ip, "ports": [{"port": 80, "targetPort": 8080,
                                                           "protocol": "TCP"}]}})
        items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                      "metadata": {"name": name + "-x", "namespace": "scale",
                                   "labels": {"kubernetes.io/service-name": name}},
                      "addressType": "IPv4",
                      "endpoints": [{"addresses": ["10.1.%d.%d" % (i // 80, (i % 80) * 3 + j
                                                                   + moved + 1)],
                                     "conditions": {"ready": True}} for j in range(3)],
                      "ports": [{"port": 8080, "protocol": "TCP"}]})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def test_a_service_keeps_serving_while_thousands_of_others_come_change_and_go(
        kpswitch_status, controller, tmp_path):
    ok, detail = kpswitch_status
    assert ok, detail
    lab = kp_lab.build_net('kpnode', switch='kpswitch', controller_port=controller.of_port,
                           clients=1, pods=3)
    try:
        configure(controller, lab, port=5000, target_port=5000, node_port=None)
        serve(lab, "tcp", 5000)
        client = lab.clients[0]
        assert kp_lab.tcp_session(client, VIP, 5000, count=1)["ok"]
        first, second = tmp_path / "first.json", tmp_path / "second.json"
        first.write_text(json.dumps(manifest()))
        second.write_text(json.dumps(manifest(moved=1)))
        outcomes = {}

        def work():
            outcomes["apply"] = ku(controller, "apply", "-f", first)
            outcomes["again"] = ku(controller, "apply", "-f", second)
            outcomes["delete"] = ku(controller, "delete", "-f", first)

        _, before = api(controller, "GET", "/counters")
        worker = threading.Thread(target=work)
        worker.start()
        runs = []
        while worker.is_alive() or not runs:     # traffic all the while, in 3 s rounds
            runs.append(kp_lab.start_tcp_connects(client, VIP, 5000, seconds=3).result())
        worker.join()
        for name, run in outcomes.items():
            assert run.returncode == 0, (name, run.stdout[-500:], run.stderr)
        assert outcomes["apply"].stdout.splitlines()[-1] == \
            "%d Services: %d created, 0 changed, 0 unchanged, 0 pruned" % (SERVICES, SERVICES)
        assert outcomes["again"].stdout.splitlines()[-1] == \
            "%d Services: 0 created, %d changed, 0 unchanged, 0 pruned" % (SERVICES, SERVICES)
        # The Service in use answered every new connection, from every pod.
        answered = sum(r.get("answered", 0) for r in runs)
        failed = [e for r in runs for e in r.get("errors", []) + (
            [] if "failed" in r else [r.get("error")])]
        _, after = api(controller, "GET", "/counters")
        assert answered > 0 and not failed and all(r.get("failed") == 0 for r in runs), (
            runs, before["switches"], after["switches"])
        names = {n for r in runs for n in r.get("names", {})}
        assert names == {p.name for p in lab.pods}
        # The switch stayed connected, in lb mode, and holds the one VIP left.
        status, show = api(controller, "GET", "/show")
        assert status == 200 and show["modes"] == {"1": "lb"}, show
        status, services = api(controller, "GET", "/kubernetes/services")
        assert services == []
        assert "disconnect" not in controller.log_tail(400).lower(), controller.log_tail(40)
    finally:
        lab.close()
