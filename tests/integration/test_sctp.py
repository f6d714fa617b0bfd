"""SCTP Services end to end, as kube-proxy proxies them: a ClusterIP of protocol SCTP on
each switch case (kp-switch's own sessions, Open vSwitch, the packet-in path).

The kernel here has no SCTP sockets (socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) fails
with EPROTONOSUPPORT in a namespace, and the sctp module cannot be loaded), so clients
and pods speak SCTP from crafted packets over raw sockets (topologies/kp_lab/sctp_agent.py):
INIT, INIT ACK, DATA both ways, ABORT, every CRC32c checked by each end with its own
bitwise CRC. A switch that rewrote a port and left the CRC32c stale would have its
packets dropped by the far end (and counted in bad_crc).
"""
import socket
from collections import Counter

import pytest

import kp_lab
from test_kube_proxy import VIP, VIP6, api, configure

PORT, TARGET = 38412, 36412


def _kernel_has_sctp_sockets():
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
        return True
    except OSError:
        return False


def test_sctp_to_a_cluster_ip_reaches_the_pods_with_valid_crc32c(kpnode, controller,
                                                                  switch_kind):
    configure(controller, kpnode, port=PORT, target_port=TARGET, node_port=None,
              protocol="sctp")
    for pod in kpnode.pods:
        kp_lab.start_sctp_server(pod, TARGET, name=pod.name)
    seen = Counter()
    associations = 0
    for client in kpnode.clients:
        for src_port in range(41000, 41008):
            result = kp_lab.sctp_request(client, VIP, PORT, src_port, count=2)
            assert result["ok"], result
            assert result["bad_crc"] == 0, result          # the client's end
            replies = result["replies"]
            assert len(replies) == 3                       # INIT ACK and two DATA
            # The client only ever sees the VIP and its port; the pod sees the client
            # and got every packet with a valid CRC32c after the port rewrite.
            assert {(r["from"], r["from_port"]) for r in replies} == {(VIP, PORT)}
            assert {(r["peer"], r["peer_port"]) for r in replies} == {
                (kpnode.ip(client.name), src_port)}
            assert all(r["bad_crc"] == 0 for r in replies), replies
            assert len({r["name"] for r in replies}) == 1   # one association, one pod
            seen[replies[0]["name"]] += 1
            associations += 1
    assert len(seen) >= 2, seen           # 16 associations spread over the pods
    status, counters = api(controller, "GET", "/counters")
    assert status == 200
    (vip,) = counters["vips"]
    assert vip["protocol"] == "sctp"
    assert vip["new_sessions"] >= associations, vip


def test_sctp_over_ipv6_nat66(kpnode, controller, switch_kind):
    configure(controller, kpnode, prefix=VIP6 + "/128", port=PORT, target_port=TARGET,
              node_port=None, protocol="sctp", family=6)
    for pod in kpnode.pods:
        kp_lab.start_sctp_server(pod, TARGET, name=pod.name)
    client = kpnode.clients[0]
    names = set()
    for src_port in (42001, 42002, 42003, 42004):
        result = kp_lab.sctp_request(client, VIP6, PORT, src_port, count=1)
        assert result["ok"] and result["bad_crc"] == 0, result
        replies = result["replies"]
        assert {(r["from"], r["from_port"]) for r in replies} == {(VIP6, PORT)}
        assert {r["peer"] for r in replies} == {kpnode.ip(client.name, 6)}
        assert all(r["bad_crc"] == 0 for r in replies), replies
        names |= {r["name"] for r in replies}
    assert names <= {p.name for p in kpnode.pods}


def test_an_sctp_vip_with_no_pods_refuses_and_counts_it(kpnode, controller, switch_kind):
    """No endpoints: the controller refuses with ICMP port unreachable, as kube-proxy's
    REJECT does (the client gets no INIT ACK)."""
    configure(controller, kpnode, port=PORT, target_port=TARGET, node_port=None,
              protocol="sctp", pods=[])
    result = kp_lab.sctp_request(kpnode.clients[0], VIP, PORT, 41100, count=1, timeout=1)
    assert not result["ok"] and result["error"] == "no INIT ACK", result
    assert result["unreachable"] == [[3, 3]], result       # ICMP port unreachable
    status, vip = api(controller, "GET", f"/vips/{VIP}/32/{PORT}")
    assert vip["counters"]["no_pod"] >= 1, vip


def test_this_kernel_has_no_sctp_sockets_so_the_traffic_is_crafted():
    """What the module docstring says about the kernel; if this starts failing, the
    kernel gained SCTP and these tests should use real SCTP sockets too."""
    if _kernel_has_sctp_sockets():
        pytest.fail("this kernel has SCTP sockets: test real associations through the VIP")
