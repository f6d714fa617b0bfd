"""kp-switch's TLS controller channel (`--controller ssl:HOST:PORT` with --private-key,
--certificate, --ca-cert): a real kp-switch and a TLS test controller with certificates
made by openssl for the test; each side accepts only what its CA signed."""
import os
import socket
import ssl
import subprocess
import time

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_switch import tls as kptls
from of_harness import DP, KP_SWITCH, Channel, Hosts, SwitchProcess, flow_mod, free_port, handshake, out

pytestmark = pytest.mark.kpswitch


def _openssl(*args, cwd):
    subprocess.run(("openssl",) + args, cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=%s" % name,
             "-keyout", "%s-key.pem" % name, "-out", "%s.pem" % name, cwd=d)


def make_cert(d, name, ca):
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % name,
             "-keyout", "%s-key.pem" % name, "-out", "%s.csr" % name, cwd=d)
    _openssl("x509", "-req", "-in", "%s.csr" % name, "-CA", "%s.pem" % ca, "-CAkey", "%s-key.pem" % ca,
             "-CAcreateserial", "-days", "2", "-out", "%s.pem" % name, cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_cert(d, "controller", "ca")
    make_cert(d, "switch", "ca")
    make_cert(d, "stranger", "otherca")
    return d


class TlsController:
    """Listens on a free port; accept() does the TLS handshake (client certificate
    required, signed by `ca`) and returns a handshaken OpenFlow Channel."""

    def __init__(self, pki, cert="controller", ca="ca"):
        self.port = free_port()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_cert_chain(os.path.join(pki, cert + ".pem"), os.path.join(pki, cert + "-key.pem"))
        self.ctx.load_verify_locations(os.path.join(pki, ca + ".pem"))
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(4)

    def accept(self, timeout=15.0):
        """A Channel, or the ssl.SSLError of the handshake."""
        self.lsock.settimeout(timeout)
        sock, _ = self.lsock.accept()
        sock.settimeout(5)
        try:
            tls_sock = self.ctx.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            sock.close()
            return e
        plain = kptls.relay(tls_sock)   # the test's Channel has a reader thread too
        ch = Channel(plain)
        ch.features = handshake(ch)
        return ch

    def close(self):
        self.lsock.close()


def switch_args(pki, cert="switch", ca="ca"):
    return ["--private-key", os.path.join(pki, cert + "-key.pem"),
            "--certificate", os.path.join(pki, cert + ".pem"), "--ca-cert", os.path.join(pki, ca + ".pem")]


@pytest.fixture
def hosts():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    h = Hosts(1, net=82)
    try:
        yield h
    finally:
        h.close()


def test_openflow_over_tls(pki, hosts):
    ctl = TlsController(pki)
    sw = ch = None
    try:
        sw = SwitchProcess([h.port_if for h in hosts], controller="ssl:127.0.0.1:%d" % ctl.port,
                           extra=switch_args(pki))
        ch = ctl.accept()
        assert isinstance(ch, Channel), ch
        assert ch.features.datapath_id == 1
        assert ch.check(flow_mod(parser.OFPMatch(in_port=1), [out(ofp.OFPP_CONTROLLER)])) is None
        # a reply of several multipart messages (more than the relay moves at once)
        features = ch.stats(parser.OFPTableFeaturesStatsRequest(DP), timeout=10)
        assert len(features) == ch.features.n_tables
        flows = ch.stats(parser.OFPFlowStatsRequest(DP))
        assert [f.match["in_port"] for f in flows] == [1]
        r = ch.request(parser.OFPEchoRequest(DP, data=b"x" * 60000))[0]
        assert r.data == b"x" * 60000
    finally:
        if ch is not None and not isinstance(ch, Exception):
            ch.close()
        if sw is not None:
            assert sw.stop() == 0, sw.log()[-2000:]
        ctl.close()
    assert "connected to controller 127.0.0.1:%d (TLS)" % ctl.port in sw.log()


def test_a_controller_the_ca_did_not_sign_is_refused(pki, hosts):
    ctl = TlsController(pki, cert="stranger", ca="ca")
    sw = None
    try:
        sw = SwitchProcess([h.port_if for h in hosts], controller="ssl:127.0.0.1:%d" % ctl.port,
                           extra=switch_args(pki))
        got = ctl.accept()
        assert isinstance(got, (ssl.SSLError, OSError)), got
        deadline = time.monotonic() + 10
        while "certificate verify failed" not in sw.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "certificate verify failed" in sw.log()
    finally:
        if sw is not None:
            sw.stop()
        ctl.close()


def test_a_switch_the_ca_did_not_sign_is_refused_by_the_controller(pki, hosts):
    ctl = TlsController(pki)
    sw = None
    try:
        sw = SwitchProcess([h.port_if for h in hosts], controller="ssl:127.0.0.1:%d" % ctl.port,
                           extra=switch_args(pki, cert="stranger", ca="ca"))
        got = ctl.accept()
        assert isinstance(got, (ssl.SSLError, OSError)), got
    finally:
        if sw is not None:
            sw.stop()
        ctl.close()


@pytest.mark.parametrize("extra", [[], ["--private-key", "/nonexistent"]])
def test_ssl_without_its_files_is_a_usage_error(hosts, extra):
    sw = SwitchProcess([h.port_if for h in hosts], controller="ssl:127.0.0.1:1", extra=extra)
    try:
        sw.proc.wait(30)
        assert sw.proc.returncode == 2
        assert "--private-key, --certificate and --ca-cert" in sw.proc.stderr.read()
    finally:
        sw.stop()


def test_kp_app_over_tls_as_security_md_says(pki, hosts):
    """The recipe of SECURITY.md: ryu-manager with --ofp-ssl-listen-port, --ctl-privkey,
    --ctl-cert, --ca-certs, and kp-switch with ssl:; kp_app sees the switch."""
    import json
    import urllib.request
    of_port, rest_port = free_port(), free_port()
    ryu = subprocess.Popen([os.path.join(os.path.dirname(KP_SWITCH), "ryu-manager"),
                            "--ofp-ssl-listen-port", str(of_port), "--wsapi-port", str(rest_port),
                            "--ctl-privkey", os.path.join(pki, "controller-key.pem"),
                            "--ctl-cert", os.path.join(pki, "controller.pem"),
                            "--ca-certs", os.path.join(pki, "ca.pem"), "kp_app"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sw = None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        sw = SwitchProcess([h.port_if for h in hosts], controller="ssl:127.0.0.1:%d" % of_port,
                           dpid=0x2B, extra=switch_args(pki))
        deadline = time.monotonic() + 30
        switches = []
        while time.monotonic() < deadline and 0x2B not in switches:
            try:
                with opener.open("http://127.0.0.1:%d/v1/show" % rest_port, timeout=2) as r:
                    switches = json.loads(r.read())["switches"]
            except OSError:
                pass
            if ryu.poll() is not None:
                pytest.fail("ryu-manager exited: %s" % ryu.stderr.read()[-2000:])
            time.sleep(0.3)
        assert 0x2B in switches, sw.log()[-2000:]
    finally:
        if sw is not None:
            sw.stop()
        ryu.terminate()
        try:
            ryu.wait(10)
        except subprocess.TimeoutExpired:
            ryu.kill()
            ryu.wait()
