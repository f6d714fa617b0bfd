"""Endpoint conditions and topology hints as kube-proxy's CategorizeEndpoints uses them:
ready endpoints; when none is ready, the serving and terminating ones; hints for the
node's zone when the Service asks for them and they are complete."""
import pytest

from kp_app.errors import InvalidInput
from kp_app.kubernetes import desired_services
from test_kubernetes import SLICE, endpoint, eslice, port, service


def pods(objs, zone=None):
    (vip,) = desired_services(objs, zone)["default/web"]
    return list(vip.pods)


def web(*endpoints_, **spec):
    return [service(**spec), eslice("web-a", list(endpoints_), [port(8080)])]


def test_ready_endpoints_win_over_terminating_ones():
    objs = web(endpoint("10.0.0.1", ready=True),
               endpoint("10.0.0.2", ready=False, serving=True, terminating=True))
    assert pods(objs) == ["10.0.0.1"]


def test_serving_terminating_endpoints_are_used_when_none_is_ready():
    objs = web(endpoint("10.0.0.2", ready=False, serving=True, terminating=True),
               endpoint("10.0.0.3", ready=False, serving=False, terminating=True),
               endpoint("10.0.0.4", ready=False, serving=True, terminating=False))
    # only the one both serving and terminating: not-serving ones are draining out,
    # a serving but not terminating not-ready one is kube-proxy's "not ready" too
    assert pods(objs) == ["10.0.0.2"]


def test_an_unknown_serving_condition_counts_as_serving():
    objs = web(endpoint("10.0.0.2", ready=False, terminating=True))   # an older API server
    assert pods(objs) == ["10.0.0.2"]


def test_nothing_serving_means_no_pods():
    objs = web(endpoint("10.0.0.3", ready=False, serving=False, terminating=True))
    assert pods(objs) == []


def test_the_fallback_is_per_family():
    objs = [service(clusterIPs=["10.96.0.10", "fd00::a"], ipFamilies=["IPv4", "IPv6"]),
            eslice("web-a", [endpoint("10.0.0.1")], [port(8080)]),
            eslice("web-b", [endpoint("fd00::2", ready=False, serving=True, terminating=True)],
                   [port(8080)], address_type="IPv6")]
    by_prefix = {v.prefix: list(v.pods) for v in desired_services(objs)["default/web"]}
    assert by_prefix == {"10.96.0.10/32": ["10.0.0.1"], "fd00::a/128": ["fd00::2"]}


def zoned(address, *zones, **conditions):
    return {**endpoint(address, **conditions), "hints": {"forZones": [{"name": z} for z in zones]}}


HINTED = (zoned("10.0.0.1", "a"), zoned("10.0.0.2", "b"), zoned("10.0.0.3", "a", "b"))


def test_prefer_close_keeps_the_zones_own_endpoints():
    objs = web(*HINTED, trafficDistribution="PreferClose")
    assert pods(objs, "a") == ["10.0.0.1", "10.0.0.3"]
    assert pods(objs, "b") == ["10.0.0.2", "10.0.0.3"]


def test_hints_are_ignored_without_a_zone_without_asking_or_when_incomplete():
    assert pods(web(*HINTED, trafficDistribution="PreferClose")) == [
        "10.0.0.1", "10.0.0.2", "10.0.0.3"]                     # the node's zone unknown
    assert pods(web(*HINTED), "a") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]    # not asked
    partial = web(*HINTED, endpoint("10.0.0.4"), trafficDistribution="PreferClose")
    assert pods(partial, "a") == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    # no endpoint for the node's zone: the hints are no use, all are used
    assert pods(web(*HINTED, trafficDistribution="PreferClose"), "c") == [
        "10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_the_topology_mode_annotation_asks_for_hints_too():
    objs = web(*HINTED)
    objs[0]["metadata"]["annotations"] = {"service.kubernetes.io/topology-mode": "Auto"}
    assert pods(objs, "b") == ["10.0.0.2", "10.0.0.3"]


def test_hints_do_not_keep_terminating_endpoints_out_when_none_is_ready():
    objs = web(zoned("10.0.0.1", "a", ready=False, serving=True, terminating=True),
               trafficDistribution="PreferClose")
    assert pods(objs, "b") == ["10.0.0.1"]


@pytest.mark.parametrize("bad, field", [
    ({"serving": "yes"}, "endpoints[0].conditions.serving"),
    ({"terminating": 1}, "endpoints[0].conditions.terminating"),
])
def test_malformed_conditions_are_named(bad, field):
    with pytest.raises(InvalidInput) as error:
        desired_services(web(endpoint("10.0.0.1", **bad)))
    assert error.value.field == SLICE + field


def test_malformed_hints_are_named():
    bad = {**endpoint("10.0.0.1"), "hints": {"forZones": [{"name": 3}]}}
    with pytest.raises(InvalidInput) as error:
        desired_services(web(bad))
    assert error.value.field == SLICE + "endpoints[0].hints.forZones[0].name"
    with pytest.raises(InvalidInput) as error:
        desired_services(web(endpoint("10.0.0.1"), trafficDistribution=5))
    assert error.value.field == "Service default/web: spec.trafficDistribution"
