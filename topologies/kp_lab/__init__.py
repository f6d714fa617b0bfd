"""kp_lab: the runtime shared by kp's Mininet labs and integration tests.

- ``build_net(topo_name, switch='kpswitch'|'ovs', controller_port=6653, **topo_args)``
  -> ``KpLab`` (context manager; ``close()`` always tears down and ``leftovers()`` checks)
- ``ControllerProcess(app='kp_app', of_port=None, wsapi_port=None, rest=True)`` (kp_app's
  health and metrics on free ports: ``.healthz_port``, ``.metrics_port``, ``.metrics_url()``)
- ``ensure_ovs()``, ``stop_ovs_if_started()``
- traffic: ``start_http_server``, ``start_tcp_server``, ``start_udp_server``,
  ``http_get``, ``tcp_session``/``start_tcp_session``, ``udp_request``, ``ping``,
  ``start_sctp_server``/``sctp_request`` (SCTP from crafted packets, sctp_agent.py)
- the topology classes and address plan of topologies/kp.py (``kp_lab.topo``)
- ``kp_lab.fake_kube_api.FakeKubeApi``: a fake Kubernetes API server (list/watch) for
  kp_app's cluster watch (not imported here: import it by its module)

Everything imports only the standard library and Mininet (no Ryu): it also runs under
Debian's /usr/bin/python3.
"""
from .controller import ControllerProcess, free_port, free_port_range, ryu_manager
from .net import (SWITCH_KINDS, KpLab, KpOVSSwitch, LabError, build_net, choose_prefix,
                  kp_switch_works, reserve_prefix)
from .ovs import ensure_ovs, ovs_bridges, ovs_running, stop_ovs_if_started
from .topo import (FABRIC_DPID, SERVICE_CIDR4, SERVICE_CIDR6, TOPOS, KpClusterTopo,
                   KpHost, KpNodeTopo, KpSwitch, KpSwitchMissing, kp_addr4, kp_addr6,
                   kp_mac, kp_switch_binary, of13_features, post_start, tx_offload_off)
from .traffic import (Server, http_get, ping, sctp_request, start_http_server,
                      start_sctp_server, start_server, start_tcp_connects, start_tcp_server,
                      start_tcp_session, start_udp_flood, start_udp_requests,
                      start_udp_server, tcp_session, udp_request, url_for)

__all__ = [
    'ControllerProcess', 'free_port', 'free_port_range', 'ryu_manager',
    'SWITCH_KINDS', 'KpLab', 'KpOVSSwitch', 'LabError', 'build_net', 'choose_prefix',
    'kp_switch_works', 'reserve_prefix',
    'ensure_ovs', 'ovs_bridges', 'ovs_running', 'stop_ovs_if_started',
    'FABRIC_DPID', 'SERVICE_CIDR4', 'SERVICE_CIDR6', 'TOPOS', 'KpClusterTopo', 'KpHost',
    'KpNodeTopo', 'KpSwitch', 'KpSwitchMissing', 'kp_addr4', 'kp_addr6', 'kp_mac',
    'kp_switch_binary', 'of13_features', 'post_start', 'tx_offload_off',
    'Server', 'http_get', 'ping', 'sctp_request', 'start_sctp_server', 'start_http_server',
    'start_server', 'start_tcp_server', 'start_tcp_connects', 'start_tcp_session',
    'start_udp_flood', 'start_udp_requests', 'start_udp_server',
    'tcp_session', 'udp_request', 'url_for',
]
