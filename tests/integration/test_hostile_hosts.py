"""Hostile hosts on a node's ports (issue #13), with real frames through a real switch
(kp-switch making sessions itself, Open vSwitch with conntrack and in packet-in mode):

- a host that claims the node's, a VIP's or a pod's address (gratuitous ARP, ARP
  replies, unsolicited neighbour advertisements) takes none of them: the VIP keeps
  reaching the real pod, and no other host is told the node's, the VIP's or the pod's
  address is the attacker's;
- a host that forges kp's link probes, or sends one back, makes no fabric link of its
  port: the pods behind the node's ports stay reachable through a VIP;
- the fabric's real links, confirmed by the probes kp sends again and again, outlive
  the time after which an unconfirmed link goes.

The kpnode topology (topologies/kp.py): node 10.0.0.1 / fd00::1 (every host's gateway),
clients c1, c2, pods p1..p3.
"""
import ipaddress
import subprocess
import sys
import time

import pytest

import kp_lab
from test_cluster import cluster  # noqa: F401 (a fixture)
from test_cluster import add_pods
from test_kube_proxy import DIRECT, VIP, VIP6, api, configure

from kp_app import frames
from kp_app.links import LinkProbes

# Sends each hex frame given out of the interface (a host's raw socket).
SEND = ("import socket, sys\n"
        "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
        "s.bind((sys.argv[1], 0))\n"
        "for h in sys.argv[2:]:\n"
        "    s.send(bytes.fromhex(h))\n")
# Waits for one of kp's link probes on the interface and prints it in hex.
CAPTURE_PROBE = ("import socket, sys\n"
                 "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(%d))\n"
                 "s.bind((sys.argv[1], 0))\n"
                 "s.settimeout(float(sys.argv[2]))\n"
                 "print(s.recv(2048).hex())\n" % frames.LINK_PROBE_ETHERTYPE)


# Probes every second (ten by default): a link then lives 3.5 s unconfirmed, and the test
# that links outlive that through the periodic probes waits seconds, not a minute.
PROBE_SECONDS = 1.0


@pytest.fixture
def controller_extra_args():
    return ["--kp-probe-interval", str(PROBE_SECONDS)]


def run_in(host, script, *args, timeout=30):
    proc = host.popen([sys.executable, "-c", script, host.defaultIntf().name, *args],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      universal_newlines=True)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def send(host, *data):
    run_in(host, SEND, *[d.hex() for d in data])


def neighbour_mac(host, address):
    """The MAC `host` holds for `address` ('' when it holds none)."""
    out = host.cmd("ip neigh show %s" % address).split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else ""


def unsolicited_na(mac, address):
    """'`address` is at `mac`' to all nodes, with the override flag (frames' DAD answer)."""
    dad = frames.parse(frames.neighbor_solicit(mac, ipaddress.IPv6Address("::"),
                                               ipaddress.IPv6Address(address)))
    return frames.neighbor_advert(dad, mac)


def reaches_only(client, address, pod_name, count=6):
    names = []
    for _ in range(count):
        result = kp_lab.http_get(client, kp_lab.url_for(address, 80))
        assert result["ok"], result
        names.append(result["body"]["name"])
    return set(names) == {pod_name}


def wait_for_log(controller, text, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in controller.log_tail(400):
            return True
        time.sleep(0.2)
    return False


def test_a_host_claiming_the_nodes_a_vips_or_a_pods_address_takes_none(kpnode, controller):
    c1, attacker = kpnode.clients
    p1 = kpnode.pods[0]
    configure(controller, kpnode, pods=[kpnode.ip(p1.name)])
    configure(controller, kpnode, prefix=VIP6 + "/128", node_port=None,
              pods=[kpnode.ip(p1.name, 6)])
    kp_lab.start_http_server(p1, 8080, name=p1.name)
    assert reaches_only(c1, VIP, p1.name) and reaches_only(c1, VIP6, p1.name)
    gateway4, gateway6 = neighbour_mac(c1, "10.0.0.1"), neighbour_mac(c1, "fd00::1")
    assert gateway4 and gateway6
    pod4, pod6 = kpnode.ip(p1.name), kpnode.ip(p1.name, 6)
    assert kp_lab.ping(c1, pod4) and kp_lab.ping(c1, pod6)     # c1 knows the pod too
    assert neighbour_mac(c1, pod4) == neighbour_mac(c1, pod6) == p1.MAC()
    mac = attacker.MAC()
    claims = []
    for address in ("10.0.0.1", VIP, kpnode.ip(p1.name)):
        claims += [frames.arp(1, mac, address, "00:00:00:00:00:00", address,
                              eth_dst=frames.BROADCAST),       # gratuitous request
                   frames.arp(2, mac, address, frames.BROADCAST, address)]  # and reply
    for address in ("fd00::1", VIP6, kpnode.ip(p1.name, 6)):
        claims.append(unsolicited_na(mac, address))
    for _ in range(3):      # (Linux takes an override only once its lock time is over)
        send(attacker, *claims)
        time.sleep(1.1)
    assert wait_for_log(controller, "refused a host's claim")
    # The VIPs still reach the real pod, new connections and all.
    assert reaches_only(c1, VIP, p1.name) and reaches_only(c1, VIP6, p1.name)
    # Nobody was told that the gateway or a VIP is the attacker.
    assert neighbour_mac(c1, "10.0.0.1") == gateway4
    assert neighbour_mac(c1, "fd00::1") == gateway6
    assert mac not in (neighbour_mac(c1, VIP), neighbour_mac(c1, VIP6))
    assert neighbour_mac(c1, pod4) == neighbour_mac(c1, pod6) == p1.MAC()
    assert kp_lab.ping(c1, pod4) and kp_lab.ping(c1, pod6)
    # ... and the operator sees the claims refused, in REST and in /metrics
    status, shown = api(controller, "GET", "/show")
    assert status == 200 and shown["hosts"]["1"]["claims_refused"] >= len(claims)
    assert scraped(controller, "kp_host_claims_refused_total") >= len(claims)


def scraped(controller, name: str) -> float:
    with DIRECT.open(controller.metrics_url(), timeout=15) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_host_forging_or_returning_link_probes_makes_no_link(kpnode, controller):
    c1, attacker = kpnode.clients
    p1 = kpnode.pods[0]
    # A probe kp sent out of the attacker's port, captured there...
    captured = bytes.fromhex(run_in(attacker, CAPTURE_PROBE, "25").strip())
    assert frames.is_link_probe(captured)
    # ...sent back into it, and probes forged for every port of the switch, as if from
    # the switch itself (dpid 1) or from another one.
    forger = LinkProbes(b"not the controller's secret.....")
    forged = [forger.probe(frames.mac_str(bytes(6)), dpid, port, time.monotonic())
              for dpid in (1, 2) for port in range(1, 7)]
    send(attacker, captured, *forged)
    assert wait_for_log(controller, "refused a link probe")
    assert scraped(controller, "kp_link_probes_refused_total") >= 1
    assert api(controller, "GET", "/show")[1]["link_probes_refused"] >= 1
    # Had any made a link, its ports would no longer be host ports: kp would not look
    # for pods behind them, nor forward to them. p1 is found, and reached.
    configure(controller, kpnode, pods=[kpnode.ip(p1.name)])
    kp_lab.start_http_server(p1, 8080, name=p1.name)
    assert reaches_only(c1, VIP, p1.name)
    assert kp_lab.ping(attacker, kpnode.ip(c1.name))


def test_fabric_links_outlive_the_link_timeout_through_periodic_probes(cluster, controller):
    add_pods(controller, cluster, ["n3p1"])
    client = cluster.host("n1p1")
    assert kp_lab.ping(client, cluster.ip("n3p2"))      # routed over the fabric
    timeout = LinkProbes(interval=PROBE_SECONDS).link_timeout
    time.sleep(timeout + PROBE_SECONDS)                 # what an unconfirmed link lives
    assert kp_lab.ping(client, cluster.ip("n3p2"))
    assert kp_lab.http_get(client, kp_lab.url_for(VIP, 80))["ok"]
    assert "no probe confirmed" not in controller.log_tail(2000)
