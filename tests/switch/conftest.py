"""Fixtures for the fast path tests: both implementations, and veth pairs in private
network namespaces (only namespaces these fixtures create are touched, and they are
deleted at teardown even when the test fails)."""
from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from typing import Iterator, List

import pytest

from kp_switch import fastpath_ref

try:
    from kp_switch import _fastpath
except ImportError:     # the suite then fails loudly in test_fastpath_build
    _fastpath = None


IMPLS = {"ref": fastpath_ref}
if _fastpath is not None:
    IMPLS["c"] = _fastpath


@pytest.fixture(params=sorted(IMPLS))
def fp(request):
    """Each test that takes `fp` runs against the C extension and the Python twin."""
    return IMPLS[request.param]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@dataclass
class Host:
    ns: str            # namespace name
    ifname: str        # interface inside the namespace
    root_if: str       # the peer in the root namespace (a datapath port)
    mac: str
    ip4: str
    ip6: str

    def run(self, *args: str, check: bool = True, timeout: float = 20
            ) -> subprocess.CompletedProcess:
        return subprocess.run(("ip", "netns", "exec", self.ns) + args, check=check,
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(("ip", "netns", "exec", self.ns) + args,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _make_hosts(n: int) -> List[Host]:
    tag = secrets.token_hex(3)
    hosts: List[Host] = []
    try:
        for i in range(n):
            ns = "kpt-%s-%d" % (tag, i)
            sh("ip", "netns", "add", ns)
            mac = "02:6b:70:%02x:%02x:%02x" % (int(tag[:2], 16), int(tag[2:4], 16), i + 1)
            h = Host(ns, "eth0", "kp%s%d" % (tag, i), mac, "10.77.0.%d" % (i + 1),
                     "fd00:77::%d" % (i + 1))
            hosts.append(h)
            sh("ip", "link", "add", h.root_if, "type", "veth", "peer", "name", "kpn" + tag,
               "netns", ns)
            h.run("ip", "link", "set", "kpn" + tag, "name", "eth0")
            h.run("ip", "link", "set", "eth0", "address", mac)
            h.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0")
            h.run("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
            h.run("ip", "addr", "add", h.ip4 + "/24", "dev", "eth0")
            h.run("ip", "addr", "add", h.ip6 + "/64", "dev", "eth0", "nodad")
            h.run("ip", "link", "set", "lo", "up")
            h.run("ip", "link", "set", "eth0", "up")
            # The root-side end must not talk by itself (IPv6 autoconf, DAD, RS).
            sh("sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % h.root_if, check=False)
            sh("ip", "link", "set", h.root_if, "up")
    except BaseException:
        _delete(hosts)
        raise
    return hosts


def _delete(hosts: List[Host]) -> None:
    for h in hosts:
        subprocess.run(("ip", "netns", "del", h.ns), capture_output=True)
        subprocess.run(("ip", "link", "del", h.root_if), capture_output=True)


@pytest.fixture
def hosts3() -> Iterator[List[Host]]:
    """Three namespaces, each with eth0 (10.77.0.N/24, fd00:77::N/64) whose veth peer
    is in the root namespace, up and unaddressed, for a Datapath to own."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    hosts = _make_hosts(3)
    try:
        yield hosts
    finally:
        _delete(hosts)
