"""The REST API over real HTTP: Ryu's WSGIApplication + kp's controller + a real KubeProxy.

Every error case checks the status, that the body names the field, and that nothing
changed: what a client can GET, and what was sent towards the switches.
"""
import os

import pytest
import yaml

from conftest import ROOT, Api, open_session
from kp_app import rest

VIP4 = {"prefix": "10.96.0.10/32", "port": 80, "target_port": 8080, "protocol": "tcp"}
VIP6 = {"prefix": "fd00:96::10/128", "port": 53, "target_port": 5353, "protocol": "udp"}


def add_vip(api: Api, **body) -> dict:
    status, vip, _ = api.call("POST", "/v1/vips", body)
    assert status == 201, vip
    return vip


def assert_refused(api: Api, method: str, path: str, body=None, *, status: int,
                   field=None, says: str = "", raw: bytes = None) -> dict:
    """The request fails with `status` (naming `field`) and changes nothing."""
    before, sent_before = api.state(), len(api.sent)
    got, answer, _ = api.call(method, path, body, raw=raw)
    assert got == status, answer
    assert isinstance(answer, dict) and answer["error"], answer
    assert answer.get("field") == field, answer
    assert says in answer["error"], answer
    assert api.state() == before
    assert len(api.sent) == sent_before
    return answer


# -- conf ---------------------------------------------------------------------------------


def test_conf_get_and_put(api):
    conf = api.get("/v1/conf")
    assert conf == {"buckets": 1024, "timeout": 40, "udp_timeout": 0, "tcp_close_wait": 0,
                    "node_ip": None, "node_ip6": None,
                    "node_subnet": None, "node_subnet6": None, "nodes": {}}
    status, new, _ = api.call("PUT", "/v1/conf", {"buckets": 2048, "timeout": 30,
                                                  "node_ip": "192.168.1.1",
                                                  "node_ip6": "fd00::1"})
    assert status == 200
    assert new == dict(conf, buckets=2048, timeout=30, node_ip="192.168.1.1",
                       node_ip6="fd00::1", node_subnet="192.168.1.0/24",
                       node_subnet6="fd00::/64")
    assert api.get("/v1/conf") == new
    status, new, _ = api.call("PUT", "/v1/conf", {"udp_timeout": 30, "tcp_close_wait": 3600})
    assert status == 200 and (new["udp_timeout"], new["tcp_close_wait"], new["timeout"]) == \
        (30, 3600, 30)
    status, error, _ = api.call("PUT", "/v1/conf", {"udp_timeout": 86401})
    assert status == 400 and error["field"] == "udp_timeout"
    assert api.get("/v1/conf") == new


def test_conf_per_switch_node_address(api):
    status, conf, _ = api.call("PUT", "/v1/conf", {"node_ip": "192.168.1.2", "dpid": 2})
    assert status == 200
    assert conf["node_ip"] is None
    assert conf["nodes"] == {"2": {"node_ip": "192.168.1.2", "node_ip6": None,
                                   "node_subnet": "192.168.1.0/24", "node_subnet6": None,
                                   "announced": []}}


@pytest.mark.parametrize("body, field, says", [
    ({"buckets": "2048"}, "buckets", "expected an integer, got string"),
    ({"buckets": True}, "buckets", "got boolean"),
    ({"buckets": 2048.0}, "buckets", "got number"),
    ({"bucket": 2048}, "bucket", "unknown field"),
    ({"buckets": 1000}, "buckets", "not a power of 2"),
    ({"buckets": 2048, "timeout": 0}, "timeout", "out of range"),
    ({"node_ip": "fd00::1"}, "node_ip", "IPv6, expected IPv4"),
    ({"node_ip": None}, "node_ip", "expected a string, got null"),
    ({"dpid": -1}, "dpid", "out of range"),
])
def test_conf_bad_values_change_nothing(api, body, field, says):
    assert_refused(api, "PUT", "/v1/conf", body, status=400, field=field, says=says)


@pytest.mark.parametrize("raw, says", [
    (b"{", "invalid JSON"),
    (b"[1, 2]", "expected a JSON object, got array"),
    (b"", "a JSON object is required"),
    (b"\xff\xfe", "invalid JSON"),
])
def test_conf_malformed_body(api, raw, says):
    assert_refused(api, "PUT", "/v1/conf", raw=raw, status=400, field="body", says=says)


# -- VIPs ---------------------------------------------------------------------------------


def test_vip_create_get_list_delete(api):
    status, vip, headers = api.call("POST", "/v1/vips", dict(VIP4, node_port=30080,
                                                             external_ips=["192.0.2.10"]))
    assert status == 201
    assert headers["Location"] == api.url + "/v1/vips/10.96.0.10/32/80"
    assert vip["prefix"] == "10.96.0.10/32" and vip["port"] == 80
    assert vip["target_port"] == 8080 and vip["node_port"] == 30080
    assert vip["nat"] == "nat44" and vip["protocol"] == "tcp"
    assert vip["external_ips"] == ["192.0.2.10"] and vip["pods"] == []
    assert api.get("/v1/vips") == [vip]
    assert api.get("/v1/vips/10.96.0.10/32/80") == vip
    assert api.get("/v1/vips/10.96.0.10/32") == vip      # the only VIP on that prefix
    assert api.call("DELETE", "/v1/vips/10.96.0.10/32/80")[:2] == (204, None)
    assert api.get("/v1/vips") == []
    assert api.call("GET", "/v1/vips/10.96.0.10/32/80")[0] == 404


def test_vip_defaults_every_port(api):
    vip = add_vip(api, prefix="10.97.0.0/24")
    assert (vip["port"], vip["target_port"], vip["protocol"], vip["new_len"],
            vip["affinity_timeout"], vip["external_policy"], vip["internal_policy"],
            vip["service"]) == (0, 0, "any", 1024, 0, "cluster", "cluster", None)


def test_vip_with_client_ip_affinity(api):
    vip = add_vip(api, **VIP4, affinity_timeout=600)
    assert vip["affinity_timeout"] == 600
    assert api.get("/v1/vips/10.96.0.10/32/80")["affinity_timeout"] == 600


def test_ipv6_vip_in_the_path(api):
    vip = add_vip(api, **VIP6)
    assert vip["nat"] == "nat66"
    assert api.get("/v1/vips/fd00:96::10/128/53") == vip
    assert api.get("/v1/vips/fd00:96::10/128") == vip
    status, vip, _ = api.call("POST", "/v1/vips/fd00:96::10/128/53/pods",
                              {"addresses": ["fd00:1::1", "fd00:1::2"]})
    assert status == 200
    assert [p["address"] for p in vip["pods"]] == ["fd00:1::1", "fd00:1::2"]
    assert api.call("DELETE", "/v1/vips/fd00:96::10/128")[0] == 204
    assert api.get("/v1/vips") == []


def test_duplicate_vip_is_409(api):
    add_vip(api, **VIP4)
    assert_refused(api, "POST", "/v1/vips", VIP4, status=409, says="already exists")


def test_prefix_with_several_vips_needs_the_port(api):
    add_vip(api, **VIP4)
    add_vip(api, **dict(VIP4, port=443, target_port=8443))
    assert_refused(api, "GET", "/v1/vips/10.96.0.10/32", status=400, field="port",
                   says="several VIPs")
    assert_refused(api, "DELETE", "/v1/vips/10.96.0.10/32", status=400, field="port")


@pytest.mark.parametrize("path", ["/v1/vips/10.96.0.99/32/80", "/v1/vips/10.96.0.10/32/81",
                                  "/v1/vips/10.96.0.99/32", "/v1/vips/fd00::99/128/80"])
def test_unknown_vip_is_404(api, path):
    add_vip(api, **VIP4)
    assert_refused(api, "GET", path, status=404, says="no VIP")
    assert_refused(api, "DELETE", path, status=404, says="no VIP")


@pytest.mark.parametrize("body, field, says", [
    ({"port": 80}, "prefix", "is required"),
    (dict(VIP4, port="80"), "port", "expected an integer, got string"),
    (dict(VIP4, port=70000), "port", "70000 is out of range 0-65535"),
    (dict(VIP4, port=-1), "port", "out of range"),
    (dict(VIP4, prefix="10.96.0.300/32"), "prefix", "not an IP prefix"),
    (dict(VIP4, prefix="10.96.0.10/24"), "prefix", "host bits"),
    (dict(VIP4, prefix=["10.96.0.10/32"]), "prefix", "expected a string, got array"),
    (dict(VIP4, protocol="quic"), "protocol", "not one of tcp, udp, sctp, any"),
    (dict(VIP4, nat="nat66"), "nat", "does not match"),
    (dict(VIP4, new_len=1000), "new_len", "power of 2"),
    (dict(VIP4, affinity_timeout=86401), "affinity_timeout", "out of range 0-86400"),
    (dict(VIP4, affinity_timeout="60"), "affinity_timeout", "expected an integer"),
    (dict(VIP4, external_policy="nearest"), "external_policy", "not cluster or local"),
    (dict(VIP4, internal_policy="Local"), "internal_policy", "not cluster or local"),
    (dict(VIP4, source_ranges=["10.0.0.1/8"]), "source_ranges", "host bits set"),
    (dict(VIP4, source_ranges="10.0.0.0/8"), "source_ranges", "expected a list of strings"),
    (dict(VIP4, external_ips="192.0.2.1"), "external_ips", "expected a list of strings"),
    (dict(VIP4, external_ips=["fd00::1"]), "external_ips", "expected IPv4"),
    (dict(VIP4, target_port=None, node_port=70000), "node_port", "out of range"),
    (dict(VIP4, colour="blue"), "colour", "unknown field"),
])
def test_bad_vip_changes_nothing(api, body, field, says):
    add_vip(api, prefix="10.98.0.1/32", port=53, protocol="udp")
    api.service.switch_connected(1)   # so that a change would also show as switch messages
    assert_refused(api, "POST", "/v1/vips", body, status=400, field=field, says=says)


def test_vip_change_programs_connected_switches(api):
    api.service.switch_connected(7)
    sent = len(api.sent)
    add_vip(api, **VIP4)
    assert len(api.sent) > sent and api.sent[-1][0] == 7


# -- pods ---------------------------------------------------------------------------------


def test_pods_add_and_delete(api):
    add_vip(api, **VIP4)
    status, vip, _ = api.call("POST", "/v1/vips/10.96.0.10/32/80/pods",
                              {"addresses": ["10.1.0.2", "10.1.0.1"]})
    assert status == 200
    assert sorted(p["address"] for p in vip["pods"]) == ["10.1.0.1", "10.1.0.2"]
    assert all(p["state"] == "active" for p in vip["pods"])
    # Without a port in the path: the only VIP on the prefix.
    status, vip, _ = api.call("POST", "/v1/vips/10.96.0.10/32/pods",
                              {"addresses": ["10.1.0.3"]})
    assert status == 200 and len(vip["pods"]) == 3
    status, vip, _ = api.call("DELETE", "/v1/vips/10.96.0.10/32/80/pods",
                              {"addresses": ["10.1.0.1"], "flush": True})
    assert status == 200
    assert sorted(p["address"] for p in vip["pods"]) == ["10.1.0.2", "10.1.0.3"]
    # The same, as a query (for clients that cannot send a DELETE body).
    status, vip, _ = api.call("DELETE", "/v1/vips/10.96.0.10/32/80/pods"
                                        "?address=10.1.0.2&address=10.1.0.3&flush=false")
    assert status == 200 and vip["pods"] == []


def test_removed_pod_with_a_session_drains(api):
    add_vip(api, **VIP4)
    api.call("POST", "/v1/vips/10.96.0.10/32/80/pods", {"addresses": ["10.1.0.1"]})
    open_session(api.service, "10.0.0.5", "10.96.0.10", 80, ["10.1.0.1"])
    status, vip, _ = api.call("DELETE", "/v1/vips/10.96.0.10/32/80/pods",
                              {"addresses": ["10.1.0.1"]})
    assert status == 200
    assert vip["pods"][0]["state"] == "draining"


@pytest.mark.parametrize("method, body, status, field, says", [
    ("POST", {"addresses": ["10.1.0.1"]}, 409, None, "already a pod"),
    ("POST", {"addresses": ["10.1.0.9", "fd00::1"]}, 400, "addresses", "expected IPv4"),
    ("POST", {"addresses": ["10.1.0.9", "nonsense"]}, 400, "addresses", "not an IP address"),
    ("POST", {"addresses": "10.1.0.9"}, 400, "addresses", "expected a list of strings"),
    ("POST", {"addresses": [1]}, 400, "addresses", "expected a list of strings"),
    ("POST", {"addresses": []}, 400, "addresses", "at least one"),
    ("POST", {"addresses": ["10.1.0.9", "10.1.0.8", "10.1.0.9"]}, 400, "addresses",
     "10.1.0.9 is listed twice"),
    ("POST", {}, 400, "addresses", "is required"),
    ("POST", {"addresses": ["10.1.0.9"], "flush": True}, 400, "flush", "unknown field"),
    ("DELETE", {"addresses": ["10.1.0.1", "10.1.0.9"]}, 404, None, "not a pod"),
    ("DELETE", {"addresses": ["10.1.0.1"], "flush": "yes"}, 400, "flush",
     "expected a boolean"),
    ("DELETE", {"flush": True}, 400, "addresses", "is required"),
])
def test_bad_pod_change_changes_nothing(api, method, body, status, field, says):
    add_vip(api, **VIP4)
    api.call("POST", "/v1/vips/10.96.0.10/32/80/pods", {"addresses": ["10.1.0.1"]})
    assert_refused(api, method, "/v1/vips/10.96.0.10/32/80/pods", body, status=status,
                   field=field, says=says)


@pytest.mark.parametrize("query, field, says", [
    ("?address=10.1.0.1&flush=maybe", "flush", "not a boolean"),
    ("?address=10.1.0.1&flush=true&flush=false", "flush", "given twice"),
    ("?addr=10.1.0.1", "addr", "unknown query parameter"),
    ("", "addresses", "at least one"),
])
def test_bad_pod_delete_query(api, query, field, says):
    add_vip(api, **VIP4)
    api.call("POST", "/v1/vips/10.96.0.10/32/80/pods", {"addresses": ["10.1.0.1"]})
    assert_refused(api, "DELETE", "/v1/vips/10.96.0.10/32/80/pods" + query, status=400,
                   field=field, says=says)


def test_pods_of_unknown_vip_is_404(api):
    assert_refused(api, "POST", "/v1/vips/10.96.0.10/32/80/pods", {"addresses": ["10.1.0.1"]},
                   status=404, says="no VIP")


# -- interfaces, sessions, counters, show --------------------------------------------------


def test_interfaces(api):
    assert api.get("/v1/interfaces") == {"nat4": [], "nat6": []}
    status, answer, _ = api.call("PUT", "/v1/interfaces/nat4/s1-eth1")
    assert status == 200 and answer == {"nat4": ["s1-eth1"], "nat6": []}
    assert_refused(api, "PUT", "/v1/interfaces/nat4/s1-eth1", status=409, says="already")
    assert_refused(api, "PUT", "/v1/interfaces/nat5/s1-eth1", status=400, field="nat")
    assert_refused(api, "DELETE", "/v1/interfaces/nat6/s1-eth1", status=404)
    assert api.call("DELETE", "/v1/interfaces/nat4/s1-eth1")[:2] == (
        200, {"nat4": [], "nat6": []})


def test_sessions(api):
    add_vip(api, **VIP4)
    add_vip(api, prefix="10.96.0.11/32", port=80, target_port=8080, protocol="tcp")
    api.call("POST", "/v1/vips/10.96.0.10/32/80/pods", {"addresses": ["10.1.0.1"]})
    api.call("POST", "/v1/vips/10.96.0.11/32/80/pods", {"addresses": ["10.1.0.2"]})
    open_session(api.service, "10.0.0.5", "10.96.0.10", 80, ["10.1.0.1", "10.1.0.2"])
    open_session(api.service, "10.0.0.5", "10.96.0.10", 80, [], sport=40001)
    open_session(api.service, "10.0.0.5", "10.96.0.11", 80, [], sport=40002)
    everything = api.get("/v1/sessions")
    assert everything["count"] == 3 and len(everything["sessions"]) == 3
    one = api.get("/v1/sessions?limit=1")
    assert one["count"] == 3 and len(one["sessions"]) == 1
    first = api.get("/v1/sessions?prefix=10.96.0.10/32&port=80")
    assert first["count"] == 2
    assert {s["pod"] for s in first["sessions"]} == {"10.1.0.1:8080"}
    assert api.get("/v1/show")["sessions"] == 3


@pytest.mark.parametrize("query, status, field, says", [
    ("?limit=ten", 400, "limit", "not an integer"),
    ("?limit=-1", 400, "limit", "out of range"),
    ("?limit=1&limit=2", 400, "limit", "given twice"),
    ("?vip=10.96.0.10/32", 400, "vip", "unknown query parameter"),
    ("?prefix=10.96.0.99/32", 404, None, "no VIP"),
])
def test_bad_sessions_query(api, query, status, field, says):
    add_vip(api, **VIP4)
    before = api.state()
    got, answer, _ = api.call("GET", "/v1/sessions" + query)
    assert got == status, answer
    if field is not None:
        assert answer["field"] == field
    assert says in answer["error"]
    assert api.state() == before


def test_counters_and_show(api):
    add_vip(api, **VIP4)
    api.call("POST", "/v1/vips/10.96.0.10/32/80/pods", {"addresses": ["10.1.0.1"]})
    open_session(api.service, "10.0.0.5", "10.96.0.10", 80, ["10.1.0.1"])
    api.service.cache_stats(1, {"hits": 10, "misses": 2})
    counters = api.get("/v1/counters")
    (vip,) = counters["vips"]
    assert (vip["prefix"], vip["port"], vip["new_sessions"]) == ("10.96.0.10/32", 80, 1)
    assert vip["pods"][0]["address"] == "10.1.0.1"
    assert counters["switches"] == {"1": {"hits": 10, "misses": 2, "packet_ins": 2,
                                           "service_packet_ins": 1}}
    show = api.get("/v1/show")
    assert (show["vips"], show["pods"], show["sessions"], show["switches"]) == (1, 1, 1, [1])
    assert show["conf"] == api.get("/v1/conf")


# -- HTTP itself --------------------------------------------------------------------------


@pytest.mark.parametrize("method, path, allow", [
    ("POST", "/v1/conf", "GET, PUT"),
    ("DELETE", "/v1/vips", "GET, POST"),
    ("PUT", "/v1/vips/10.96.0.10/32/80", "DELETE, GET"),
    ("POST", "/v1/vips/fd00::10/128", "DELETE, GET"),
    ("GET", "/v1/vips/10.96.0.10/32/80/pods", "DELETE, POST"),
    ("POST", "/v1/interfaces", "GET"),
    ("GET", "/v1/interfaces/nat4/eth0", "DELETE, PUT"),
    ("DELETE", "/v1/sessions", "GET"),
    ("POST", "/v1/counters", "GET"),
    ("PUT", "/v1/show", "GET"),
])
def test_wrong_method_is_405_with_allow(api, method, path, allow):
    before = api.state()
    status, answer, headers = api.call(method, path, {} if method in ("POST", "PUT") else None)
    assert status == 405 and headers["Allow"] == allow
    assert "not allowed" in answer["error"]
    assert api.state() == before


@pytest.mark.parametrize("path", ["/v1", "/v1/", "/v1/vip", "/v1/vips/10.96.0.10/32/http",
                                  "/v1/vips/10.96.0.10/32/80/pods/10.1.0.1"])
def test_unknown_path_is_json_404(api, path):
    status, answer, _ = api.call("GET", path)
    assert status == 404 and "no such resource" in answer["error"]


def test_a_bug_in_the_service_is_a_json_500(api, monkeypatch):
    def broken():
        raise RuntimeError("boom")
    monkeypatch.setattr(api.service, "show", broken)
    status, answer, _ = api.call("GET", "/v1/show")
    assert status == 500 and answer == {"error": "internal error: RuntimeError: boom"}
    assert api.get("/v1/conf")["buckets"] == 1024    # still serving


def test_openapi_describes_exactly_the_routes():
    with open(os.path.join(ROOT, "docs", "openapi.yaml")) as f:
        doc = yaml.safe_load(f)
    documented = {(path, method.upper()) for path, item in doc["paths"].items()
                  for method in item if method != "parameters"}
    served = {(info["path"], method) for attr in vars(rest.KpRestController).values()
              for info in [getattr(attr, "routing_info", None)] if info
              for method in info["methods"]}
    assert documented == served
