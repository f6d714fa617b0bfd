"""The controller as a subprocess: ``ryu-manager <app>`` from the venv, stopped by PID."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from .procs import stop_process
from .topo import tcp_connections

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port(host='127.0.0.1'):
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_range(count, host='127.0.0.1', start=None):
    """`count` consecutive free ports (for Mininet's listenPort, which counts up)."""
    base = start or 20000 + (os.getpid() * 7) % 20000
    for candidate in range(base, 60000, count):
        ok = True
        for port in range(candidate, candidate + count):
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return candidate
    raise RuntimeError('no %d consecutive free ports' % count)


def ryu_manager():
    """ryu-manager next to this interpreter (the venv), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), 'ryu-manager')
    if os.access(here, os.X_OK):
        return here
    found = shutil.which('ryu-manager')
    if not found:
        raise RuntimeError('ryu-manager not found; run ./run setup')
    return found


class ControllerProcess:
    """``ryu-manager <apps>`` listening for OpenFlow on 127.0.0.1:of_port and (rest=True)
    for REST on 127.0.0.1:wsapi_port. Ports default to free ones; pass 6653/8080 for the
    demo. Ready when the process listens on both ports (rest=False: on the OF port only;
    Ryu only opens the wsapi port when an app uses WSGI). listen_host=None leaves both
    listen addresses to the app's defaults (kp_app's: loopback) and `extra_args`.
    kp_app's health and metrics listeners go to healthz_port and metrics_port (free
    ones by default) unless operate_ports=False."""

    def __init__(self, app='kp_app', of_port=None, wsapi_port=None, rest=True,
                 log_file=None, extra_args=(), env=None, listen_host='127.0.0.1',
                 healthz_port=None, metrics_port=None, operate_ports=True):
        self.apps = [app] if isinstance(app, str) else list(app)
        self.of_port = of_port or free_port()
        self.wsapi_port = wsapi_port or free_port()
        # kp_app's health and metrics listeners: free ports too, so that runs side by
        # side do not fight over kube-proxy's 10256 and 10249
        self.healthz_port = healthz_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.operate_ports = operate_ports     # False: kp_app's own (or its file's)
        self.rest = rest
        self.own_log = log_file is None
        if log_file is None:
            fd, log_file = tempfile.mkstemp(prefix='kp-ryu-', suffix='.log')
            os.close(fd)
        self.log_file = log_file
        self.extra_args = list(extra_args)
        self.env = env
        self.listen_host = listen_host
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def command(self):
        hosts = ['--ofp-listen-host', self.listen_host, '--wsapi-host', self.listen_host] \
            if self.listen_host is not None else []
        if 'kp_app' in self.apps and self.operate_ports:
            hosts += ['--healthz-bind-address', '127.0.0.1:%d' % self.healthz_port,
                      '--metrics-bind-address', '127.0.0.1:%d' % self.metrics_port]
        return ([ryu_manager()] + self.apps + hosts +
                ['--ofp-tcp-listen-port', str(self.of_port),
                 '--wsapi-port', str(self.wsapi_port),
                 '--log-file', self.log_file] + self.extra_args)

    def url(self, path='/'):
        return 'http://127.0.0.1:%d%s' % (self.wsapi_port, path)

    def metrics_url(self):
        return 'http://127.0.0.1:%d/metrics' % self.metrics_port

    def start(self, timeout=30):
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault('PYTHONWARNINGS', 'ignore::DeprecationWarning')
        with open(self.log_file, 'ab') as out:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out, cwd=REPO, env=env,
                                         start_new_session=True)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def listening(self):
        return {local for local, _ in tcp_connections(self.proc.pid, state='0A')}

    def ready(self):
        want = {self.of_port} | ({self.wsapi_port} if self.rest else set())
        return want <= self.listening()

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('ryu-manager %s exited with %s:\n%s'
                                   % (' '.join(self.apps), self.proc.returncode,
                                      self.log_tail()))
            if self.ready():
                return
            time.sleep(0.1)
        want = ['%d (OpenFlow)' % self.of_port] + (['%d (REST)' % self.wsapi_port]
                                                   if self.rest else [])
        raise RuntimeError('ryu-manager %s did not start: waited %ss for it to listen on %s;'
                           ' it listens on %s; its log ends:\n%s'
                           % (' '.join(self.apps), timeout, ' and '.join(want),
                              sorted(self.listening()) or 'nothing', self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=40):
        try:
            with open(self.log_file, errors='replace') as f:
                return ''.join(f.readlines()[-lines:])
        except OSError:
            return ''

    def stop(self, timeout=5.0):
        if self.proc is not None:
            stop_process(self.proc, timeout)

    def remove_log(self):
        """Delete the log file if it was a temporary one made by this object."""
        if self.own_log:
            try:
                os.unlink(self.log_file)
            except OSError:
                pass

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()
