"""kp-switch driven by a real Ryu controller (ryu.app.simple_switch_13): hosts in
private namespaces ping each other; when the controller goes away the learned flows
keep forwarding (fail-secure)."""
import os
import subprocess
import time

import pytest

from of_harness import VENV_BIN, Hosts, SwitchProcess, connect, free_port, sh

pytestmark = pytest.mark.kpswitch


@pytest.fixture
def ryu_rig():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    hosts = Hosts(2, net=79)
    ryu = sw = None
    try:
        port = free_port()
        ryu = subprocess.Popen([os.path.join(VENV_BIN, "ryu-manager"), "--ofp-tcp-listen-port", str(port),
                                "ryu.app.simple_switch_13"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        sw = SwitchProcess([h.port_if for h in hosts], controller="tcp:127.0.0.1:%d" % port)
        yield hosts, ryu, sw
        assert sw.stop() == 0
    finally:
        if sw is not None:
            sw.stop()
        if ryu is not None and ryu.poll() is None:
            ryu.terminate()
            ryu.wait(10)
        hosts.close()


def test_simple_switch_13_pings_and_fail_secure(ryu_rig):
    hosts, ryu, sw = ryu_rig
    deadline = time.monotonic() + 30
    while not hosts[0].ping(hosts[1].ip4, count=1, wait=1):
        assert time.monotonic() < deadline, sw.log()[-2000:]
    assert hosts[0].ping(hosts[1].ip4, count=5, interval=0.05)
    assert hosts[1].ping(hosts[0].ip6, count=3, interval=0.05)
    r = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "tcp:127.0.0.1:%d" % sw.listen_port)
    assert "actions=CONTROLLER:65535" in r.stdout and "dl_dst=%s" % hosts[1].mac in r.stdout
    ryu.terminate()
    ryu.wait(10)
    time.sleep(0.5)
    assert hosts[0].ping(hosts[1].ip4, count=3, interval=0.05)  # flows kept
    mgmt = connect(sw.listen_port)
    mgmt.close()
    assert sw.proc.poll() is None
