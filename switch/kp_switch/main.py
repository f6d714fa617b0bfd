"""kp-switch: one userspace OpenFlow 1.3 switch on the given interfaces.

    kp-switch --dpid 1 --controller tcp:127.0.0.1:6653 --listen ptcp:6634 IFACE [IFACE ...]

The interfaces are its ports, numbered 1, 2, ... in the order given, on AF_XDP or
AF_PACKET (``--ports``; see switch/FASTPATH.md, "Port I/O"). With
``--node-ip 10.0.1.1/24`` (and/or ``--node-ip6 fd00:0:0:1::1/64``) it announces those node
addresses to the controller in its OpenFlow description (kp_proto.node_announcement), so
that kp_app knows the node's address and pod subnet without ``ku conf ... dpid N``.
``--threads N`` runs N datapath threads, each with its own receive sockets (an AF_PACKET
fanout group per port), flow caches and session table (switch/FASTPATH.md, "Threads").
"""
import argparse
import errno
import logging
import os
import signal
import sys
import threading

from .limits import MAX_MGMT_CONNECTIONS, MGMT_RATE


def _dpid(text):
    """'1' and '42' are decimal; '0x2a', 16 hex digits (as Mininet passes) or any a-f: hex."""
    t = text.lower()
    if t.startswith("0x"):
        return int(t, 16)
    return int(t, 16 if len(t) == 16 or any(c in "abcdef" for c in t) else 10)


def build_parser():
    p = argparse.ArgumentParser(prog="kp-switch", description=__doc__.split("\n\n")[0])
    p.add_argument("--dpid", type=_dpid, default=1, help="datapath id (decimal, or 0x... hex)")
    p.add_argument("--controller", action="append", default=[], metavar="tcp:HOST:PORT",
                   help="controller to connect to (repeatable; ssl:HOST:PORT for TLS); "
                        "reconnects with backoff")
    p.add_argument("--private-key", help="TLS: the switch's private key (PEM), for ssl: controllers")
    p.add_argument("--certificate", help="TLS: the switch's certificate (PEM)")
    p.add_argument("--ca-cert", help="TLS: the CA certificate controllers must be signed by (PEM)")
    p.add_argument("--listen", action="append", default=[], metavar="ptcp:PORT[:IP]",
                   help="accept OpenFlow management connections (default IP 127.0.0.1)")
    p.add_argument("--max-mgmt-connections", type=int, default=MAX_MGMT_CONNECTIONS,
                   metavar="N",
                   help="management connections at once over every --listen port; more "
                        "are closed as they come (default %(default)s)")
    p.add_argument("--mgmt-rate", type=int, default=MGMT_RATE, metavar="MSGS",
                   help="messages a second a management connection may send; beyond it "
                        "kp-switch reads it more slowly (default %(default)s)")
    p.add_argument("--buckets", type=int, default=1024, help="flow cache buckets (power of 2)")
    p.add_argument("--max-flows", type=int, default=100000, metavar="N",
                   help="flow entries per table; an add beyond them is refused with "
                        "OFPFMFC_TABLE_FULL (default 100000)")
    p.add_argument("--ports", choices=("auto", "afxdp", "afpacket"), default="auto",
                   help="port I/O: AF_XDP, AF_PACKET, or auto (default): AF_XDP when every "
                        "port takes it, else AF_PACKET with a log line saying why")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="datapath threads, each with its own receive sockets, flow caches "
                        "and session table (default 1; several run on AF_PACKET fanout)")
    p.add_argument("--node-ip", metavar="ADDR/LEN",
                   help="announce this IPv4 node address on its pod subnet, e.g. 10.0.1.1/24")
    p.add_argument("--node-ip6", metavar="ADDR/LEN",
                   help="announce this IPv6 node address, e.g. fd00:0:0:1::1/64")
    p.add_argument("--log-file", help="log here instead of stderr")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    p.add_argument("ifaces", nargs="+", metavar="IFACE", help="ports 1, 2, ... in this order")
    return p


def _no_entry_point_requires():
    """The editable install's console script sets `__main__.__requires__ = 'kp'`; when
    Ryu then imports distutils, setuptools' pkg_resources resolves every dependency of
    kp by its old name rules and can fail on one (repoze.lru) that is installed.  kp-switch
    needs no such check."""
    mod = sys.modules.get("__main__")
    if mod is not None and hasattr(mod, "__requires__"):
        del mod.__requires__


def main(argv=None):
    _no_entry_point_requires()
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, filename=args.log_file,
                        format="%(asctime)s kp-switch[%(process)d] %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("kp_switch")
    for name in args.ifaces:
        if not os.path.exists("/sys/class/net/%s" % name):
            print("kp-switch: no such interface: %s" % name, file=sys.stderr)
            return 2
    for name in ("max_flows", "max_mgmt_connections", "mgmt_rate"):
        if getattr(args, name) < 1:
            print("kp-switch: --%s must be at least 1" % name.replace("_", "-"), file=sys.stderr)
            return 2
    if args.buckets < 1 or args.buckets & (args.buckets - 1):
        print("kp-switch: --buckets must be a power of 2", file=sys.stderr)
        return 2
    from kp_proto.node_announcement import format_announcement
    try:
        announcement = format_announcement(args.node_ip, args.node_ip6)
    except ValueError as e:
        print("kp-switch: --node-ip/--node-ip6: %s" % e, file=sys.stderr)
        return 2

    tls_files = (args.certificate, args.private_key, args.ca_cert)
    tls_context = None
    if any(tls_files):
        if not all(tls_files):
            print("kp-switch: TLS needs --private-key, --certificate and --ca-cert", file=sys.stderr)
            return 2
        from .tls import client_context
        try:
            tls_context = client_context(*tls_files)
        except (OSError, ValueError) as e:
            print("kp-switch: TLS: %s" % e, file=sys.stderr)
            return 2
    if any(c.startswith("ssl:") for c in args.controller) and tls_context is None:
        print("kp-switch: ssl: controllers need --private-key, --certificate and --ca-cert",
              file=sys.stderr)
        return 2

    from . import datapath as dpimpl
    from .agent import Agent

    if not 1 <= args.threads <= dpimpl.MAX_THREADS:
        print("kp-switch: --threads %d: want 1..%d" % (args.threads, dpimpl.MAX_THREADS),
              file=sys.stderr)
        return 2
    ports = [(i + 1, name) for i, name in enumerate(args.ifaces)]
    try:
        dp, port_io, why_not_xdp = dpimpl.open_datapath(ports, args.buckets, args.ports,
                                                        args.threads)
    except OSError as e:
        print("kp-switch: cannot open the ports (--ports %s, --threads %d): %s%s"
              % (args.ports, args.threads, e,
                 " (run as root)" if e.errno in (errno.EPERM, errno.EACCES) else ""),
              file=sys.stderr)
        return 1
    if why_not_xdp:
        log.warning("ports on AF_PACKET: AF_XDP refused: %s", why_not_xdp)
    modes = dp.port_io()
    log.info("ports %s", ", ".join("%d=%s (%s)" % (no, name, modes.get(no, port_io))
                                   for no, name in ports))
    agent = Agent(dp, ports, dpid=args.dpid, tls_context=tls_context,
                  node_announcement=announcement, max_flows=args.max_flows,
                  max_mgmt_connections=args.max_mgmt_connections, mgmt_rate=args.mgmt_rate)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: done.set())
    try:
        agent.start(args.controller, args.listen)
    except (OSError, ValueError) as e:
        print("kp-switch: %s" % e, file=sys.stderr)
        agent.stop()
        return 1
    log.info("dpid %016x, %s fast path, %d datapath thread%s, ports %s, controllers %s, "
             "listening on %s, %s", args.dpid, dpimpl.NAME, args.threads,
             "s" if args.threads > 1 else "", ", ".join("%d=%s" % p for p in ports),
             args.controller or "none", args.listen or "nothing",
             announcement or "announcing no node address")
    while not done.wait(1.0):
        pass
    log.info("stopping")
    agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
