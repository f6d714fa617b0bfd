"""kp_app.config_file: the KubeProxyConfiguration-like file, read and refused field by field."""
import textwrap

import pytest

from kp_app import config_file
from kp_app.config_file import ConfigError

HEAD = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"


def parse(body: str = "") -> config_file.KpConfig:
    return config_file.parse(HEAD + textwrap.dedent(body))


def refused(body: str, head: str = HEAD) -> ConfigError:
    with pytest.raises(ConfigError) as error:
        config_file.parse(head + textwrap.dedent(body))
    return error.value


def test_a_full_file_maps_to_options_and_conf():
    config = parse("""
        bindAddress: 10.0.0.1
        healthzBindAddress: 0.0.0.0:10256
        metricsBindAddress: "[::1]:9100"
        syncPeriod: 1m30s
        nodePortAddresses: [10.0.1.1/32, "fd00::1/128"]
        conntrack:
          tcpEstablishedTimeout: 24h0m0s
          tcpCloseWaitTimeout: 1h
          udpTimeout: 0s
        clientConnection:
          kubeconfig: /var/lib/kp/kubeconfig
        kp:
          mode: lb
          stateFile: /var/lib/kp/state.json
          authTokenFile: /etc/kp/token
          apiBindAddress: 127.0.0.1:8181
          sessionTableBuckets: 4096
    """)
    assert config.options == {
        "ofp_listen_host": "10.0.0.1", "healthz_bind_address": "0.0.0.0:10256",
        "metrics_bind_address": "[::1]:9100", "kubeconfig": "/var/lib/kp/kubeconfig",
        "kp_mode": "lb", "kp_state_file": "/var/lib/kp/state.json",
        "auth_token_file": "/etc/kp/token", "wsapi_host": "127.0.0.1", "wsapi_port": 8181}
    assert config.conf == {"timeout": 86400, "tcp_close_wait": 3600, "udp_timeout": 0,
                           "buckets": 4096}
    assert config.sync_period == 90.0
    assert config.health_check_hosts == ("10.0.1.1", "fd00::1")


def test_an_empty_file_sets_nothing():
    config = parse()
    assert config.options == {} and config.conf == {} and config.sync_period is None


def test_empty_bind_addresses_turn_listeners_off():
    config = parse('healthzBindAddress: ""\nmetricsBindAddress: ""\n')
    assert config.options == {"healthz_bind_address": "", "metrics_bind_address": ""}
    assert config_file.parse_bind_address("", "f", 1) is None
    assert config_file.parse_bind_address("127.0.0.2", "f", 10256) == ("127.0.0.2", 10256)
    assert config_file.parse_bind_address("[::1]:80", "f", 1) == ("::1", 80)


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("1h0m0s", 3600), ("1.5m", 90), ("500ms", 0.5), ("2h45m", 9900)])
def test_durations_are_go_durations(text, seconds):
    assert config_file.parse_duration(text, "f", 0, 86400) == seconds


@pytest.mark.parametrize("body, field, reason", [
    ("bogus: 1\n", "bogus", "unknown field"),
    ("conntrack:\n  tcpEstablishedTimout: 1h\n", "conntrack.tcpEstablishedTimout",
     "unknown field"),
    ("kp:\n  buckets: 8\n", "kp.buckets", "unknown field"),
    ("mode: iptables\n", "mode", "kp's own mode is kp.mode"),
    ("iptables: {}\n", "iptables", "kube-proxy field kp does not implement"),
    ("conntrack:\n  maxPerCore: 1\n", "conntrack.maxPerCore", "does not implement"),
    ("conntrack:\n  udpStreamTimeout: 30s\n", "conntrack.udpStreamTimeout", "one UDP timeout"),
    ("conntrack:\n  udpTimeout: 25h\n", "conntrack.udpTimeout", "out of range"),
    ("bindAddress: 7\n", "bindAddress", "expected a string, got an integer"),
    ("bindAddress: node1.example\n", "bindAddress", "not an IP address"),
    ("healthzBindAddress: 127.0.0.1:99999\n", "healthzBindAddress", "not a port number"),
    ("metricsBindAddress: localhost:10249\n", "metricsBindAddress", "not an IP address"),
    ("syncPeriod: 30\n", "syncPeriod", "expected a string"),
    ("syncPeriod: thirty\n", "syncPeriod", "not a duration"),
    ("syncPeriod: 0s\n", "syncPeriod", "out of range"),
    ("conntrack:\n  tcpEstablishedTimeout: 48h\n", "conntrack.tcpEstablishedTimeout",
     "out of range"),
    ("conntrack:\n  tcpEstablishedTimeout: 1.5s\n", "conntrack.tcpEstablishedTimeout",
     "whole number"),
    ("conntrack: []\n", "conntrack", "expected a mapping, got a list"),
    ("nodePortAddresses: 10.0.0.0/8\n", "nodePortAddresses", "expected a list"),
    ("nodePortAddresses: [10.0.0.0/8]\n", "nodePortAddresses[0]", "one by one"),
    ("nodePortAddresses: [primary]\n", "nodePortAddresses[0]", "not a CIDR"),
    ("kp:\n  mode: fast\n", "kp.mode", "not one of auto, packet-in, ct, lb"),
    ("kp:\n  sessionTableBuckets: 1000\n", "kp.sessionTableBuckets", "not a power of 2"),
    ("kp:\n  sessionTableBuckets: true\n", "kp.sessionTableBuckets", "expected an integer"),
    ("kp:\n  stateFile: ''\n", "kp.stateFile", "is empty"),
    ("kp:\n  apiBindAddress: ''\n", "kp.apiBindAddress", "cannot be off"),
    ("clientConnection:\n  qps: 5\n", "clientConnection.qps", "does not implement"),
])
def test_bad_fields_are_refused_with_their_path_and_reason(body, field, reason):
    error = refused(body)
    assert error.field == field and reason in error.reason, str(error)


def test_the_kind_and_version_are_checked():
    assert refused("", head="kind: KubeProxyConfiguration\n").field == "apiVersion"
    assert refused("", head="apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
                             "kind: KubeletConfiguration\n").field == "kind"
    assert refused("", head="- a list\n").field == "(file)"
    assert refused("", head="a: [unclosed\n").field == "(file)"


def test_read_says_when_the_file_cannot_be_read(tmp_path):
    with pytest.raises(ConfigError) as error:
        config_file.read(str(tmp_path / "absent.yaml"))
    assert error.value.field == "(file)" and "cannot read" in error.value.reason
