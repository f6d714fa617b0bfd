"""Fixtures for the pure core's unit tests (no switch, no Ryu)."""
import pytest

from kp_app.kubeproxy import KubeProxy


@pytest.fixture
def kp():
    """A KubeProxy whose switch programming is recorded in `kp.sent` as (dpid, messages),
    at a fixed time. (Modules that need another rig define their own `kp`.)"""
    sent = []
    proxy = KubeProxy(lambda dpid, msgs: sent.append((dpid, msgs)), clock=lambda: 100.0)
    proxy.sent = sent
    return proxy
