"""A real `ryu-manager kp_app` for the channel tests (kp_lab's ControllerProcess: its
OpenFlow, REST, health and metrics listeners on free loopback ports, stopped by its own
PID), with the calls these tests make of it."""
import json
import time
import urllib.error
import urllib.request

from kp_lab.controller import ControllerProcess


class KpApp:
    def __init__(self, extra=()):
        self.ctl = ControllerProcess(extra_args=extra).start()
        self.proc = self.ctl.proc
        self.of_port, self.rest_port = self.ctl.of_port, self.ctl.wsapi_port
        self.url = self.ctl.url("")
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
        return self.ctl.log_tail(100000)

    def stop(self):
        self.ctl.stop()
        self.ctl.remove_log()
