"""kp_app: a kube-proxy data plane on OpenFlow 1.3 (`ryu-manager kp_app`).

Ryu loads the RyuApp subclass whose __module__ is exactly the module named on its
command line, so the application class is defined here. ryu-manager has imported Ryu
before it imports us; anyone else (the `ku` CLI, the unit tests of the pure core) imports
this package without paying for Ryu and eventlet.
"""
import sys

if "ryu.base.app_manager" in sys.modules:
    from ryu import cfg

    from kp_app.ryu_shim import KpRyuApp

    # OpenFlow and REST listen on loopback unless --ofp-listen-host / --wsapi-host say
    # otherwise (Ryu's own defaults are every address; see SECURITY.md).
    LISTEN_DEFAULT = "127.0.0.1"
    cfg.CONF.set_default("ofp_listen_host", LISTEN_DEFAULT)
    cfg.CONF.set_default("wsapi_host", LISTEN_DEFAULT)

    class KpApp(KpRyuApp):
        """The kube-proxy controller (see kp_app.ryu_shim)."""
