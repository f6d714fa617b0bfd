"""The lab harness itself: traffic helpers, the OpenFlow probe, the controller process,
and teardown after failures and signals (with Ryu's simple_switch_13 as controller)."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

kp_lab = pytest.importorskip("kp_lab")
from kp_lab import procs  # noqa: E402


@pytest.fixture
def controller_app():
    return 'ryu.app.simple_switch_13'


# --------------------------------------------------------------------------- no network

def fake_of13_switch(dpid):
    """A listening socket that answers HELLO and FEATURES_REQUEST like an OF 1.3 switch."""
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(struct.pack('!BBHI', 4, 0, 8, 7))
            buf = b''
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                while len(buf) >= 8:
                    _, mtype, length, xid = struct.unpack('!BBHI', buf[:8])
                    buf = buf[length:]
                    if mtype == 5:
                        conn.sendall(struct.pack('!BBHIQIBB2xII', 4, 6, 32, xid, dpid,
                                                 256, 254, 0, 0, 0))

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_of13_probe_reads_the_dpid():
    server = fake_of13_switch(0x1234)
    try:
        assert kp_lab.of13_features('127.0.0.1', server.getsockname()[1]) == 0x1234
    finally:
        server.close()
    assert kp_lab.of13_features('127.0.0.1', kp_lab.free_port(), timeout=0.5) is None


def test_controller_process_starts_and_stops(controller_app):
    ctl = kp_lab.ControllerProcess(controller_app, rest=False).start()
    try:
        assert ctl.alive() and ctl.of_port in ctl.listening()
        pid = ctl.pid
    finally:
        ctl.stop()
    assert not procs.pid_alive(pid)
    with socket.socket() as s:          # the port is free again
        s.bind(('127.0.0.1', ctl.of_port))


# --------------------------------------------------------------------------- on Mininet

def test_traffic_helpers(kpnode, switch_kind):
    lab = kpnode
    c1, p1, p2, p3 = (lab.host(n) for n in ('c1', 'p1', 'p2', 'p3'))
    web = kp_lab.start_http_server(p1, 80)
    kp_lab.start_tcp_server(p2, 5000)
    kp_lab.start_udp_server(p3, 5001)

    for family, client_addr in ((4, '10.0.0.11'), (6, 'fd00::11')):
        got = kp_lab.http_get(c1, kp_lab.url_for(lab.ip('p1', family), 80, '/x'))
        assert got['ok'] and got['status'] == 200, got
        assert (got['body']['name'], got['body']['peer'], got['body']['path']) == (
            'p1', client_addr, '/x')

    session = kp_lab.start_tcp_session(c1, lab.ip('p2', 6), 5000, count=3, interval=0.2)
    udp = kp_lab.udp_request(c1, lab.ip('p3'), 5001, count=2, src_port=40001)
    tcp = session.result()
    assert tcp['ok'], tcp
    assert [r['name'] for r in tcp['replies']] == ['p2'] * 3
    assert {r['peer_port'] for r in tcp['replies']} == {tcp['local_port']}
    assert [r['seq'] for r in tcp['replies']] == ['0', '1', '2']
    assert udp['ok'], udp
    assert [(r['name'], r['peer'], r['peer_port'], r['from']) for r in udp['replies']] == \
        [('p3', '10.0.0.11', 40001, '10.0.0.103')] * 2

    # Failures come back as results, bounded in time.
    started = time.monotonic()
    refused = kp_lab.http_get(c1, kp_lab.url_for(lab.ip('p2'), 81), timeout=1)
    silent = kp_lab.udp_request(c1, lab.ip('p1'), 5999, timeout=0.5)
    assert not refused['ok'] and 'error' in refused
    assert not silent['ok'] and silent['replies'] == [{'seq': 0, 'timeout': True}]
    assert time.monotonic() - started < 8

    server_pid = web.proc.pid
    lab.close()
    assert not procs.pid_alive(server_pid)
    assert lab.leftovers() == {'interfaces': [], 'bridges': [], 'processes': [],
                               'namespaces': []}


def test_close_after_an_exception_in_the_lab(switch_kind, controller):
    with pytest.raises(ZeroDivisionError):
        with kp_lab.build_net('kpnode', switch=switch_kind, controller_port=controller.of_port,
                              clients=1, pods=1) as lab:
            kp_lab.start_udp_server(lab.host('p1'), 5001)
            1 / 0
    assert lab.closed
    assert lab.leftovers() == {'interfaces': [], 'bridges': [], 'processes': [],
                               'namespaces': []}


def test_failed_start_is_torn_down(switch_kind):
    """No controller listens: waiting for the switches fails, and nothing is left."""
    prefix = kp_lab.choose_prefix()
    with pytest.raises(kp_lab.LabError, match='did not connect'):
        kp_lab.build_net('kpnode', switch=switch_kind, controller_port=kp_lab.free_port(),
                         prefix=prefix, clients=1, pods=1, wait_timeout=2)
    assert [n for n in procs.root_interfaces() if n.startswith(prefix)] == []
    if switch_kind == 'ovs':
        assert [b for b in kp_lab.ovs_bridges() if b.startswith(prefix)] == []


LAB_SCRIPT = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import kp_lab
lab = kp_lab.build_net('kpnode', switch=sys.argv[2], controller_port=int(sys.argv[3]),
                       clients=1, pods=1)
server = kp_lab.start_tcp_server(lab.host('p1'), 5000)
print(json.dumps({'prefix': lab.prefix, 'pids': lab._pids, 'server': server.proc.pid,
                  'namespaces': lab._namespaces}), flush=True)
if sys.argv[4] == 'with':
    with lab:
        time.sleep(60)
else:
    time.sleep(60)      # no `with`: the atexit hook must close it
'''


@pytest.mark.parametrize('sig,style', [(signal.SIGTERM, 'bare'), (signal.SIGINT, 'with')],
                         ids=['SIGTERM', 'SIGINT'])
def test_interrupted_lab_cleans_up(switch_kind, controller, sig, style):
    proc = subprocess.Popen(
        [sys.executable, '-c', LAB_SCRIPT, os.path.dirname(os.path.dirname(kp_lab.__file__)),
         switch_kind, str(controller.of_port), style],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=procs.terminal_signals)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        state = json.loads(line)
        proc.send_signal(sig)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    prefix = state['prefix']
    assert [n for n in procs.root_interfaces() if n.startswith(prefix)] == []
    if switch_kind == 'ovs':
        assert [b for b in kp_lab.ovs_bridges() if b.startswith(prefix)] == []
    pids = list(state['pids'].values()) + [state['server']]
    assert [p for p in pids if procs.pid_alive(p)] == []
    assert [ns for ns in state['namespaces'].values() if procs.pids_in_netns(ns)] == []
