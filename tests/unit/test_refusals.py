"""kp_app's book of what a switch refused (kp_app.refusals), through KubeProxy: a
sender that numbers and records messages as the Ryu shim does, and errors and barrier
replies as a switch would send them."""
import ipaddress
import struct

from kp_app import frames, ofmsg, pipeline, refusals
from kp_app.kubeproxy import KubeProxy
from kp_app.pipeline import FlowAdd, LbVip, PacketOut

VIP, PORT = "10.96.0.10/32", 80
CLIENT_MAC = "00:00:00:00:00:11"


class Rig:
    def __init__(self, mode="packet-in"):
        self.now = 100.0
        self.xid = 0
        self.sent = []          # (xid, message or None for a barrier), every batch
        self.proxy = KubeProxy(self._send, clock=lambda: self.now)
        self.proxy.set_conf(node_ip="10.0.0.1/24")
        self.proxy.switch_connected(1, {1: "eth1", 2: "eth2"}, mode=mode)

    def _next(self):
        self.xid += 1
        return self.xid

    def _send(self, dpid, msgs):
        pairs = []
        ofmsg.encode_batch(msgs, self._next, True, pairs, refusals.wants_barrier(msgs))
        self.proxy.channel(dpid).sent(pairs)
        self.sent += pairs

    def xid_of(self, pred):
        return next(x for x, m in reversed(self.sent) if m is not None and pred(m))

    def last_barrier(self):
        return next(x for x, m in reversed(self.sent) if m is None)

    def status(self):
        return self.proxy.vip(VIP, PORT)["programming"]["1"]


def vip_flow(m):
    return isinstance(m, FlowAdd) and pipeline.cookie_parts(m.cookie)[0] == pipeline.KIND_VIP


def test_what_a_message_is_part_of():
    vip_add = FlowAdd(0, 532, (), cookie=pipeline.cookie(pipeline.KIND_VIP, 7))
    session = FlowAdd(1, 900, (), cookie=pipeline.cookie(pipeline.KIND_FORWARD, 7, 3))
    base = FlowAdd(0, 1000, (), cookie=pipeline.cookie(pipeline.KIND_BASE))
    lb = LbVip(9, 1, (0,), (("10.0.0.2", 80),), 0)
    assert refusals.what_of(vip_add) == (refusals.VIP, 7)
    assert refusals.what_of(session) == (refusals.SESSION, 7)
    assert refusals.what_of(base) == (refusals.SWITCH, 0)
    assert refusals.what_of(lb) == (refusals.VIP, 9)
    assert refusals.what_of(None) == (refusals.SWITCH, 0)
    # A new session's batch goes without a barrier; anything else gets one.
    assert not refusals.wants_barrier([session, PacketOut(b"", ())])
    assert refusals.wants_barrier([session, vip_add])


def test_the_batch_records_each_xid_and_ends_with_a_barrier():
    pairs, xids = [], iter(range(1, 100))
    add = FlowAdd(0, 532, (("eth_type", 0x800),), cookie=pipeline.cookie(pipeline.KIND_VIP, 7))
    data = ofmsg.encode_batch([add, add], lambda: next(xids), True, pairs, barrier=True)
    assert pairs == [(1, add), (2, add), (3, None)]
    assert data.endswith(ofmsg.barrier_request(3))


def test_a_refused_vip_is_retried_with_backoff_and_installed_once_taken():
    rig = Rig()
    rig.proxy.add_vip("10.96.0.11/32", port=PORT, target_port=8080, protocol="tcp")
    rig.proxy.barrier_reply(1, rig.last_barrier())
    rig.proxy.add_vip(VIP, port=PORT, target_port=8080, protocol="tcp")
    assert rig.status() == {"state": "pending", "refused": 0}
    rig.proxy.switch_refused(1, rig.xid_of(vip_flow), "FLOW_MOD_FAILED TABLE_FULL")
    rig.proxy.barrier_reply(1, rig.last_barrier())
    assert rig.status()["state"] == "retrying"
    assert rig.status()["error"] == "FLOW_MOD_FAILED TABLE_FULL"
    assert rig.proxy.vip("10.96.0.11/32", PORT)["programming"]["1"] == {
        "state": "installed", "refused": 0}
    counters = rig.proxy.counters()
    assert [v["refused"] for v in counters["vips"]] == [0, 1]
    assert rig.proxy.show()["channels"]["1"]["refused"] == {"session": 0, "vip": 1,
                                                            "switch": 0}

    # Not before its time; then the VIP's whole programming, its classifier flow too.
    before = len(rig.sent)
    rig.now += 0.5
    rig.proxy.retry_refused()
    assert len(rig.sent) == before
    rig.now += 0.6
    rig.proxy.retry_refused()
    retry = [m for _, m in rig.sent[before:]]
    assert any(vip_flow(m) for m in retry) and retry[-1] is None    # ends with a barrier
    assert rig.status()["retries"] == 1

    # Refused again: the next retry waits twice as long.
    rig.proxy.switch_refused(1, rig.xid_of(vip_flow), "FLOW_MOD_FAILED TABLE_FULL")
    rig.proxy.barrier_reply(1, rig.last_barrier())
    assert rig.status()["state"] == "retrying" and rig.status()["refused"] == 2
    before = len(rig.sent)
    rig.now += 1.5
    rig.proxy.retry_refused()
    assert len(rig.sent) == before
    rig.now += 0.6
    rig.proxy.retry_refused()
    assert len(rig.sent) > before

    # Taken: its barrier comes back with no error.
    rig.proxy.barrier_reply(1, rig.last_barrier())
    assert rig.status() == {"state": "installed", "refused": 2}


def test_retries_are_bounded_then_the_refusal_is_reported():
    rig = Rig()
    rig.proxy.add_vip(VIP, port=PORT, target_port=8080, protocol="tcp")
    for delay in refusals.RETRY_DELAYS:
        rig.proxy.switch_refused(1, rig.xid_of(vip_flow), "BAD_MATCH BAD_FIELD")
        rig.now += delay
        rig.proxy.retry_refused()
    rig.proxy.switch_refused(1, rig.xid_of(vip_flow), "BAD_MATCH BAD_FIELD")
    rig.now += 1000
    before = len(rig.sent)
    rig.proxy.retry_refused()
    assert len(rig.sent) == before
    status = rig.status()
    assert status["state"] == "refused" and status["retries_left"] == 0
    assert status["refused"] == len(refusals.RETRY_DELAYS) + 1
    # Deleting the VIP forgets it.
    rig.proxy.del_vip(VIP, PORT)
    assert rig.proxy.show()["channels"]["1"]["vips_refused"] == []


def test_a_reconnect_starts_a_fresh_book():
    rig = Rig()
    rig.proxy.add_vip(VIP, port=PORT, target_port=8080, protocol="tcp")
    rig.proxy.switch_refused(1, rig.xid_of(vip_flow), "FLOW_MOD_FAILED TABLE_FULL")
    rig.proxy.switch_disconnected(1)
    rig.proxy.switch_connected(1, {1: "eth1", 2: "eth2"})
    assert rig.status()["state"] in ("pending", "installed")
    assert rig.status()["refused"] == 0


def test_an_error_about_an_unknown_xid_is_counted_as_the_switchs():
    rig = Rig()
    rig.proxy.switch_refused(1, 999999, "BAD_REQUEST BAD_TYPE")
    status = rig.proxy.show()["channels"]["1"]
    assert status["refused"]["switch"] == 1
    assert status["last_refused"] == {"kind": "switch", "vip_id": 0,
                                      "error": "BAD_REQUEST BAD_TYPE",
                                      "message": "a message no longer remembered"}


def test_a_refused_session_flow_is_not_installed_and_the_next_packet_puts_it_back():
    rig = Rig()
    rig.proxy.add_vip(VIP, port=PORT, target_port=8080, protocol="tcp")
    rig.proxy.add_pods(VIP, PORT, ["10.0.0.101"])
    node = rig.proxy.nodes[1]
    rig.proxy.packet_in(1, 1, frames.arp(2, CLIENT_MAC, "10.0.0.11", node.mac, "10.0.0.1"))
    rig.proxy.packet_in(1, 2, frames.arp(2, "00:00:00:00:01:01", "10.0.0.101", node.mac,
                                         "10.0.0.1"))
    syn = struct.pack("!HHIIBBHHH", 40000, PORT, 1, 0, 5 << 4, frames.TCP_SYN, 65535, 0, 0)
    packet = frames._l3_frame(node.mac, CLIENT_MAC, ipaddress.ip_address("10.0.0.11"),
                              ipaddress.ip_address("10.96.0.10"), frames.TCP, syn)
    rig.proxy.packet_in(1, 1, packet)
    (session,) = node.sessions
    assert session.forward_installed and session.reverse_installed

    def forward(m):
        return isinstance(m, FlowAdd) and \
            pipeline.cookie_parts(m.cookie)[0] == pipeline.KIND_FORWARD
    rig.proxy.switch_refused(1, rig.xid_of(forward), "FLOW_MOD_FAILED TABLE_FULL")
    assert not session.forward_installed and session.reverse_installed
    assert list(node.sessions) == [session]     # the session (and its pod) stays
    assert rig.proxy.counters()["vips"][0]["refused"] == 1
    before = len(rig.sent)
    rig.proxy.packet_in(1, 1, packet)
    assert any(forward(m) for _, m in rig.sent[before:])
    assert session.forward_installed


def test_lb_mode_a_refused_vip_table_is_sent_whole_again():
    rig = Rig(mode="lb")
    rig.proxy.add_vip(VIP, port=PORT, target_port=8080, protocol="tcp")
    rig.proxy.add_pods(VIP, PORT, ["10.0.0.101", "10.0.0.102"])
    refused = rig.xid_of(lambda m: isinstance(m, LbVip))
    rig.proxy.switch_refused(1, refused, "BAD_REQUEST BAD_LEN")
    rig.now += refusals.RETRY_DELAYS[0]
    before = len(rig.sent)
    rig.proxy.retry_refused()
    retry = [m for _, m in rig.sent[before:]]
    assert any(isinstance(m, LbVip) for m in retry)
    rig.proxy.barrier_reply(1, rig.last_barrier())
    assert rig.status()["state"] == "installed"


def test_a_change_of_a_vip_given_up_on_starts_its_retries_again():
    rig = Rig(mode="lb")
    rig.proxy.add_vip(VIP, port=PORT, target_port=8080, protocol="tcp")
    rig.proxy.add_pods(VIP, PORT, ["10.0.0.101"])
    def refuse():
        rig.proxy.switch_refused(1, rig.xid_of(lambda m: isinstance(m, LbVip)),
                                 "BAD_REQUEST BAD_LEN")
    for delay in refusals.RETRY_DELAYS:
        refuse()
        rig.now += delay
        rig.proxy.retry_refused()
    refuse()
    assert rig.status()["state"] == "refused"
    rig.proxy.add_pods(VIP, PORT, ["10.0.0.102"])       # a new table: an LbVip goes out
    assert rig.status()["state"] == "retrying" and rig.status()["retries"] == 0
    before = len(rig.sent)
    rig.proxy.retry_refused()
    assert any(isinstance(m, LbVip) for _, m in rig.sent[before:])
    rig.proxy.barrier_reply(1, rig.last_barrier())
    assert rig.status()["state"] == "installed"


def test_what_is_in_flight_is_bounded(monkeypatch):
    monkeypatch.setattr(refusals, "MAX_IN_FLIGHT", 8)
    rig = Rig()
    rig.proxy.add_vip(VIP, port=PORT, target_port=8080, protocol="tcp")
    assert rig.status()["state"] == "pending"
    channel = rig.proxy.channel(1)
    channel.sent([(10000 + i, PacketOut(b"", ())) for i in range(20)])
    assert len(channel.in_flight) == 8
    # The VIP's answer is no longer followed: not left pending for ever.
    assert rig.status()["state"] == "installed"
