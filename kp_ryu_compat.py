"""Lets Ryu 4.34 run kp on Python 3.10+, loaded at start-up by kp_ryu_compat.pth.

Two things in Ryu break `ryu-manager kp_app` before any of kp's code can run, and one
needs doing before it does:

- eventlet 0.30.2, the last release with ``eventlet.wsgi.ALREADY_HANDLED``, does not
  import on Python 3.10+, and ``ryu/app/wsgi.py`` imports that name while ryu-manager
  starts. Ryu only hands the marker back from websocket handlers, which kp does not use,
  so any unique object serves.
- ``ryu.utils.import_module`` treats an application name that is also a path in the
  current directory as a file to load, so from the project's root (where ``kp_app/`` is a
  directory) it fails with IsADirectoryError. A directory is a package: import it by name.

- kp_app's command-line options (--kp-mode, --kp-dpid-takeover, --kp-state-file,
  --kubeconfig, --auth-token-file, --kp-config, --healthz-bind-address,
  --metrics-bind-address) must be known to Ryu's configuration before ryu-manager
  parses its command line, which is before it imports kp_app: they are registered when
  ``ryu.flags`` is.

A .pth file runs at interpreter start, long before those imports; this installs a finder
that waits for each module to be imported and then mends it. Nothing is imported early,
so other programs in the environment pay nothing.
"""
import importlib
import importlib.abc
import importlib.util
import os
import sys


def _mend_eventlet_wsgi(module) -> None:
    if not hasattr(module, "ALREADY_HANDLED"):
        module.ALREADY_HANDLED = object()


def _mend_ryu_utils(module) -> None:
    original = module.import_module

    def import_module(modname):
        if os.path.isdir(modname) and os.path.exists(os.path.join(modname, "__init__.py")):
            return importlib.import_module(os.path.normpath(modname).replace(os.sep, "."))
        return original(modname)

    module.import_module = import_module


def _register_kp_options(module) -> None:
    """kp's own ryu-manager options. They must be known before ryu-manager parses its
    command line, which happens before it imports any application, so they are
    registered as soon as ryu.flags (the module of Ryu's own options) is loaded (kp_app
    reads them from ryu.cfg.CONF; see kp_app/rest.py and SECURITY.md)."""
    from oslo_config import cfg

    module.CONF.register_cli_opts([
        cfg.StrOpt("kp-mode", default="auto", choices=["auto", "packet-in", "ct", "lb"],
                   help="where kp_app's switches make new sessions: lb (kp-switch's own "
                        "data path), ct (Open vSwitch's conntrack), packet-in (the "
                        "controller, any OpenFlow 1.3 switch), or auto: lb on kp-switch, "
                        "ct on Open vSwitch, packet-in elsewhere"),
        cfg.BoolOpt("kp-dpid-takeover", default=False,
                    help="kp_app: a switch that connects with the datapath id of one "
                         "connected already replaces it (default: the first keeps it "
                         "unless it fails an echo; see kp_app/dpid_claims.py)"),
        cfg.StrOpt("kp-state-file", default=None,
                   help="keep kp_app's configuration in this JSON file: restored at start, "
                        "written after every change (default: in memory only)"),
        cfg.StrOpt("kubeconfig", default=None,
                   help="kp_app: list and watch the cluster's Services, EndpointSlices and "
                        "Nodes through this kubeconfig (default: the in-cluster service "
                        "account when its files are there, else no cluster)"),
        cfg.StrOpt("kp-node-name", default=None,
                   help="kp_app: the Kubernetes Node this kp_app serves: its addresses and "
                        "pod CIDR are the default node addresses, its zone label the zone "
                        "for topology hints"),
        cfg.FloatOpt("kp-probe-interval", default=10.0, min=0.5,
                     help="kp_app: seconds between two rounds of link probes (kp_app/links.py); "
                          "a probe older than that is refused, and a link between switches "
                          "that no probe confirmed for 3.5 of them goes"),
        cfg.FloatOpt("kp-sync-period", default=30.0, min=1.0,
                     help="kp_app: seconds between full resyncs of the watched cluster"),
        cfg.StrOpt("auth-token-file", default=None,
                   help="kp_app: a file holding the bearer token every REST request must "
                        "carry (Authorization: Bearer <token>); default: no token"),
        # Not --config: oslo.config (Ryu's) already has --config-file and --config-dir,
        # INI files of these very options; kp's is a KubeProxyConfiguration in YAML.
        cfg.StrOpt("kp-config", default=None,
                   help="kp_app: a configuration file (YAML, modelled on kube-proxy's "
                        "KubeProxyConfiguration; see kp_app/config_file.py), read at "
                        "start; the command line overrides it"),
        cfg.StrOpt("healthz-bind-address", default="127.0.0.1:10256",
                   help="kp_app: IP:port of /healthz and /livez, as kube-proxy's "
                        "(\"\" turns them off); health check node ports listen on its IP"),
        cfg.StrOpt("metrics-bind-address", default="127.0.0.1:10249",
                   help="kp_app: IP:port of /metrics (Prometheus), as kube-proxy's "
                        "(\"\" turns it off)"),
    ])


_MENDS = {"eventlet.wsgi": _mend_eventlet_wsgi, "ryu.utils": _mend_ryu_utils,
          "ryu.flags": _register_kp_options}


class _MendingFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        mend = _MENDS.get(name)
        if mend is None:
            return None
        # Let the normal finders locate the module, without asking ourselves again.
        _MENDS.pop(name)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_mend(module):
            exec_module(module)
            mend(module)

        spec.loader.exec_module = exec_and_mend
        return spec


if not any(type(f).__name__ == "_MendingFinder" for f in sys.meta_path):
    sys.meta_path.insert(0, _MendingFinder())
