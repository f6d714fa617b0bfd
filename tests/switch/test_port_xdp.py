"""kp-switch's AF_XDP ports (switch/csrc/port_xdp.c) as the kernel sees them: the XDP
program is attached while a Datapath holds the port and gone after it closes, after
its process is killed, and the choice of port I/O refuses what it cannot do (with
the reason, which "auto" falls back on).  Traffic on AF_XDP ports is tested with
every other datapath test (the `fpio` fixture: test_fastpath_datapath.py,
test_gso.py)."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import _fastpath, af_xdp_refusal
from kp_switch import datapath as dpimpl
from kp_switch import fastpath_ref
from of_harness import sh

pytestmark = pytest.mark.skipif(_fastpath is None, reason="the C extension is not built")


@pytest.fixture
def xdp_ok():
    why = af_xdp_refusal()
    if why:
        pytest.skip(why)


def xdp_prog(ifname: str) -> str:
    """The name of the XDP program on ifname, or ""."""
    out = sh("ip", "-d", "link", "show", "dev", ifname).stdout
    for line in out.splitlines():
        words = line.split()
        if words and words[0].startswith("prog/xdp"):
            return words[words.index("name") + 1] if "name" in words else "?"
    return ""


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_the_program_is_attached_while_the_port_is_open(xdp_ok, hosts3):
    ports = [(i + 1, h.port_if) for i, h in enumerate(hosts3)]
    dp = _fastpath.Datapath(ports, 64, "afxdp")
    try:
        # veths have native XDP but no zero copy
        assert dp.port_io() == {1: "afxdp native copy", 2: "afxdp native copy",
                                3: "afxdp native copy"}
        assert [xdp_prog(h.port_if) for h in hosts3] == ["kp_xsk_redir"] * 3
    finally:
        del dp
        gc.collect()
    assert [xdp_prog(h.port_if) for h in hosts3] == ["", "", ""]
    # and nothing stays behind on the AF_PACKET backend either
    dp = _fastpath.Datapath(ports, 64, "afpacket")
    assert dp.port_io() == {1: "afpacket", 2: "afpacket", 3: "afpacket"}
    assert xdp_prog(hosts3[0].port_if) == ""


HOLD = """
import sys, time
sys.path[:0] = sys.argv[2:]
from kp_switch import _fastpath
dp = _fastpath.Datapath([(1, sys.argv[1])], 64, "afxdp")
dp.start()
print("ready", flush=True)
time.sleep(60)
"""


def test_a_killed_process_leaves_no_program_behind(xdp_ok, hosts3):
    """The attachment is a BPF link owned by the datapath's file descriptor: SIGKILL
    (no clean-up code runs) detaches it all the same."""
    port_if = hosts3[0].port_if
    so_dir = os.path.dirname(os.path.dirname(_fastpath.__file__))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, port_if, so_dir] + sys.path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.poll() is not None else line
        assert xdp_prog(port_if) == "kp_xsk_redir"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert wait_for(lambda: xdp_prog(port_if) == ""), xdp_prog(port_if)


def test_auto_falls_back_to_afpacket_and_says_why(xdp_ok, hosts3):
    """A port whose queue another AF_XDP socket holds refuses AF_XDP; "afxdp" is then an
    error, "auto" AF_PACKET on every port with the kernel's reason."""
    ports = [(i + 1, h.port_if) for i, h in enumerate(hosts3)]
    holder = _fastpath.Datapath([(1, hosts3[2].port_if)], 64, "afxdp")
    try:
        with pytest.raises(OSError) as ei:
            _fastpath.Datapath(ports, 64, "afxdp")
        assert hosts3[2].port_if in str(ei.value) and "AF_XDP" in str(ei.value)
        # the ports it had opened before the refusal are closed again
        assert xdp_prog(hosts3[0].port_if) == "" and xdp_prog(hosts3[1].port_if) == ""
        if dpimpl.impl is not _fastpath:
            pytest.skip("kp_switch.datapath runs the Python twin here (KP_FASTPATH=ref)")
        dp, chosen, why = dpimpl.open_datapath(ports, 64, "auto")
        assert chosen == "afpacket" and hosts3[2].port_if in why, (chosen, why)
        assert dp.port_io() == {1: "afpacket", 2: "afpacket", 3: "afpacket"}
        assert xdp_prog(hosts3[2].port_if) == "kp_xsk_redir"   # the holder's, untouched
        del dp
    finally:
        del holder
        gc.collect()
    if dpimpl.impl is _fastpath:
        dp, chosen, why = dpimpl.open_datapath(ports, 64, "auto")
        assert (chosen, why) == ("afxdp", None)
        assert set(dp.port_io().values()) == {"afxdp native copy"}


def test_several_receive_queues_are_refused_with_the_reason(xdp_ok):
    """One socket binds one queue: frames on another queue would never reach the
    switch, so a port with several is refused rather than half served."""
    name = "kpxq%d" % os.getpid()
    sh("ip", "link", "add", name, "numrxqueues", "2", "numtxqueues", "2", "type", "veth",
       "peer", "name", name + "p")
    try:
        with pytest.raises(OSError) as ei:
            _fastpath.Datapath([(1, name)], 64, "afxdp")
        assert "2 receive queues" in str(ei.value)
        assert xdp_prog(name) == ""
    finally:
        sh("ip", "link", "del", name, check=False)


@pytest.mark.parametrize("impl", ["c", "ref"])
def test_unknown_port_io_is_a_clear_error(impl, hosts3):
    mod = _fastpath if impl == "c" else fastpath_ref
    with pytest.raises(ValueError, match="port_io must be"):
        mod.Datapath([(1, hosts3[0].port_if)], 64, "dpdk")
    with pytest.raises(ValueError, match="port I/O must be one of"):
        dpimpl.open_datapath([(1, hosts3[0].port_if)], 64, "dpdk")


def test_the_python_twin_refuses_afxdp_with_the_reason(hosts3):
    with pytest.raises(OSError, match="AF_PACKET ports only"):
        fastpath_ref.Datapath([(1, hosts3[0].port_if)], 64, "afxdp")


def _started_log(sw, timeout=15.0):
    """The switch's log once it has said which port I/O it runs on."""
    assert wait_for(lambda: " kp_switch: ports " in sw.log() or sw.proc.poll() is not None,
                    timeout), sw.log()
    return sw.log()


def test_the_command_line_chooses_and_says_which(xdp_ok, hosts3, tmp_path):
    """kp-switch --ports: afxdp and afpacket run on what they name; auto takes AF_XDP,
    and with AF_XDP refused (a port's queue held) one warning says why and every port
    runs on AF_PACKET; afxdp refused is an error exit with the reason."""
    from of_harness import SwitchProcess
    ifaces = [h.port_if for h in hosts3[:2]]
    for choice, want in (("afxdp", "afxdp native copy"), ("afpacket", "afpacket"),
                         ("auto", "afxdp native copy")):
        sw = SwitchProcess(ifaces, log_path=str(tmp_path / ("%s.log" % choice)),
                           extra=("--ports", choice))
        try:
            text = _started_log(sw)
            assert "1=%s (%s), 2=%s (%s)" % (ifaces[0], want, ifaces[1], want) in text, text
            if choice != "afpacket":
                assert xdp_prog(ifaces[0]) == "kp_xsk_redir"
        finally:
            assert sw.stop() == 0
        assert wait_for(lambda: xdp_prog(ifaces[0]) == ""), "program left after SIGTERM"
    holder = _fastpath.Datapath([(1, ifaces[1])], 64, "afxdp")
    try:
        sw = SwitchProcess(ifaces, log_path=str(tmp_path / "auto-held.log"),
                           extra=("--ports", "auto"))
        try:
            text = _started_log(sw)
            warned = [l for l in text.splitlines() if "AF_XDP refused" in l]
            assert len(warned) == 1 and ifaces[1] in warned[0], text
            assert "1=%s (afpacket), 2=%s (afpacket)" % tuple(ifaces) in text, text
        finally:
            assert sw.stop() == 0
        sw = SwitchProcess(ifaces, log_path=str(tmp_path / "afxdp-held.log"),
                           extra=("--ports", "afxdp"))
        try:
            sw.proc.wait(15)
        finally:
            sw.stop()
        assert sw.proc.returncode == 1
        assert ifaces[1] in sw.proc.stderr.read()
    finally:
        del holder
        gc.collect()
