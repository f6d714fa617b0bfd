"""Node addresses a switch announces in its description: the format, and how kp_app
takes them (a hand setting always wins; a bad announcement changes nothing)."""
import copy
import re
import ipaddress
import logging

import pytest

from kp_app import frames, pipeline
from kp_app.kubeproxy import KubeProxy
from kp_app.node import gateway_mac
from kp_proto.node_announcement import (format_announcement, parse_announcement,
                                      with_announcement)

iface = ipaddress.ip_interface
FABRIC = 256


# --------------------------------------------------------------------------- the format

def test_format_and_parse_round_trip():
    text = format_announcement("10.0.1.1/24", "fd00:0:0:1::1/64")
    assert text == "kp-node ipv4=10.0.1.1/24 ipv6=fd00:0:0:1::1/64"
    assert parse_announcement(text) == (iface("10.0.1.1/24"), iface("fd00:0:0:1::1/64"))
    assert format_announcement("10.0.2.1/24") == "kp-node ipv4=10.0.2.1/24"
    assert format_announcement(ipv6="fd00::1/64") == "kp-node ipv6=fd00::1/64"
    assert format_announcement() == ""


def test_human_text_before_the_announcement_is_kept_and_skipped():
    desc = with_announcement("dpid 0000000000000001", format_announcement("10.0.1.1/24"))
    assert desc == "dpid 0000000000000001 kp-node ipv4=10.0.1.1/24"
    assert parse_announcement(desc) == (iface("10.0.1.1/24"), None)
    # As the switch sends it: a NUL-padded byte field.
    assert parse_announcement(desc.encode() + b"\0" * 40) == (iface("10.0.1.1/24"), None)
    assert with_announcement("s1", "") == "s1"


@pytest.mark.parametrize("desc", ["dpid 0000000000000001", "s1", "", "None",
                                  "kp-switch userspace datapath", b"\0" * 256])
def test_no_announcement(desc):
    assert parse_announcement(desc) is None


@pytest.mark.parametrize("desc, says", [
    ("kp-node", "announces no address"),
    ("kp-node ipv4=10.0.1.1", "no /prefix length"),
    ("kp-node ipv4=10.0.1.300/24", "not an address"),
    ("kp-node ipv4=fd00::1/64", "is IPv6, not IPv4"),
    ("kp-node ipv6=10.0.1.1/24", "is IPv4, not IPv6"),
    ("kp-node ipv4=10.0.1.1/33", "not an address"),
    ("kp-node ipv4=10.0.1.1/24 ipv4=10.0.2.1/24", "given twice"),
    ("kp-node ipv5=10.0.1.1/24", "is not ipv4="),
    ("kp-node ipv4=10.0.1.1/24 extra", "is not ipv4="),
    ("kp-node ipv4=10.0.1.1/24 kp-node ipv4=10.0.1.1/24", "more than once"),
])
def test_malformed_announcements_say_what_is_wrong(desc, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_announcement(desc)


@pytest.mark.parametrize("ipv4, ipv6", [("10.0.1.1", None), ("fd00::1/64", None),
                                        (None, "10.0.0.1/24"), ("nonsense", None)])
def test_format_refuses_what_parse_would(ipv4, ipv6):
    with pytest.raises(ValueError):
        format_announcement(ipv4, ipv6)


def test_a_too_long_description_is_refused():
    with pytest.raises(ValueError, match="longer than 255"):
        with_announcement("x" * 250, format_announcement("10.0.1.1/24"))


# --------------------------------------------------------------------------- the model

@pytest.fixture
def kp():
    sent = []
    proxy = KubeProxy(lambda dpid, msgs: sent.append((dpid, msgs)), clock=lambda: 100.0)
    proxy.sent = sent
    return proxy


def test_an_announcement_fills_what_ku_conf_dpid_fills(kp):
    kp.switch_described(1, b"dpid 0000000000000001 kp-node ipv4=10.0.1.1/24 "
                           b"ipv6=fd00:0:0:1::1/64\0\0")
    assert kp.conf()["nodes"] == {"1": {
        "node_ip": "10.0.1.1", "node_ip6": "fd00:0:0:1::1", "node_subnet": "10.0.1.0/24",
        "node_subnet6": "fd00:0:0:1::/64", "announced": ["node_ip", "node_ip6"]}}
    assert str(kp.model.node_addresses(1).ipv4) == "10.0.1.1"
    assert kp.conf()["node_ip"] is None          # the default is not touched


def test_a_hand_setting_wins_and_replaces_an_announced_one(kp):
    kp.set_conf(node_ip="192.168.5.1/24", dpid=2)
    kp.switch_described(2, "kp-node ipv4=10.0.2.1/24 ipv6=fd00:0:0:2::1/64")
    node = kp.conf()["nodes"]["2"]
    # IPv4 was set by hand: it stays; IPv6 was not: the announcement fills it.
    assert (node["node_ip"], node["node_ip6"], node["announced"]) == (
        "192.168.5.1", "fd00:0:0:2::1", ["node_ip6"])
    # A later hand setting replaces the announced address, and is no longer announced.
    kp.set_conf(node_ip6="fd00:0:0:99::1/64", dpid=2)
    node = kp.conf()["nodes"]["2"]
    assert (node["node_ip6"], node["announced"]) == ("fd00:0:0:99::1", [])
    # ...and later announcements leave both alone.
    kp.switch_described(2, "kp-node ipv4=10.0.7.1/24 ipv6=fd00:0:0:7::1/64")
    assert kp.conf()["nodes"]["2"] == node


def test_a_new_announcement_replaces_the_old_and_none_withdraws_it(kp):
    kp.switch_described(3, "kp-node ipv4=10.0.3.1/24 ipv6=fd00:0:0:3::1/64")
    kp.switch_described(3, "kp-node ipv4=10.0.30.1/24")
    assert kp.conf()["nodes"]["3"]["node_ip"] == "10.0.30.1"
    assert kp.conf()["nodes"]["3"]["node_ip6"] is None
    kp.switch_described(3, "dpid 0000000000000003")      # it announces nothing now
    assert kp.conf()["nodes"] == {}
    kp.set_conf(node_ip="10.0.3.1", dpid=3)
    kp.switch_described(3, "s3")                          # a hand setting is not withdrawn
    assert kp.conf()["nodes"]["3"]["node_ip"] == "10.0.3.1"


@pytest.mark.parametrize("desc", [
    "kp-node ipv4=10.0.9.300/24", "kp-node ipv4=fd00::1/64", "kp-node", "kp-node ipv4=10.0.9.1",
    b"kp-node ipv4=\xff\xfe/24", "kp-node ipv4=10.0.9.1/24 ipv4=10.0.8.1/24",
])
def test_a_bad_announcement_is_ignored_with_one_log_line(kp, caplog, desc):
    kp.switch_described(4, "kp-node ipv4=10.0.4.1/24")
    kp.switch_connected(4, {1: "s4-eth1"})
    before, sent = copy.deepcopy(kp.conf()), len(kp.sent)
    with caplog.at_level(logging.INFO, logger="kp_app"):
        kp.switch_described(4, desc)
    assert kp.conf() == before
    assert len(kp.sent) == sent                           # nothing reprogrammed
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.WARNING
    assert "switch 0000000000000004: ignoring its node announcement" in caplog.text


def test_the_same_announcement_again_changes_and_sends_nothing(kp):
    kp.switch_connected(5, {1: "s5-eth1"})
    kp.switch_described(5, "kp-node ipv4=10.0.5.1/24")
    sent = len(kp.sent)
    kp.switch_described(5, "s5 kp-node ipv4=10.0.5.1/24")
    assert len(kp.sent) == sent


def test_announced_addresses_route_a_cluster_with_no_hand_configuration():
    """kpcluster,nodes=3 where the switches announce and nobody types `ku conf`: the
    routes between node subnets appear as with `ku conf node_ip ... dpid n`."""
    sent = {}
    kp = KubeProxy(lambda dpid, msgs: sent.setdefault(dpid, []).extend(msgs), clock=lambda: 5.0)
    for n in (1, 2, 3):
        kp.switch_connected(n, {1: f"s{n}-eth1", 2: f"s{n}-eth2", 3: f"s{n}-eth3"})
    kp.switch_connected(FABRIC, {1: "f0-eth1", 2: "f0-eth2", 3: "f0-eth3"})
    kp.switch_described(FABRIC, "f0")
    for n in (1, 2, 3):
        kp.packet_in(FABRIC, n, kp.probes.probe(gateway_mac(n), n, 3, 5.0))
    assert kp.nodes[1].routes == []                       # nothing known yet
    sent.clear()
    for n in (1, 2, 3):
        kp.switch_described(n, f"s{n} kp-node ipv4=10.0.{n}.1/24 ipv6=fd00:0:0:{n}::1/64")
    assert [(str(s), mac, port) for s, mac, port in kp.nodes[1].routes] == [
        ("10.0.2.0/24", gateway_mac(2), 3), ("10.0.3.0/24", gateway_mac(3), 3),
        ("fd00:0:0:2::/64", gateway_mac(2), 3), ("fd00:0:0:3::/64", gateway_mac(3), 3)]
    assert str(kp.model.node_addresses(2).ipv4) == "10.0.2.1"
    assert sent[1], "node 1 was reprogrammed with its routes"


def test_an_announcement_reprograms_its_node_and_only_the_routes_of_the_others():
    """Switches announce as they connect: the fabric (no route of its own changes) is
    left alone, so that the link probes crossing it are not lost to a reprogramming."""
    sent = {}
    kp = KubeProxy(lambda dpid, msgs: sent.setdefault(dpid, []).extend(msgs), clock=lambda: 5.0)
    for n in (1, 2):
        kp.switch_connected(n, {1: f"s{n}-eth1", 2: f"s{n}-eth2", 3: f"s{n}-eth3"})
    kp.switch_connected(FABRIC, {1: "f0-eth1", 2: "f0-eth2"})
    for n in (1, 2):
        kp.packet_in(FABRIC, n, kp.probes.probe(gateway_mac(n), n, 3, 5.0))
    kp.switch_described(1, "kp-node ipv4=10.0.1.1/24")
    sent.clear()
    kp.switch_described(2, "kp-node ipv4=10.0.2.1/24")
    assert FABRIC not in sent
    # Node 1 gets its new route alone; node 2 all of its programming.
    assert [m.cookie_mask for m in sent[1] if hasattr(m, "cookie_mask")] == [
        pipeline.MASK_TAG | pipeline.MASK_KIND]
    assert any(getattr(m, "cookie_mask", None) == pipeline.MASK_TAG for m in sent[2])
    assert [str(s) for s, _, _ in kp.nodes[1].routes] == ["10.0.2.0/24"]
