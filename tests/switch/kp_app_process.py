"""A real `ryu-manager kp_app` for the channel tests: its OpenFlow, REST, health and
metrics listeners on free loopback ports, stopped by its own PID."""
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

from of_harness import VENV_BIN, free_port


class KpApp:
    def __init__(self, extra=()):
        self.of_port, self.rest_port = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.rest_port
        self.log_path = "/tmp/kp-app-test-%d-%d.log" % (os.getpid(), self.of_port)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(VENV_BIN, "ryu-manager"), "--ofp-tcp-listen-port", str(self.of_port),
             "--wsapi-port", str(self.rest_port),
             "--healthz-bind-address", "127.0.0.1:%d" % free_port(),
             "--metrics-bind-address", "127.0.0.1:%d" % free_port(), *extra, "kp_app"],
            stdout=subprocess.DEVNULL, stderr=self._log, text=True)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def target(self):
        return "tcp:127.0.0.1:%d" % self.of_port

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=10) as r:
                payload, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            payload, status = e.read(), e.code
        text = payload.decode()
        try:
            return status, json.loads(text) if text.strip() else None
        except ValueError:
            return status, text

    def get(self, path):
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def wait(self, what, predicate, timeout=30.0):
        """Poll predicate() (which may raise OSError while kp_app starts) until true."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("ryu-manager exited: " + self.log()[-3000:])
            try:
                last = predicate()
                if last:
                    return last
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("timed out waiting for %s (last: %r)\n%s"
                             % (what, last, self.log()[-3000:]))

    def switch_programmed(self, dpid):
        return self.wait("switch %d programmed" % dpid,
                         lambda: dpid in self.get("/v1/show")["switches"])

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
