"""An interactive kp lab: controller + topology + the Mininet CLI, always torn down.

    .venv/bin/python -m kp_lab --topo kpnode clients=2 pods=3 --switch kpswitch
    .venv/bin/python -m kp_lab --topo kpcluster nodes=3 pods=2 --switch ovs --app kp_app
    .venv/bin/python -m kp_lab --no-controller --of-port 6653   # a controller you run

The controller listens on 127.0.0.1:6653 (OpenFlow) and 127.0.0.1:8080 (REST) unless
told otherwise; switch names are plain (s1, f0) unless --prefix is given.
"""
import argparse
import sys

from mininet.cli import CLI
from mininet.log import setLogLevel

from .controller import ControllerProcess
from .net import build_net


def topo_args(pairs):
    out = {}
    for pair in pairs:
        key, _, value = pair.partition('=')
        if not key or not _:
            raise SystemExit('topology arguments are key=value, not %r' % pair)
        out[key] = int(value) if value.isdigit() else value
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog='python -m kp_lab', description=__doc__.splitlines()[0])
    ap.add_argument('--topo', default='kpnode', choices=['kpnode', 'kpcluster'])
    ap.add_argument('args', nargs='*', help='topology arguments, e.g. clients=2 pods=3')
    ap.add_argument('--switch', default='kpswitch', choices=['kpswitch', 'ovs'])
    ap.add_argument('--app', default='kp_app', help='Ryu app module (default kp_app)')
    ap.add_argument('--no-controller', action='store_true',
                    help='do not start ryu-manager; connect to one on --of-port')
    ap.add_argument('--of-port', type=int, default=6653, help='0: any free port')
    ap.add_argument('--wsapi-port', type=int, default=8080, help='0: any free port')
    ap.add_argument('--prefix', default='', help='switch-name prefix (default none)')
    ap.add_argument('--loglevel', default='info')
    opts = ap.parse_args(argv)
    setLogLevel(opts.loglevel)
    ctl, of_port = None, opts.of_port
    if not opts.no_controller:
        ctl = ControllerProcess(opts.app, of_port=opts.of_port, wsapi_port=opts.wsapi_port,
                                rest=opts.app == 'kp_app')
        ctl.start()
        of_port = ctl.of_port
        print('*** %s: OpenFlow 127.0.0.1:%d, REST %s, log %s'
              % (opts.app, ctl.of_port, ctl.url('/'), ctl.log_file))
    try:
        with build_net(opts.topo, switch=opts.switch, controller_port=of_port,
                       prefix=opts.prefix, **topo_args(opts.args)) as lab:
            for name, h in sorted(lab.plan['hosts'].items()):
                print('%-6s %-7s %-12s %-18s %s port %d'
                      % (name, h['role'], h['ip'], h['ip6'], h['switch'], h['port']))
            CLI(lab.net)
    finally:
        if ctl:
            ctl.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
