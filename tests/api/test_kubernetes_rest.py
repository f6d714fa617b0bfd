"""Kubernetes Services over the REST API and `ku apply -f` / `ku delete -f`, against a real
KubeProxy: what each Service's VIPs become as it is applied again and again, and that a
refused request (a bad object, a conflict, an unknown Service) changes nothing."""
import copy
import os
import subprocess

import pytest
import yaml

from conftest import KU, ROOT, Api

WEB_YAML = os.path.join(ROOT, "tests", "manifests", "web.yaml")
WEB = list(yaml.safe_load_all(open(WEB_YAML)))


def as_list(*objects) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": list(objects)}


def web(pods=("10.0.0.101", "10.0.0.102", "10.0.0.103"), target=8080, **spec) -> dict:
    service, slice_ = copy.deepcopy(WEB)
    service["spec"].update(spec)
    slice_["ports"][0]["port"] = target
    slice_["endpoints"] = [{"addresses": [p]} for p in pods]
    return as_list(service, slice_)


def dns(tcp_target=53, udp_target=53) -> dict:
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "dns", "namespace": "kube-system"},
               "spec": {"clusterIP": "10.96.0.53", "ports": [
                   {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                   {"name": "dns", "port": 53, "protocol": "UDP"}]}}
    endpoints = {"apiVersion": "v1", "kind": "Endpoints",
                 "metadata": {"name": "dns", "namespace": "kube-system"},
                 "subsets": [{"addresses": [{"ip": "10.0.0.53"}],
                              "ports": [{"name": "dns-tcp", "port": tcp_target,
                                         "protocol": "TCP"},
                                        {"name": "dns", "port": udp_target,
                                         "protocol": "UDP"}]}]}
    return as_list(service, endpoints)


def apply(api: Api, body: dict) -> dict:
    status, answer, _ = api.call("POST", "/v1/kubernetes/apply", body)
    assert status == 200, answer
    return answer


def refused(api: Api, path: str, body, status: int, field=None, says="") -> dict:
    before, sent = api.state(), len(api.sent)
    services = api.get("/v1/kubernetes/services")
    got, answer, _ = api.call("POST", path, body)
    assert got == status, answer
    assert answer.get("field") == field and says in answer["error"], answer
    assert api.state() == before and len(api.sent) == sent
    assert api.get("/v1/kubernetes/services") == services
    return answer


def actions(answer: dict) -> dict:
    return {v["vip"]: v["action"] for v in answer["vips"]}


def test_apply_makes_the_services_vips_with_its_ready_pods(api):
    answer = apply(api, web())
    assert answer["services"] == ["shop/web"]
    assert actions(answer) == {"10.96.0.10/32 port 80": "created"}
    vip = api.get("/v1/vips/10.96.0.10/32/80")
    assert (vip["target_port"], vip["node_port"], vip["protocol"], vip["external_ips"],
            vip["service"]) == (8080, 30080, "tcp", ["192.0.2.10"], "shop/web")
    assert [p["address"] for p in vip["pods"]] == ["10.0.0.101", "10.0.0.102", "10.0.0.103"]
    assert api.get("/v1/kubernetes/services") == [
        {"service": "shop/web", "vips": ["10.96.0.10/32 port 80"]}]


def test_applying_again_changes_only_the_pods_and_removed_pods_drain(api):
    apply(api, web())
    api.sent.clear()
    answer = apply(api, web(pods=("10.0.0.101", "10.0.0.103", "10.0.0.109")))
    (change,) = answer["vips"]
    assert (change["action"], change["pods_added"], change["pods_removed"]) == (
        "updated", ["10.0.0.109"], ["10.0.0.102"])
    vip = api.get("/v1/vips/10.96.0.10/32/80")
    assert [p["address"] for p in vip["pods"]] == ["10.0.0.101", "10.0.0.103", "10.0.0.109"]
    assert actions(apply(api, web(pods=("10.0.0.101", "10.0.0.103", "10.0.0.109")))) == {
        "10.96.0.10/32 port 80": "unchanged"}


def test_a_new_target_port_replaces_the_vip_and_a_dropped_port_deletes_it(api):
    apply(api, web())
    answer = apply(api, web(target=9090))
    assert actions(answer) == {"10.96.0.10/32 port 80": "replaced"}
    assert api.get("/v1/vips/10.96.0.10/32/80")["target_port"] == 9090
    answer = apply(api, web(ports=[{"name": "http", "port": 8000, "targetPort": "http",
                                    "nodePort": 30080}]))
    assert actions(answer) == {"10.96.0.10/32 port 80": "deleted",
                               "10.96.0.10/32 port 8000": "created"}
    assert [v["port"] for v in api.get("/v1/vips")] == [8000]


def test_affinity_and_traffic_policy_change_without_replacing_the_vip(api):
    apply(api, web(sessionAffinity="ClientIP"))
    vip = api.get("/v1/vips/10.96.0.10/32/80")
    assert vip["affinity_timeout"] == 10800
    same = api.service.model.find_vip("10.96.0.10/32", 80)
    answer = apply(api, web(sessionAffinity="ClientIP",
                            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}))
    assert actions(answer) == {"10.96.0.10/32 port 80": "updated"}
    assert api.service.model.find_vip("10.96.0.10/32", 80) is same     # not replaced
    assert api.get("/v1/vips/10.96.0.10/32/80")["affinity_timeout"] == 60
    apply(api, web())
    assert api.get("/v1/vips/10.96.0.10/32/80")["affinity_timeout"] == 0
    assert actions(apply(api, web(externalTrafficPolicy="Local"))) == {
        "10.96.0.10/32 port 80": "updated"}
    assert api.service.model.find_vip("10.96.0.10/32", 80) is same
    assert api.get("/v1/vips/10.96.0.10/32/80")["external_policy"] == "local"
    assert actions(apply(api, web(internalTrafficPolicy="Local"))) == {
        "10.96.0.10/32 port 80": "updated"}
    vip = api.get("/v1/vips/10.96.0.10/32/80")
    assert (vip["external_policy"], vip["internal_policy"]) == ("cluster", "local")
    assert api.service.model.find_vip("10.96.0.10/32", 80) is same
    assert actions(apply(api, web(loadBalancerSourceRanges=["192.0.2.0/24"]))) == {
        "10.96.0.10/32 port 80": "updated"}
    assert api.get("/v1/vips/10.96.0.10/32/80")["source_ranges"] == ["192.0.2.0/24"]
    assert api.service.model.find_vip("10.96.0.10/32", 80) is same


def test_a_port_over_tcp_and_udp_is_one_vip_of_both_protocols(api):
    apply(api, dns())
    vip = api.get("/v1/vips/10.96.0.53/32/53")
    assert (vip["protocol"], vip["target_port"], vip["service"]) == ("any", 53,
                                                                     "kube-system/dns")


def test_tcp_and_udp_to_different_pod_ports_is_refused(api):
    refused(api, "/v1/kubernetes/apply", dns(udp_target=5353), 400,
            "Service kube-system/dns: spec.ports", "one VIP per address and port")


def test_a_vip_made_by_hand_is_never_taken_over(api):
    api.service.add_vip("10.96.0.10/32", 80, 8080)
    answer = refused(api, "/v1/kubernetes/apply", web(), 409, "Service shop/web",
                     "belongs to no Service")
    assert "10.96.0.10/32 port 80" in answer["error"]


def test_a_node_port_in_use_is_a_conflict_even_after_the_services_other_changes(api):
    apply(api, web())
    api.service.add_vip("10.96.0.99/32", 81, 8081, node_port=30081)
    # the new port would delete port 80 first, then fail on 30081: nothing may move
    refused(api, "/v1/kubernetes/apply",
            web(ports=[{"name": "http", "port": 8000, "targetPort": "http",
                        "nodePort": 30081}]), 409, None, "node_port 30081")
    assert api.get("/v1/vips/10.96.0.10/32/80")["service"] == "shop/web"


@pytest.mark.parametrize("mangle, field", [
    (lambda b: b["items"][0]["spec"]["ports"][0].update(port=70000),
     "Service shop/web: spec.ports[0].port"),
    (lambda b: b["items"][0]["spec"].pop("clusterIP") and b["items"][0]["spec"].pop(
        "clusterIPs"), "Service shop/web: spec.clusterIP"),
    (lambda b: b["items"].append({"apiVersion": "apps/v1", "kind": "Deployment",
                                  "metadata": {"name": "web"}}), "items[2]: kind"),
])
def test_a_bad_object_anywhere_is_refused_with_where_it_is(api, mangle, field):
    apply(api, web())
    body = web(pods=("10.0.0.101",))
    mangle(body)
    refused(api, "/v1/kubernetes/apply", body, 400, field)


def test_delete_removes_the_services_vips_and_an_unknown_service_changes_nothing(api):
    apply(api, web())
    apply(api, dns())
    refused(api, "/v1/kubernetes/delete", as_list(*web()["items"], {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "nope"},
        "spec": {"clusterIP": "None"}}), 404, None, "default/nope")
    status, answer, _ = api.call("POST", "/v1/kubernetes/delete", web())
    assert status == 200 and answer["services"] == ["shop/web"], answer
    assert [v["service"] for v in api.get("/v1/vips")] == ["kube-system/dns"]
    assert [s["service"] for s in api.get("/v1/kubernetes/services")] == ["kube-system/dns"]


def test_prune_deletes_the_applied_services_the_body_does_not_have(api):
    apply(api, web())
    apply(api, dns())
    answer = apply(api, web())                         # without prune: dns stays
    assert [s["service"] for s in api.get("/v1/kubernetes/services")] == [
        "kube-system/dns", "shop/web"]
    status, answer, _ = api.call("POST", "/v1/kubernetes/apply?prune=true", web())
    assert status == 200, answer
    assert (answer["services"], answer["pruned"]) == (["shop/web"], ["kube-system/dns"])
    assert actions(answer) == {"10.96.0.53/32 port 53": "deleted",
                               "10.96.0.10/32 port 80": "unchanged"}
    assert [v["service"] for v in api.get("/v1/vips")] == ["shop/web"]
    assert [s["service"] for s in api.get("/v1/kubernetes/services")] == ["shop/web"]
    refused(api, "/v1/kubernetes/apply?prune=maybe", web(), 400, "prune", "not a boolean")


def test_ku_apply_prune(api, tmp_path):
    apply(api, dns())
    result = api.ku("apply", "-f", WEB_YAML, "prune")
    assert result.returncode == 0, result.stderr
    assert "kube-system/dns" in result.stdout and "deleted" in result.stdout
    assert [s["service"] for s in api.get("/v1/kubernetes/services")] == ["shop/web"]


def test_a_headless_service_is_applied_with_no_vip_and_can_be_deleted(api):
    headless = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}
    answer = apply(api, headless)
    assert answer == {"services": ["default/db"], "pruned": [], "vips": [],
                      "summary": {"created": 1, "changed": 0, "unchanged": 0, "pruned": 0}}
    again = apply(api, headless)
    assert again["summary"] == {"created": 0, "changed": 0, "unchanged": 1, "pruned": 0}
    assert api.get("/v1/vips") == []
    status, _, _ = api.call("POST", "/v1/kubernetes/delete", headless)
    assert status == 200 and api.get("/v1/kubernetes/services") == []


# -- ku -------------------------------------------------------------------------------------


def test_ku_apply_show_and_delete_with_a_file(api):
    result = api.ku("apply", "-f", WEB_YAML)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[1].split() == ["shop/web", "10.96.0.10/32", "port", "80",
                                                   "created", "+10.0.0.101", "+10.0.0.102",
                                                   "+10.0.0.103"]
    assert "shop/web" in api.ku("show", "vip").stdout
    assert api.ku("show", "services").stdout.split("\n")[1].split() == [
        "shop/web", "10.96.0.10/32", "port", "80"]
    result = api.ku("delete", "-f", WEB_YAML)
    assert result.returncode == 0 and "deleted" in result.stdout, result.stderr
    assert api.get("/v1/vips") == []


def test_ku_apply_reads_standard_input(api):
    text = yaml.safe_dump_all(web(pods=("10.0.0.107",))["items"])
    result = subprocess.run([KU, "--api", api.url, "apply", "-f", "-"], input=text,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert [p["address"] for p in api.get("/v1/vips/10.96.0.10/32/80")["pods"]] == [
        "10.0.0.107"]


@pytest.mark.parametrize("content, says", [
    (None, "No such file or directory"),
    ("kind: Service\n  metadata: [", "not YAML or JSON"),
])
def test_ku_apply_of_a_file_it_cannot_read_sends_nothing(api, tmp_path, content, says):
    path = tmp_path / "svc.yaml"
    if content is not None:
        path.write_text(content)
    before, sent = api.state(), len(api.sent)
    result = api.ku("apply", "-f", str(path))
    assert result.returncode == 1 and says in result.stderr and result.stdout == ""
    assert result.stderr.startswith(f"ku: {path}: ")
    assert api.state() == before and len(api.sent) == sent


@pytest.mark.parametrize("args, says", [
    (("apply",), "apply: expected '-f <file>', got nothing"),
    (("apply", "-f"), "-f: missing value"),
    (("delete", "web.yaml"), "delete: expected '-f <file>', got 'web.yaml'"),
    (("apply", "-f", "web.yaml", "prun"),
     "apply -f <file>: unknown keyword 'prun' (expected prune)"),
    (("delete", "-f", "web.yaml", "prune"), "delete: unexpected 'prune'"),
])
def test_ku_apply_usage_errors(api, args, says):
    result = api.ku(*args)
    assert (result.returncode, result.stderr) == (2, f"ku: {says}\n")
