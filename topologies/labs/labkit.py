"""The plumbing every kp lab shares: a controller and a Mininet lab started together and
always torn down, the REST API and `ku` as the lab's hands, bar charts, and the PASS/FAIL
checks a lab reports.

    with LabSession('kpnode', switch='kpswitch', out=sys.stdout, clients=2, pods=3) as s:
        s.ku('vip', '10.96.0.10/32', 'port', 80, 'target_port', 8080)   # prints the command
        s.api('GET', '/sessions')                                        # (status, JSON)
        s.checks.check('every pod answered', len(seen) == 3, seen)
        s.report                                                         # the JSON-able report

A lab script defines ``run(switch='kpswitch', cli=False, out=None, ...) -> dict`` (which
``run_lab(scenario, title, switch, cli, out, **topology)`` does) and
``main(argv=None) -> int``; ``lab_main(run, doc, argv)`` is that main: it reads
``--switch kpswitch|ovs``, ``--cli`` and ``--json`` (the report on stdout, the account on
stderr), and exits 0 only if every check passed.

Nothing here is found or stopped by name: the controller and the net are the ones this
session started, stopped by PID (ControllerProcess.stop, KpLab.close), in a finally.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
TOPOLOGIES = os.path.dirname(HERE)
REPO = os.path.dirname(TOPOLOGIES)
if TOPOLOGIES not in sys.path:
    sys.path.insert(0, TOPOLOGIES)

import kp_lab  # noqa: E402  (after the path set-up above)

# kp_app's REST API on loopback, never through an http_proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ku_binary():
    """`ku` of this interpreter's venv, else the repo's venv, else PATH."""
    for candidate in (os.path.join(os.path.dirname(sys.executable), 'ku'),
                      os.path.join(REPO, '.venv', 'bin', 'ku')):
        if os.access(candidate, os.X_OK):
            return candidate
    return 'ku'


def port_free(port, host='127.0.0.1'):
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------- checks

class Checks:
    """Named PASS/FAIL lines, kept in order; a lab's verdict is all of them passing."""

    def __init__(self, out):
        self.out = out
        self.items = []

    def check(self, name, ok, detail=''):
        ok = bool(ok)
        self.items.append({'name': name, 'ok': ok, 'detail': _short(detail)})
        self.out.write('  [%s] %s%s\n' % ('PASS' if ok else 'FAIL', name,
                                          ' (%s)' % _short(detail) if detail != '' else ''))
        self.out.flush()
        return ok

    @property
    def passed(self):
        return bool(self.items) and all(i['ok'] for i in self.items)

    def summary(self, title):
        width = 72
        lines = ['', '=' * width, 'SUMMARY: %s' % title, '-' * width]
        for i in self.items:
            lines.append('%s  %s' % ('PASS' if i['ok'] else 'FAIL', i['name']))
            if not i['ok'] and i['detail']:
                lines.append('      %s' % i['detail'])
        failed = sum(not i['ok'] for i in self.items)
        lines.append('-' * width)
        lines.append('RESULT: %s (%d/%d checks passed)' % (
            'PASS' if self.passed else 'FAIL', len(self.items) - failed, len(self.items)))
        lines.append('=' * width)
        return '\n'.join(lines) + '\n'


def _short(detail, limit=300):
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return text if len(text) <= limit else text[:limit - 3] + '...'


# ---------------------------------------------------------------------------- charts

def bar_chart(counts, total=None, width=40, order=None, expected=None):
    """A text bar chart of `counts` ({label: n}); `expected` (a fraction) adds a marker."""
    labels = list(order) if order is not None else sorted(counts)
    total = total if total is not None else sum(counts.values())
    biggest = max([counts.get(l, 0) for l in labels] + [1])
    pad = max([len(str(l)) for l in labels] + [4])
    lines = []
    for label in labels:
        n = counts.get(label, 0)
        bar = '#' * int(round(width * n / biggest))
        share = 100.0 * n / total if total else 0.0
        lines.append('  %-*s |%-*s %4d  %5.1f%%' % (pad, label, width, bar, n, share))
    if expected is not None:
        lines.append('  %-*s  (an even share is %.1f%%)' % (pad, '', 100.0 * expected))
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------- traffic

def parallel(starters, batch=16):
    """Run background clients (callables returning a ClientRun) `batch` at a time;
    returns their results in order."""
    results = []
    for i in range(0, len(starters), batch):
        runs = [start() for start in starters[i:i + batch]]
        results.extend(r.result() for r in runs)
    return results


def serve(lab, kind, port, pods=None):
    """Start an `kind` ('http'/'tcp'/'udp') agent server on each pod (named after it)."""
    starter = {'http': kp_lab.start_http_server, 'tcp': kp_lab.start_tcp_server,
               'udp': kp_lab.start_udp_server}[kind]
    return [starter(pod, port, name=pod.name) for pod in (pods or lab.pods)]


# ---------------------------------------------------------------------------- the session

class LabSession:
    """A kp controller (ryu-manager kp_app) and a kp Mininet topology, started together.

    `of_port`/`wsapi_port`: None picks free ports; `prefer_default_ports` uses 6653/8080
    when both are free (the demo: then a plain `ku` talks to it). `plain_names` asks for
    the plain switch names (s1, f0) when nobody uses them. Closing (also on Ctrl-C or
    SIGTERM, which kp_lab turns into SystemExit) stops the net, then the controller."""

    def __init__(self, topo_name='kpnode', switch='kpswitch', out=None, title='kp lab',
                 prefer_default_ports=False, plain_names=False, **topo_args):
        self.topo_name, self.switch_kind, self.topo_args = topo_name, switch, topo_args
        self.out = out or sys.stdout
        self.title = title
        self.prefer_default_ports = prefer_default_ports
        self.plain_names = plain_names
        self.checks = Checks(self.out)
        self.report = {'lab': title, 'switch': switch, 'topology': topo_name,
                       'topology_args': topo_args}
        self.ctl = None
        self.lab = None
        self.started = time.monotonic()
        self.ku_commands = []

    # -- life cycle ------------------------------------------------------------------

    def start(self):
        of_port = wsapi_port = None
        if self.prefer_default_ports and port_free(6653) and port_free(8080):
            of_port, wsapi_port = 6653, 8080
        self.ctl = kp_lab.ControllerProcess('kp_app', of_port=of_port, wsapi_port=wsapi_port)
        self.say('*** controller: ryu-manager kp_app (OpenFlow 127.0.0.1:%d, REST %s)'
                 % (self.ctl.of_port, self.api_url))
        try:
            self.ctl.start()
            self.say('*** controller pid %d, log %s' % (self.ctl.pid, self.ctl.log_file))
            prefix = None
            if self.plain_names and self._plain_names_free():
                prefix = ''
            self.say('*** network: %s %s on %s' % (
                self.topo_name, ' '.join('%s=%s' % kv for kv in sorted(self.topo_args.items())),
                self.switch_kind))
            try:
                self.lab = kp_lab.build_net(self.topo_name, switch=self.switch_kind,
                                            controller_port=self.ctl.of_port,
                                            prefix=prefix, **self.topo_args)
            except kp_lab.LabError as e:
                if prefix != '' or 'in use' not in str(e):
                    raise
                self.lab = kp_lab.build_net(self.topo_name, switch=self.switch_kind,
                                            controller_port=self.ctl.of_port,
                                            **self.topo_args)
            self.say('*** switches connected: %s' % ', '.join(
                '%s (dpid %d)' % (s.name, int(s.dpid, 16)) for s in self.lab.net.switches))
        except BaseException:
            self.close()
            raise
        return self

    def _plain_names_free(self):
        from kp_lab import procs
        return not any(re.match(r'(s\d+|f0)(-eth\d+)?$', n) for n in procs.root_interfaces())

    def close(self):
        """Stop the net then the controller (each only if this session started it)."""
        try:
            if self.lab is not None:
                lab, self.lab = self.lab, None
                self.report['leftovers_checked'] = True
                try:
                    lab.close()
                finally:
                    left = lab.leftovers()
                    self.report['leftovers'] = {k: v for k, v in left.items() if v}
                    if self.switch_kind == 'ovs':
                        kp_lab.stop_ovs_if_started()   # only if this process started it
        finally:
            if self.ctl is not None:
                ctl, self.ctl = self.ctl, None
                ctl.stop()
                if self.checks.passed:
                    ctl.remove_log()
                else:
                    self.report['controller_log'] = ctl.log_file

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- output ------------------------------------------------------------------------

    def say(self, text=''):
        self.out.write(text + '\n')
        self.out.flush()

    def section(self, title):
        self.say('')
        self.say('--- %s %s' % (title, '-' * max(3, 66 - len(title))))

    # -- the controller's API ------------------------------------------------------------

    @property
    def api_url(self):
        return 'http://127.0.0.1:%d' % self.ctl.wsapi_port

    def api(self, method, path, body=None, timeout=10):
        """(status, JSON answer) of `method` /v1`path`."""
        request = urllib.request.Request(
            self.api_url + '/v1' + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={'Content-Type': 'application/json'})
        try:
            with _DIRECT.open(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b'null')
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw or b'null')
            except ValueError:
                return error.code, raw.decode(errors='replace')

    def get(self, path):
        status, body = self.api('GET', path)
        if status != 200:
            raise RuntimeError('GET /v1%s: %s %s' % (path, status, body))
        return body

    def ku(self, *args, echo=True, check=True):
        """Run `ku --api URL args...`; print the command (as a user would type it, with
        --api only when the API is not the default) and its output."""
        words = [str(a) for a in args]
        shown = 'ku ' + ('' if self.ctl.wsapi_port == 8080 else '--api %s ' % self.api_url)
        shown += ' '.join(words)
        self.ku_commands.append(shown)
        result = subprocess.run([ku_binary(), '--api', self.api_url] + words,
                                capture_output=True, text=True, timeout=30)
        if echo:
            self.say('$ ' + shown)
            text = (result.stdout + result.stderr).rstrip()
            if text:
                self.say('\n'.join('    ' + line for line in text.splitlines()))
        if check and result.returncode != 0:
            raise RuntimeError('%s failed (%d): %s' % (shown, result.returncode,
                                                       result.stderr.strip()))
        return result

    def sessions(self, limit=1000, prefix=None, port=None):
        query = 'limit=%d' % limit
        if prefix:
            query += '&prefix=%s' % urllib.request.quote(prefix, safe='')
            if port is not None:
                query += '&port=%d' % port
        return self.get('/sessions?' + query)

    def vip(self, prefix, port):
        addr, plen = prefix.split('/')
        return self.get('/vips/%s/%s/%d' % (addr, plen, port))

    def wait_sessions(self, predicate, timeout, interval=0.2, **kw):
        """Poll GET /v1/sessions until predicate(answer) or timeout; (answer, seconds)."""
        started = time.monotonic()
        while True:
            answer = self.sessions(**kw)
            if predicate(answer) or time.monotonic() - started >= timeout:
                return answer, time.monotonic() - started
            time.sleep(interval)

    # -- the net -------------------------------------------------------------------------

    def pod_names_by_ip(self, family=4):
        return {self.lab.ip(p.name, family): p.name for p in self.lab.pods}

    def cli(self):
        """Stop in the Mininet CLI (the lab stays up until `exit`)."""
        from mininet.cli import CLI
        self.section('Mininet CLI (exit or ^D to tear down); ku talks to %s' % self.api_url)
        self.say('    try: %s show vip verbose' % ('ku' if self.ctl.wsapi_port == 8080 else
                                                    '%s --api %s' % (ku_binary(), self.api_url)))
        CLI(self.lab.net)

    # -- the whole run -------------------------------------------------------------------

    def execute(self, scenario, cli=False):
        """Start, run `scenario(self)`, optionally stop in the CLI, always tear down, check
        that nothing is left, print the SUMMARY; returns the report. An error in the
        scenario is a FAIL line (with the traceback printed); ^C and SIGTERM still tear
        everything down and then propagate."""
        try:
            try:
                self.start()
                scenario(self)
            except Exception as e:  # noqa: BLE001 - reported as a failed check
                import traceback
                self.say(traceback.format_exc().rstrip())
                where = traceback.extract_tb(e.__traceback__)[-1]
                self.checks.check('the scenario ran to the end', False, '%s: %s (at %s:%d)' % (
                    type(e).__name__, e, os.path.basename(where.filename), where.lineno))
            if STRAY_DATAGRAMS:
                self.report['stray_datagrams'] = list(STRAY_DATAGRAMS)
                self.checks.check('no stray datagrams reached the clients', False,
                                  STRAY_DATAGRAMS[:3])
                del STRAY_DATAGRAMS[:]
            if cli and self.lab is not None:
                self.cli()
        finally:
            ctl = self.ctl
            self.close()
        left = dict(self.report.get('leftovers') or {})
        if ctl is not None and kp_lab.procs.pid_alive(ctl.pid):
            left['controller'] = ctl.pid
        self.section('teardown')
        self.checks.check('teardown left no namespaces, interfaces or processes', not left,
                          left or 'all stopped')
        return self.finish()

    # -- the end -------------------------------------------------------------------------

    def finish(self):
        """Print the SUMMARY block; fill in the report's verdict."""
        self.report['checks'] = self.checks.items
        self.report['passed'] = self.checks.passed
        self.report['ku_commands'] = self.ku_commands
        self.report['seconds'] = round(time.monotonic() - self.started, 1)
        self.out.write(self.checks.summary(self.title))
        self.out.flush()
        return self.report


def start_http_get(host, url, timeout=3.0):
    """http_get in the background: `.result()` gives what kp_lab.http_get returns."""
    from kp_lab import traffic
    proc = traffic.agent_popen(host, 'http-get', url, '--timeout', timeout)
    return traffic.ClientRun(host, proc, timeout + 5)


def http_gets(host, url, count, batch=8):
    """`count` GETs of `url` from `host` (each its own connection), `batch` at a time."""
    return [r for r in parallel([lambda: start_http_get(host, url)] * count, batch)]


# One process that sends a datagram from each of many source ports and collects the
# answers (the agent's udp-request takes one source port per process). Unanswered ports
# are retried: the first packets of many new flows all go up to the controller at once.
_UDP_SWEEP = r"""
import json, select, socket, sys, time
addr, port, ports, tries, wait = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
fam = socket.AF_INET6 if ':' in addr else socket.AF_INET
socks = {}
for p in ports:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('', p))
    socks[p] = s
got, stray = {}, []
for attempt in range(tries):
    for p, s in socks.items():
        if p not in got:
            s.sendto(('sweep %d' % p).encode(), (addr, port))
            time.sleep(0.002)
    deadline = time.monotonic() + wait
    while len(got) < len(socks) and time.monotonic() < deadline:
        r, _, _ = select.select([s for p, s in socks.items() if p not in got], [], [], max(0.01, deadline - time.monotonic()))
        for s in r:
            data, frm = s.recvfrom(65535)
            try:
                reply = json.loads(data.decode())
            except ValueError:
                stray.append({'to': s.getsockname()[1], 'from': '%s:%d' % frm[:2], 'hex': data[:64].hex()})
                continue
            reply['from'], reply['from_port'] = frm[0], frm[1]
            got[s.getsockname()[1]] = reply
    if len(got) == len(socks):
        break
print(json.dumps({'replies': {str(p): got.get(p) for p in ports}, 'stray': stray}))
"""


STRAY_DATAGRAMS = []   # datagrams a sweep got that were no server's answer (a bug to see)


def udp_sweep(host, addr, port, src_ports, tries=3, wait=1.5):
    """One datagram to addr:port from each of `src_ports` (each its own flow), sent from
    `host`; returns {src_port: the server's reply (name, peer, ...) or None}. Datagrams
    that are no server's JSON answer are kept in STRAY_DATAGRAMS."""
    from kp_lab import traffic
    proc = host.popen([traffic.PYTHON, '-c', _UDP_SWEEP, addr, str(port),
                       json.dumps(list(src_ports)), str(tries), str(wait)],
                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, universal_newlines=True)
    traffic._track(host, proc)
    try:
        out, err = proc.communicate(timeout=tries * wait + 10)
    except subprocess.TimeoutExpired:
        kp_lab.procs.stop_process(proc)
        out, err = proc.communicate()
    try:
        answer = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError('udp sweep from %s failed: %s' % (host, err.strip()[-500:]))
    STRAY_DATAGRAMS.extend(answer['stray'])
    return {int(p): r for p, r in answer['replies'].items()}


# Datagrams with another host's source address (IPv4, raw socket): to show a node the
# very 5-tuple another node saw, as an upstream router spreading flows would deliver it.
_UDP_SPOOF = r"""
import json, socket, struct, sys
src, ports, dst, dport = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def csum(data):
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for sport in ports:
    payload = ('same-tuple %d' % sport).encode()
    ulen = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 17, ulen)
    udp = struct.pack('!HHHH', sport, dport, ulen, 0) + payload
    udp = udp[:6] + struct.pack('!H', csum(pseudo + udp) or 0xffff) + udp[8:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + ulen, sport, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    s.sendto(ip + udp, (dst, 0))
print(json.dumps({'sent': len(ports)}))
"""


def udp_spoof(host, src, src_ports, dst, dport):
    """From `host`, one UDP datagram per source port with source address `src`."""
    from kp_lab import traffic
    proc = host.popen([traffic.PYTHON, '-c', _UDP_SPOOF, src, json.dumps(list(src_ports)),
                       dst, str(dport)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, universal_newlines=True)
    traffic._track(host, proc)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        kp_lab.procs.stop_process(proc)
        out, err = proc.communicate()
    if '"sent"' not in out:
        raise RuntimeError('spoofed UDP from %s failed: %s' % (host, err.strip()[-500:]))


def counts_of(replies, key='name'):
    return Counter(r[key] for r in replies)


def sessions_of(bodies):
    """Pod name -> how many distinct flows (client address and port) it answered.

    A client may reuse a source port within the idle timeout; that 5-tuple is still the
    same session, so this, not the number of requests, is what the counters count."""
    flows = {(b['peer'], b['peer_port']): b['name'] for b in bodies}
    return Counter(flows.values())


# ---------------------------------------------------------------------------- main

def run_lab(scenario, title, switch='kpswitch', cli=False, out=None, topo='kpnode',
            **session_args):
    """What a lab's run() does: its scenario in a LabSession of `topo` (`title` names the
    switch where it says %s), optionally the CLI after it; returns the report."""
    session = LabSession(topo, switch=switch, out=out, title=title % switch, **session_args)
    return session.execute(scenario, cli=cli)


def lab_main(run, doc, argv=None, extra_args=None):
    """The command line of a lab: --switch, --cli, --json; exit 0 iff every check passed."""
    ap = argparse.ArgumentParser(description=doc.split('\n\n')[0],
                                 epilog=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--switch', choices=kp_lab.SWITCH_KINDS, default='kpswitch',
                    help='the OpenFlow switch: the bundled kp-switch (default) or Open vSwitch')
    ap.add_argument('--cli', action='store_true',
                    help='stop in the Mininet CLI after the scenario (tear down on exit)')
    ap.add_argument('--json', action='store_true',
                    help='print the report as JSON on stdout (the account goes to stderr)')
    if extra_args:
        extra_args(ap)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.stderr.write('this lab needs root (Mininet namespaces)\n')
        return 2
    out = sys.stderr if args.json else sys.stdout
    kwargs = {k: v for k, v in vars(args).items() if k not in ('switch', 'cli', 'json')}
    # A SIGTERM before the lab installs its own handler must also unwind through finally.
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        report = run(switch=args.switch, cli=args.cli, out=out, **kwargs)
    except KeyboardInterrupt:
        out.write('\n*** interrupted; everything this lab started was stopped\n')
        return 130
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + '\n')
    return 0 if report.get('passed') else 1
