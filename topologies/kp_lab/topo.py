"""The one definition of the kp Mininet classes lives in topologies/kp.py (a ``mn --custom``
file that must stay self-contained); this module loads that file once and re-exports it.
"""
import importlib.util
import os
import sys

KP_FILE = os.environ.get('KP_TOPOLOGY_FILE') or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'kp.py')
_NAME = 'kp_lab.kp_custom'


def _load():
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(_NAME, KP_FILE)
    if spec is None:
        raise ImportError('kp_lab: cannot find the kp custom file at %s' % KP_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_NAME]
        raise
    return module


kp = _load()

KpSwitch = kp.KpSwitch
OVSNodeSwitch = kp.OVSNodeSwitch
KpSwitchMissing = kp.KpSwitchMissing
KpHost = kp.KpHost
KpNodeTopo = kp.KpNodeTopo
KpClusterTopo = kp.KpClusterTopo
TOPOS = dict(kp.topos)
SERVICE_CIDR4 = kp.SERVICE_CIDR4
SERVICE_CIDR6 = kp.SERVICE_CIDR6
FABRIC_DPID = kp.FABRIC_DPID
kp_addr4 = kp.kp_addr4
kp_addr6 = kp.kp_addr6
kp_mac = kp.kp_mac
kp_node_ip4 = kp.kp_node_ip4
kp_node_ip6 = kp.kp_node_ip6
kp_post_start = kp.kp_post_start
post_start = kp.kp_post_start
tx_offload_off = kp.tx_offload_off
of13_features = kp.of13_features
kp_switch_binary = kp.kp_switch_binary
tcp_connections = kp.kp_tcp_connections
