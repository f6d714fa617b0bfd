"""A second connection to a real kp_app (ryu-manager) with the datapath id of a switch
that is connected already (kp_app.dpid_claims): the first keeps being programmed while
it answers, the newcomer is closed and counted; a first that no longer answers is
replaced; --kp-dpid-takeover replaces at once. The switches are a real kp-switch and
plain sockets that speak just enough OpenFlow 1.3."""
import os
import socket
import struct
import threading
import time

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_app_process import KpApp
from kp_switch import wire
from of_harness import DP, Hosts, SwitchProcess, connect

pytestmark = pytest.mark.kpswitch


class RawSwitch:
    """A switch on a plain socket: hello, features with the datapath id it claims, a
    description, no ports, no flows, barrier replies; echo replies only if
    `answers_echo`. It keeps the types of the messages it got."""

    def __init__(self, port, dpid, answers_echo=True):
        deadline = time.monotonic() + 30       # (kp_app may still be starting)
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.sock.settimeout(None)
        self.dpid, self.answers_echo = dpid, answers_echo
        self.types = []
        self.closed = threading.Event()
        self.sock.sendall(wire.hello())
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 8:
                    _, type_, length, xid = struct.unpack_from("!BBHI", buf)
                    if len(buf) < length:
                        break
                    msg, buf = buf[:length], buf[length:]
                    self.types.append(type_)
                    self._answer(type_, xid, msg)
        except OSError:
            pass
        finally:
            self.closed.set()

    def _answer(self, type_, xid, msg):
        if type_ == ofp.OFPT_FEATURES_REQUEST:
            self.sock.sendall(wire.features_reply(xid, self.dpid, 0, 8, 0))
        elif type_ == ofp.OFPT_ECHO_REQUEST and self.answers_echo:
            self.sock.sendall(wire.echo_reply(xid, msg[8:]))
        elif type_ == ofp.OFPT_BARRIER_REQUEST:
            self.sock.sendall(wire.barrier_reply(xid))
        elif type_ == ofp.OFPT_MULTIPART_REQUEST:
            (mp_type,) = struct.unpack_from("!H", msg, 8)
            items = [wire.desc_bytes("raw", "raw", "raw", "None", "raw")] \
                if mp_type == ofp.OFPMP_DESC else []
            for reply in wire.multipart_replies(xid, mp_type, items):
                self.sock.sendall(reply)

    def flow_mods(self):
        return self.types.count(ofp.OFPT_FLOW_MOD)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def add_vip(app, address):
    status, body = app.call("POST", "/v1/vips", {"prefix": address + "/32", "port": 80,
                                                 "protocol": "tcp", "target_port": 8080})
    assert status == 201, body


def claims(app):
    return app.get("/v1/show")["dpid_claims"]


@pytest.fixture
def app():
    kp = KpApp()
    try:
        yield kp
    finally:
        kp.stop()


def test_a_second_connection_does_not_take_a_live_switch(app):
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    hosts = Hosts(2, net=85)
    sw = impostor = None
    try:
        sw = SwitchProcess([h.port_if for h in hosts], controller=app.target, dpid=0x41)
        app.switch_programmed(0x41)
        impostor = RawSwitch(app.of_port, 0x41)
        assert impostor.closed.wait(30), "kp_app kept the second connection"
        assert impostor.flow_mods() == 0
        assert claims(app)["refused"] == 1 and claims(app)["taken_over"] == 0
        _, metrics = app.call("GET", "/v1/metrics")
        assert "kp_dpid_claims_refused_total 1.0" in metrics
        assert "a second connection from" in app.log()
        # kp_app still programs the first: a VIP added now reaches the real switch.
        add_vip(app, "10.96.2.1")

        def in_switch():
            ch = connect(sw.listen_port)
            try:
                flows = ch.stats(parser.OFPFlowStatsRequest(DP, table_id=0))
            finally:
                ch.close()
            return any(dict(f.match.items()).get("ipv4_dst") == "10.96.2.1" for f in flows)
        app.wait("the VIP in the first switch", in_switch)
        assert 0x41 in app.get("/v1/show")["switches"]
    finally:
        if impostor is not None:
            impostor.close()
        if sw is not None:
            sw.stop()
        hosts.close()


def test_a_first_that_no_longer_answers_is_replaced(app):
    first = RawSwitch(app.of_port, 0x42, answers_echo=False)
    second = None
    try:
        app.switch_programmed(0x42)
        assert first.flow_mods() > 0
        second = RawSwitch(app.of_port, 0x42)
        assert first.closed.wait(30), "kp_app kept the silent first connection"
        app.wait("the second programmed", lambda: second.flow_mods() > 0)
        assert not second.closed.is_set()
        assert claims(app)["taken_over"] == 1 and claims(app)["refused"] == 0
        assert "taken for dead" in app.log()
        # It is the switch now: a VIP added goes to it.
        before = second.flow_mods()
        add_vip(app, "10.96.2.2")
        app.wait("the VIP sent to the second", lambda: second.flow_mods() > before)
    finally:
        first.close()
        if second is not None:
            second.close()


def test_takeover_when_allowed():
    kp = KpApp(extra=("--kp-dpid-takeover",))
    first = second = None
    try:
        first = RawSwitch(kp.of_port, 0x43)
        kp.switch_programmed(0x43)
        second = RawSwitch(kp.of_port, 0x43)
        assert first.closed.wait(30)
        kp.wait("the second programmed", lambda: second.flow_mods() > 0)
        assert claims(kp)["taken_over"] == 1 and claims(kp)["takeover"] is True
    finally:
        for s in (first, second):
            if s is not None:
                s.close()
        kp.stop()
