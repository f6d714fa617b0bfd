"""Traffic inside Mininet hosts: servers on pods, clients on clients, all bounded.

Servers answer with their name and the peer address they saw, so a test can tell which
pod answered and whether the pod saw the client's real address. Every process started
here is remembered by host; ``stop_host_processes(hosts)`` (called by KpLab.close) stops
them by PID.
"""
import json
import os
import select
import subprocess
import time

from .procs import stop_process

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'agent.py')
# SCTP from crafted packets over raw sockets (the kernels here have no SCTP sockets).
SCTP_AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'sctp_agent.py')
PYTHON = '/usr/bin/python3' if os.access('/usr/bin/python3', os.X_OK) else 'python3'

_processes = {}   # id(host) -> the Popen objects started in it


def _track(host, proc):
    _processes.setdefault(id(host), []).append(proc)
    return proc


def agent_popen(host, *args, agent=AGENT):
    """Run agent.py (or another agent) with `args` in `host`'s namespace (stdout piped,
    text)."""
    cmd = [PYTHON, '-u', agent] + [str(a) for a in args]
    proc = host.popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, universal_newlines=True)
    return _track(host, proc)


def stop_host_processes(hosts, timeout=3.0):
    """Stop every process this module started in `hosts` (by PID)."""
    for host in hosts:
        for proc in _processes.pop(id(host), []):
            stop_process(proc, timeout)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


def _read_line(proc, timeout):
    """One line of proc's stdout within `timeout` seconds, else None."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return None
    return proc.stdout.readline()


def url_for(addr, port=80, path='/'):
    return 'http://%s:%d%s' % ('[%s]' % addr if ':' in addr else addr, port, path)


class Server:
    """An agent server in a host; `.stop()` ends it. Use start_server() to make one."""

    def __init__(self, host, kind, port, name, proc):
        self.host, self.kind, self.port, self.name, self.proc = host, kind, port, name, proc

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        stop_process(self.proc)

    def __repr__(self):
        return '<Server %s %s:%d pid=%d>' % (self.kind, self.host, self.port, self.proc.pid)


def start_server(host, kind, port, name=None, timeout=10.0, lifetime=900):
    """Start an 'http', 'tcp', 'udp' or 'sctp' agent server on `host`; wait until it is
    bound."""
    name = name or str(host)
    if kind == 'sctp':
        proc = agent_popen(host, 'server', '--port', port, '--name', name, '--lifetime',
                           lifetime, agent=SCTP_AGENT)
    else:
        proc = agent_popen(host, '%s-server' % kind, '--port', port, '--name', name,
                           '--lifetime', lifetime)
    line = _read_line(proc, timeout)
    try:
        ready = bool(line) and json.loads(line).get('ready') is True
    except (ValueError, AttributeError):
        ready = False
    if not ready:
        exited = proc.poll()
        stop_process(proc)
        err = (proc.stderr.read() if proc.stderr else '').strip()
        if line:
            seen = 'it printed %r' % line.strip()
        elif exited is not None:
            seen = 'it exited with %s' % exited
        else:
            seen = 'it printed nothing in %gs' % timeout
        raise RuntimeError('%s server on %s:%d did not start: waited %gs for its '
                           '{"ready": true} line (it prints that once bound); %s; its '
                           'stderr: %s' % (kind, host, port, timeout, seen, err or '(empty)'))
    return Server(host, kind, port, name, proc)


def start_http_server(host, port=80, name=None):
    return start_server(host, 'http', port, name)


def start_tcp_server(host, port=5000, name=None):
    return start_server(host, 'tcp', port, name)


def start_udp_server(host, port=5001, name=None):
    return start_server(host, 'udp', port, name)


def start_sctp_server(host, port=38412, name=None):
    """sctp_agent.py's server: INIT -> INIT ACK, DATA -> DATA, from crafted packets."""
    return start_server(host, 'sctp', port, name)


class ClientRun:
    """A client agent running in a host; `.result()` waits (bounded) for its JSON lines."""

    def __init__(self, host, proc, timeout):
        self.host, self.proc = host, proc
        self.deadline = time.monotonic() + timeout

    def result(self):
        """{'done': True, 'ok': ..., 'replies': [...], ...}; a timeout kills the client."""
        remaining = max(0.1, self.deadline - time.monotonic())
        try:
            out, err = self.proc.communicate(timeout=remaining)
            timed_out = False
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            out, err = self.proc.communicate()
            timed_out = True
        replies, summary = [], None
        for line in out.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get('done'):
                summary = obj
            else:
                replies.append(obj)
        if summary is None:
            summary = {'done': True, 'ok': False,
                       'error': 'client timed out' if timed_out else
                       'client exited %s: %s' % (self.proc.returncode, err.strip())}
        summary['replies'] = replies
        return summary


def http_get(host, url, timeout=3.0):
    """GET `url` from inside `host`. Returns {'ok', 'status', 'body' (the server's JSON:
    name, peer, peer_port, path), 'error'}."""
    proc = agent_popen(host, 'http-get', url, '--timeout', timeout)
    result = ClientRun(host, proc, timeout + 5).result()
    result.pop('replies', None)
    return result


def start_tcp_session(host, addr, port, count=5, interval=1.0, timeout=2.0, src_port=0):
    """Open one TCP connection from `host` and send a line every `interval` seconds,
    `count` times, in the background. `.result()['replies']` lists who answered each."""
    proc = agent_popen(host, 'tcp-session', addr, port, '--count', count, '--interval',
                       interval, '--timeout', timeout, '--src-port', src_port)
    return ClientRun(host, proc, count * (interval + timeout) + timeout + 5)


def tcp_session(host, addr, port, count=5, interval=1.0, timeout=2.0, src_port=0):
    return start_tcp_session(host, addr, port, count, interval, timeout, src_port).result()


def start_udp_requests(host, addr, port, count=1, interval=0.0, timeout=2.0, src_port=0,
                       payload='ping'):
    proc = agent_popen(host, 'udp-request', addr, port, '--count', count, '--interval',
                       interval, '--timeout', timeout, '--src-port', src_port,
                       '--payload', payload)
    return ClientRun(host, proc, count * (interval + timeout) + 5)


def udp_request(host, addr, port, count=1, interval=0.0, timeout=2.0, src_port=0,
                payload='ping'):
    """Send `count` datagrams from `host` (one source port), wait for each answer.
    Replies carry the server's name, the peer it saw, and 'from' (who answered, as the
    client saw it: the VIP when SNAT works)."""
    return start_udp_requests(host, addr, port, count, interval, timeout, src_port,
                              payload).result()


def sctp_request(host, addr, port, src_port, count=3, timeout=2.0):
    """An SCTP association from `host` (sctp_agent.py): INIT, `count` DATA chunks each
    answered, ABORT. Replies carry the server's name, the peer it saw and 'from'."""
    proc = agent_popen(host, 'request', addr, port, '--src-port', src_port, '--count', count,
                       '--timeout', timeout, agent=SCTP_AGENT)
    return ClientRun(host, proc, timeout * (count + 1) + 10).result()


def start_udp_flood(host, addr, port, rate=10000, seconds=3.0, first_port=10000):
    """From `host`, one UDP datagram per new source port to addr:port, `rate` a second for
    `seconds`, in the background. `.result()` says how many were sent."""
    proc = agent_popen(host, 'udp-flood', addr, port, '--rate', rate, '--seconds', seconds,
                       '--first-port', first_port)
    return ClientRun(host, proc, seconds + 10)


def start_tcp_connects(host, addr, port, seconds=10.0, rate=0.0, timeout=2.0):
    """From `host`, a new TCP connection per request to addr:port for `seconds`, in
    the background. `.result()`: {'answered', 'failed', 'errors', 'names', 'seconds'}."""
    proc = agent_popen(host, 'tcp-connects', addr, port, '--seconds', seconds, '--rate', rate,
                       '--timeout', timeout)
    return ClientRun(host, proc, seconds + timeout + 10)


def ping(host, addr, count=1, timeout=2):
    """True if `addr` answers `count` pings from `host` (IPv6 when addr has a ':')."""
    cmd = ['ping', '-6' if ':' in addr else '-4', '-n', '-q', '-c', str(count),
           '-W', str(int(max(1, timeout))), '-w', str(int(count * timeout + 1)), addr]
    proc = host.popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT, universal_newlines=True)
    try:
        proc.communicate(timeout=count * timeout + 5)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        proc.communicate()
    return proc.returncode == 0
