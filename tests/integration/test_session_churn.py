"""kp-switch keeps other traffic cached while kp_app opens sessions.

A new session's flows sit in kp's SESSIONS table, which only service traffic reaches,
so adding them must not invalidate the cached flows of traffic that is not a service's
(here a ping between a client and a pod), nor those of a pod's replies that are routed
to a session on another node. Only kp-switch has a cache to look at.
"""
import time

import pytest

import kp_lab
from test_cluster import add_pods, cluster  # noqa: F401 (a fixture)
from test_kube_proxy import VIP, api, configure, serve

SEND_FROM_PORTS = r"""
import socket, sys, time
addr, port, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for p in range(first, first + count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", p))
    s.sendto(b"hello", (addr, port))
    s.close()
    time.sleep(0.05)     # spread over the ping: each session lands between two pings
"""


@pytest.fixture
def switch_kind(request):
    ok, detail = request.getfixturevalue('kpswitch_status')
    if not ok:
        pytest.fail('kp-switch does not work: %s' % detail)
    return 'kpswitch'


def cache(controller, dpid=1):
    status, counters = api(controller, "GET", "/counters")
    assert status == 200
    return counters["switches"][str(dpid)]


def test_new_sessions_leave_other_cached_traffic_alone(kpnode, controller):
    configure(controller, kpnode, port=5000, target_port=5000, node_port=None,
              protocol="udp")
    serve(kpnode, "udp", 5000)
    c1, c2 = kpnode.clients
    pod = kpnode.ip(kpnode.pods[0].name)
    assert kp_lab.ping(c1, pod, count=2)
    pinger = c1.popen(["ping", "-4", "-n", "-q", "-i", "0.02", "-c", "200", pod])
    time.sleep(0.5)
    before = cache(controller)
    c2.cmd("%s -c '%s' %s 5000 41000 40" % (kp_lab.traffic.PYTHON, SEND_FROM_PORTS, VIP))
    time.sleep(0.5)
    after = cache(controller)
    pinger.wait(timeout=10)
    status, vip = api(controller, "GET", f"/vips/{VIP}/32/5000")
    assert vip["counters"]["new_sessions"] >= 40
    assert after["invalidated"] - before["invalidated"] < 10, (before, after)


def test_new_sessions_leave_a_pods_replies_to_other_nodes_cached(cluster, controller):
    add_pods(controller, cluster, ["n2p1"])
    far, near = cluster.host("n1c1"), cluster.host("n2c1")
    # A long UDP flow from node 1: its session is there, and node 2 routes the pod's
    # replies back to it with the pod's "replies to elsewhere" flow.
    flow = kp_lab.start_udp_requests(far, VIP, 80, count=150, interval=0.02, src_port=45000)
    time.sleep(1.0)
    before = cache(controller, 2)
    near.cmd("%s -c '%s' %s 80 41000 40" % (kp_lab.traffic.PYTHON, SEND_FROM_PORTS, VIP))
    time.sleep(0.5)
    after = cache(controller, 2)
    result = flow.result()
    assert result["ok"], result
    status, vip = api(controller, "GET", f"/vips/{VIP}/32/80")
    assert vip["counters"]["new_sessions"] >= 41
    # Each local session's reply flow lies inside the pod's "replies to this node" flow,
    # which shields the routed flow: it stays cached (before: ~40 invalidations).
    assert after["invalidated"] - before["invalidated"] < 10, (before, after)
