"""kp_app's encoding of Open vSwitch's extensions (registers, conntrack state, multipath,
resubmit, ct with nat, NXT_CT_FLUSH): against Ryu's nx_actions byte for byte, and against
Open vSwitch's own decoder (`ovs-ofctl ofp-parse`), which is what will read them."""
import shutil
import subprocess

import pytest
from ryu.ofproto import nicira_ext
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_app import ofmsg
from kp_app.pipeline import ConntrackFlush, flow


def serialized(ryu_object) -> bytes:
    buf = bytearray()
    ryu_object.serialize(buf, 0)
    return bytes(buf)


def padded(data: bytes) -> bytes:
    """Ryu 4.34 declares an NX action's length rounded up to 8 but leaves out the padding
    (NXActionNAT with a 6-byte range): the reference is its bytes, padded as declared."""
    return data + bytes(-len(data) % 8)


ACTIONS = [
    (("multipath", 7, 1024),
     parser.NXActionMultipath(ofmsg.NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP, 7,
                              nicira_ext.NX_MP_ALG_MODULO_N, 1023, 0,
                              nicira_ext.ofs_nbits(0, 15), "reg0")),
    (("resubmit", 4), parser.NXActionResubmitTable(0xFFF8, 4)),
    (("ct", False, 107, 3, ("nat",)),
     parser.NXActionCT(0, "", 107, 3, 0, [parser.NXActionNAT(0)])),
    (("ct", True, 107, 2, ("dnat", "10.0.0.101", 8080)),
     parser.NXActionCT(nicira_ext.NX_CT_F_COMMIT, "", 107, 2, 0, [parser.NXActionNAT(
         2, range_ipv4_min="10.0.0.101", range_proto_min=8080)])),
    (("ct", True, 107, 2, ("dnat", "fd00::101", 0)),
     parser.NXActionCT(nicira_ext.NX_CT_F_COMMIT, "", 107, 2, 0, [parser.NXActionNAT(
         2, range_ipv6_min="fd00::101")])),
    (("set_field", "reg1", 5), parser.OFPActionSetField(reg1=5)),
]


@pytest.mark.parametrize("mine,ryu", ACTIONS, ids=[a[0][0] + str(i) for i, a in enumerate(ACTIONS)])
def test_nx_actions_match_ryu(mine, ryu):
    ours = ofmsg.encode_actions([mine])
    assert len(ours) % 8 == 0
    if mine[0] == "ct" and mine[4][0] == "dnat":
        # Ryu's CT length counts the nested NAT's declared length, not its bytes.
        assert ours[:2] == serialized(ryu)[:2] and ours.rstrip(b"\0") == \
            serialized(ryu).rstrip(b"\0")
    else:
        assert ours == padded(serialized(ryu))


def test_nxm_fields_in_a_match_are_ordered_as_ryu_orders_them():
    ours = ofmsg.encode_match([("ct_state", (0x22, 0x22)), ("reg1", 5), ("eth_type", 0x800),
                               ("reg0", 3)])
    assert ours == serialized(parser.OFPMatch(eth_type=0x800, ct_state=(0x22, 0x22), reg1=5,
                                              reg0=3))


OVS_OFCTL = shutil.which("ovs-ofctl") or "ovs-ofctl"   # ./run setup installs Open vSwitch


def ofp_parse(data: bytes, tmp_path) -> str:
    path = tmp_path / "messages.bin"
    path.write_bytes(data)
    return subprocess.run([OVS_OFCTL, "ofp-parse", str(path)], capture_output=True,
                          text=True, check=True).stdout


def test_open_vswitch_reads_the_flows_as_meant(tmp_path):
    lb = flow(4, 100, {"reg1": 5, "reg0": 17, "eth_type": 0x0800},
              (("ct", True, 107, 2, ("dnat", "10.0.0.101", 8080)),), cookie=9)
    select = flow(3, 100, {"ct_state": (0x21, 0x21), "reg1": 5},
                  (("multipath", 0, 1024), ("resubmit", 4)))
    classifier = flow(0, 532, {"eth_type": 0x86DD, "ip_proto": 6, "ipv6_dst": "fd00:96::10",
                               "tcp_dst": 80},
                      (("set_field", "reg1", 5), ("ct", False, 107, 3, ("nat",))))
    data = b"".join(ofmsg.encode(m, i, kp_switch=False)
                    for i, m in enumerate([lb, select, classifier]))
    out = ofp_parse(data, tmp_path)
    assert "reg0=0x11,reg1=0x5" in out and "ip" in out
    assert "actions=ct(commit,table=2,zone=107,nat(dst=10.0.0.101:8080))" in out
    assert "ct_state=+new+trk" in out
    assert "actions=multipath(symmetric_l3l4+udp,0,modulo_n,1024,0,NXM_NX_REG0[0..15])," \
           "resubmit(,4)" in out
    assert "ipv6_dst=fd00:96::10,tp_dst=80" in out or "tcp_dst=80" in out
    assert "set_field:0x5->reg1,ct(table=3,zone=107,nat)" in out


def test_open_vswitch_reads_the_conntrack_flush_as_meant(tmp_path):
    data = ofmsg.encode(ConntrackFlush(107, 6, "10.96.0.10", 80, "10.0.0.101", 8080), 5,
                        kp_switch=False)
    data += ofmsg.encode(ConntrackFlush(107, 17, "fd00:96::10", 53), 6, kp_switch=False)
    out = ofp_parse(data, tmp_path).splitlines()
    assert "zone=107" in out[0] and "ct_nw_dst=10.96.0.10" in out[0] and \
        "ct_tp_dst=80" in out[0] and "ct_nw_proto=6" in out[0]
    assert "'ct_nw_src=10.0.0.101" in out[0] and "ct_tp_src=8080" in out[0]
    assert "ct_ipv6_dst=fd00:96::10" in out[1] and "ct_tp_dst=53" in out[1] and \
        "ct_nw_proto=17" in out[1]
    assert ofmsg.encode(ConntrackFlush(107, 6, "10.96.0.10"), 7, kp_switch=True) == b""
