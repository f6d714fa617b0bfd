"""Sessions the switch makes and keeps itself (kp-switch in its C data path, Open
vSwitch with its conntrack; kp_app chooses the mode on its own): new connections raise
no packet-in, and neither established sessions nor new connections need the controller
to be there.

The kpnode topology: clients c1, c2 (10.0.0.11, .12), pods p1..p3 (10.0.0.101..103)."""
import ipaddress
import os
import re
import signal
import time

import pytest

import kp_lab
from kp_app.maglev import MaglevTable
from kp_proto.session_hash import session_hash
from test_kube_proxy import VIP, api, configure, serve


# The mode kp_app must choose by itself for each switch that can keep sessions.
OWN_MODE = {'kpswitch': 'lb', 'ovs': 'ct'}


@pytest.fixture(params=sorted(OWN_MODE))
def own_switch(request):
    """A switch that makes sessions itself (its marker set, its service up)."""
    request.node.add_marker(getattr(pytest.mark, request.param))
    if request.param == 'ovs':
        request.getfixturevalue('ovs')
    else:
        ok, detail = request.getfixturevalue('kpswitch_status')
        assert ok, detail
    return request.param


@pytest.fixture
def own_node(own_switch, controller):
    """kpnode on that switch, kp_app left to choose the mode."""
    lab = kp_lab.build_net('kpnode', switch=own_switch, controller_port=controller.of_port,
                           clients=2, pods=3)
    lab.own_switch = own_switch
    try:
        yield lab
    finally:
        lab.close()


def packet_ins(controller) -> int:
    status, counters = api(controller, "GET", "/counters")
    assert status == 200
    return counters["switches"]["1"]["service_packet_ins"]


def test_kp_app_lets_the_switch_make_the_sessions(own_node, controller):
    configure(controller, own_node, port=5000, target_port=5000, node_port=None)
    serve(own_node, "tcp", 5000)
    status, show = api(controller, "GET", "/show")
    assert show["modes"] == {"1": OWN_MODE[own_node.own_switch]}
    c1, c2 = own_node.clients
    assert kp_lab.tcp_session(c1, VIP, 5000, count=1)["ok"]
    assert kp_lab.tcp_session(c2, VIP, 5000, count=1)["ok"]
    before = packet_ins(controller)
    names = set()
    for client in (c1, c2) * 10:
        result = kp_lab.tcp_session(client, VIP, 5000, count=2, interval=0.05)
        assert result["ok"], result
        names.add(result["replies"][0]["name"])
    # 20 new sessions, and no packet-in for any of them.
    assert packet_ins(controller) == before
    assert names == {p.name for p in own_node.pods}
    status, counters = api(controller, "GET", "/counters")
    assert counters["vips"][0]["new_sessions"] >= 22    # counted by the switch
    if own_node.own_switch == 'kpswitch':     # and listed from it
        status, listed = api(controller, "GET", "/sessions?limit=100")
        mine = [s for s in listed["sessions"] if s.get("made_by") == "switch"]
        assert listed["count"] >= 22 and len(mine) >= 22, listed
        assert {s["pod"] for s in mine} == {f"{own_node.ip(p.name)}:5000" for p in own_node.pods}


def test_sessions_and_new_connections_go_on_without_the_controller(own_node, controller):
    configure(controller, own_node, protocol="any", port=5000, target_port=5000,
              node_port=None)
    serve(own_node, "tcp", 5000)
    serve(own_node, "udp", 5000)
    c1, c2 = own_node.clients
    # The clients know the node's MAC (the controller answers ARP for the node's address,
    # and is not going to be there).
    for client in (c1, c2):
        assert kp_lab.tcp_session(client, VIP, 5000, count=1)["ok"]
    tcp = kp_lab.start_tcp_session(c1, VIP, 5000, count=8, interval=0.5)
    udp = kp_lab.start_udp_requests(c1, VIP, 5000, count=8, interval=0.5, src_port=40200)
    time.sleep(1.0)
    os.kill(controller.pid, signal.SIGKILL)     # mid-session, with no goodbye
    controller.proc.wait(5)
    for _ in range(5):      # new connections, with nobody to ask
        result = kp_lab.tcp_session(c2, VIP, 5000, count=1)
        assert result["ok"], result
    tcp, udp = tcp.result(), udp.result()
    assert tcp["ok"] and len({r["name"] for r in tcp["replies"]}) == 1, tcp
    assert udp["ok"] and len({r["name"] for r in udp["replies"]}) == 1, udp


def test_a_flood_of_new_5_tuples_does_not_stop_another_clients_connections(own_node,
                                                                           controller):
    """c1 sends 10,000 new UDP 5-tuples a second to the VIP; c2's new TCP connections to
    it go on being served meanwhile (kp-switch: c1 fills its share of the session table
    and goes untracked past it; Open vSwitch: its conntrack table is far larger)."""
    configure(controller, own_node, protocol="any", port=5000, target_port=5000,
              node_port=None)
    serve(own_node, "tcp", 5000)          # UDP 5000 unserved: the pods answer ICMP
    c1, c2 = own_node.clients
    assert kp_lab.tcp_session(c2, VIP, 5000, count=1)["ok"]
    flood = kp_lab.start_udp_flood(c1, VIP, 5000, rate=10000, seconds=4)
    time.sleep(0.5)
    served = [kp_lab.tcp_session(c2, VIP, 5000, count=1, timeout=3) for _ in range(8)]
    sent = flood.result()
    assert sent["ok"] and sent["sent"] == 40000, sent
    assert [r for r in served if not r["ok"]] == [], served
    if own_node.own_switch == 'kpswitch':
        status, counters = api(controller, "GET", "/counters")
        switch = counters["switches"]["1"]
        # the flood reached the switch's table: c1 got its share, the rest went untracked
        assert switch["lb_created"] >= switch["lb_capacity"] // 4 and switch["lb_untracked"] > 0, \
            switch


def test_a_removed_pod_drains_and_flush_ends_its_sessions(own_node, controller):
    configure(controller, own_node, port=5000, target_port=5000, node_port=None)
    serve(own_node, "tcp", 5000)
    c1, c2 = own_node.clients
    assert kp_lab.tcp_session(c1, VIP, 5000, count=1)["ok"]
    long = kp_lab.start_tcp_session(c1, VIP, 5000, count=10, interval=0.4)
    status, vip = api(controller, "GET", f"/vips/{VIP}/32/5000")
    pods = [p["address"] for p in vip["pods"]]
    status, body = api(controller, "DELETE", f"/vips/{VIP}/32/5000/pods",
                       {"addresses": pods[:2]})        # drain two of the three
    assert status == 200, body
    for _ in range(4):      # new sessions reach the one pod left
        result = kp_lab.tcp_session(c2, VIP, 5000, count=1)
        assert result["ok"] and own_node.ip(result["replies"][0]["name"]) == pods[2], result
    drained = long.result()
    assert drained["ok"], drained      # whichever pod it had, it kept it to the end
    # flush: the switch's sessions of the last pod end at once (its next packet finds no
    # session, and a VIP with no pods left, which refuses it).
    long = kp_lab.start_tcp_session(c1, VIP, 5000, count=10, interval=0.4)
    time.sleep(1.0)
    status, body = api(controller, "DELETE", f"/vips/{VIP}/32/5000/pods",
                       {"addresses": [pods[2]], "flush": True})
    assert status == 200, body
    flushed = long.result()
    assert not flushed["ok"] and 1 <= len(flushed["replies"]) < 10, flushed


def test_a_restarted_controller_takes_over_without_disturbing_the_sessions(own_switch,
                                                                          tmp_path):
    """kp_app stopped and started again with its state file: the same configuration,
    the switch's flows reconciled in place (on Open vSwitch, whose flow ages show it),
    its sessions untouched."""
    state = str(tmp_path / "kp-state.json")
    first = kp_lab.ControllerProcess(extra_args=["--kp-state-file", state]).start()
    second = None
    mode = OWN_MODE[own_switch]
    lab = kp_lab.build_net('kpnode', switch=own_switch, controller_port=first.of_port,
                           clients=2, pods=3)
    try:
        configure(first, lab, protocol="any", port=5000, target_port=5000, node_port=None)
        serve(lab, "tcp", 5000)
        serve(lab, "udp", 5000)
        c1, c2 = lab.clients
        for client in (c1, c2):
            assert kp_lab.tcp_session(client, VIP, 5000, count=1)["ok"]
        status, before = api(first, "GET", "/vips")
        tcp = kp_lab.start_tcp_session(c1, VIP, 5000, count=12, interval=0.5)
        udp = kp_lab.start_udp_requests(c1, VIP, 5000, count=12, interval=0.5, src_port=40300)
        time.sleep(1.0)
        first.stop()
        restarted = time.monotonic()
        second = kp_lab.ControllerProcess(of_port=first.of_port, wsapi_port=first.wsapi_port,
                                          extra_args=["--kp-state-file", state]).start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, show = api(second, "GET", "/show")
            if show.get("modes") == {"1": mode}:
                break
            time.sleep(0.2)
        assert show["modes"] == {"1": mode}, show
        if own_switch == 'ovs':
            # Nothing of kp's was deleted or added again: every flow is older than the
            # restart.
            switch = lab.net.switches[0]
            dump = switch.cmd("ovs-ofctl -O OpenFlow13 dump-flows", switch.name)
            ages = [float(a) for a in
                    re.findall(r"cookie=0x6b[0-9a-f]*, duration=([0-9.]+)s", dump)]
            since = time.monotonic() - restarted
            assert len(ages) > 1024 and min(ages) > since, \
                [line for line in dump.splitlines() if "cookie=0x6b" in line][:20]
        status, after = api(second, "GET", "/vips")
        strip = lambda vips: [{k: v for k, v in vip.items() if k != "counters"} |
                              {"pods": [p["address"] for p in vip["pods"]]} for vip in vips]
        assert strip(after) == strip(before)
        for _ in range(4):
            result = kp_lab.tcp_session(c2, VIP, 5000, count=1)
            assert result["ok"], result
        tcp, udp = tcp.result(), udp.result()
        assert tcp["ok"] and len({r["name"] for r in tcp["replies"]}) == 1, tcp
        assert udp["ok"] and len({r["name"] for r in udp["replies"]}) == 1, udp
    finally:
        lab.close()
        for ctl in (first, second):
            if ctl is not None:
                ctl.stop()


def test_every_switch_and_mode_picks_the_pod_the_model_picks(kpnode, controller, switch_kind):
    """kp-switch (the controller picks), Open vSwitch picking itself (multipath over its
    own hash) and Open vSwitch in packet-in mode: a 5-tuple reaches the pod that
    kp_proto.session_hash and the VIP's Maglev table give, the same on every node."""
    configure(controller, kpnode, port=5000, target_port=5000, node_port=None)
    serve(kpnode, "tcp", 5000)
    status, vip = api(controller, "GET", f"/vips/{VIP}/32/5000")
    table = MaglevTable([ipaddress.ip_address(p["address"]) for p in vip["pods"]],
                        vip["new_len"])
    client = kpnode.clients[0]
    src = ipaddress.ip_address(kpnode.ip(client.name))
    seen = set()
    for sport in range(41000, 41012):
        result = kp_lab.tcp_session(client, VIP, 5000, count=1, src_port=sport)
        assert result["ok"], result
        picked = kpnode.ip(result["replies"][0]["name"])
        h = session_hash(6, src, sport, ipaddress.ip_address(VIP), 5000)
        assert picked == str(table.pick(h)), (sport, picked)
        seen.add(picked)
    assert len(seen) >= 2
