"""A real kp_app (ryu-manager) programming a real kp-switch that refuses: its tables hold
few flows (--max-flows), so a VIP's flow-mod comes back as OFPFMFC_TABLE_FULL. kp_app
must not take the VIP for installed, must count and show the refusal (REST, ku show,
/metrics), and must retry it until the switch takes it (kp_app.refusals)."""
import os
import subprocess

import pytest
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_app_process import KpApp
from of_harness import DP, VENV_BIN, Hosts, SwitchProcess, connect

pytestmark = pytest.mark.kpswitch
DPID = 0x31
MAX_FLOWS = 40      # per table: kp's base flows fit, a few dozen VIPs do not


@pytest.fixture
def rig():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    hosts = Hosts(2, net=83)
    app = sw = None
    try:
        app = KpApp()
        sw = SwitchProcess([h.port_if for h in hosts], controller=app.target, dpid=DPID,
                           extra=("--max-flows", str(MAX_FLOWS)))
        app.switch_programmed(DPID)
        yield app, sw
    finally:
        if sw is not None:
            sw.stop()
        if app is not None:
            app.stop()
        hosts.close()


def vip_path(i):
    return "/v1/vips/10.96.1.%d/32/80" % i


def programming(app, i):
    return app.get(vip_path(i))["programming"][str(DPID)]


def settled(app, i):
    """The VIP's state on the switch once the switch answered its barrier."""
    state = app.wait("VIP %d answered" % i,
                     lambda: programming(app, i)["state"] != "pending" and programming(app, i))
    return state


def table0_destinations(sw):
    ch = connect(sw.listen_port)
    try:
        flows = ch.stats(parser.OFPFlowStatsRequest(DP, table_id=0))
    finally:
        ch.close()
    return {dict(f.match.items()).get("ipv4_dst") for f in flows}


def test_a_vip_the_switch_refuses_is_counted_shown_and_retried_until_taken(rig):
    app, sw = rig
    refused = None
    for i in range(1, MAX_FLOWS + 1):
        status, body = app.call("POST", "/v1/vips", {"prefix": "10.96.1.%d/32" % i, "port": 80,
                                                     "protocol": "tcp", "target_port": 8080})
        assert status == 201, body
        state = settled(app, i)
        if state["state"] != "installed":
            refused = i
            break
    assert refused is not None and refused > 1, "the switch took %d VIPs" % MAX_FLOWS
    state = programming(app, refused)
    assert state["state"] == "retrying" and state["error"] == "FLOW_MOD_FAILED TABLE_FULL"
    assert programming(app, 1) == {"state": "installed", "refused": 0}
    # Not in the switch, and kp_app says so everywhere the operator looks.
    assert "10.96.1.%d" % refused not in table0_destinations(sw)
    show = app.get("/v1/show")["channels"][str(DPID)]
    assert show["refused"]["vip"] >= 1 and show["vips_refused"]
    assert show["last_refused"]["error"] == "FLOW_MOD_FAILED TABLE_FULL"
    counters = {v["prefix"]: v for v in app.get("/v1/counters")["vips"]}
    assert counters["10.96.1.%d/32" % refused]["refused"] >= 1
    _, metrics = app.call("GET", "/v1/metrics")
    assert 'kp_switch_refused_total{dpid="%d",kind="vip"}' % DPID in metrics
    assert 'kp_switch_vips_refused{dpid="%d"} 1.0' % DPID in metrics
    ku = subprocess.run([os.path.join(VENV_BIN, "ku"), "--api", app.url, "show"],
                        capture_output=True, text=True, timeout=30)
    assert "retrying by switch %d: FLOW_MOD_FAILED TABLE_FULL" % DPID in ku.stdout, ku.stdout
    assert "switch %d refused:" % DPID in ku.stdout

    # Room made: a retry (at most 16 s after the last) gets it in.
    assert app.call("DELETE", vip_path(1))[0] in (200, 204)
    app.wait("the refused VIP installed on retry",
             lambda: programming(app, refused)["state"] == "installed", timeout=45)
    assert "10.96.1.%d" % refused in table0_destinations(sw)
    assert programming(app, refused)["refused"] >= 1
    assert app.get("/v1/show")["channels"][str(DPID)]["vips_refused"] == []
