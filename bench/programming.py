"""How fast kp_app programs kp-switch's own sessions ("lb" mode), and at what memory:

- 10,000 Services of 10 endpoints each, applied through the REST API in batches of
  1,000 (a Kubernetes List of Services and EndpointSlices, as `ku apply -f` sends it):
  the time from the first request to the switch holding all 10,000 VIP tables, as the
  switch itself reports them (KP_LB_STATS over a management connection of its own);
- then one Service of 1,000 endpoints: one endpoint added or removed at a time, the time
  until the switch holds the VIP's new table (p50 and p99 of 20 changes);
- the resident memory of kp_app and kp-switch before and after, per Service.

Run by bench/run.py (`./run bench`, or `--only-programming`); it passes the harness in.
"""
import json
import os
import socket
import struct
import time

from kp_proto import lb as kplb
from kp_proto.experimenter import KP_EXPERIMENTER_ID

SERVICES = 10_000
PODS_EACH = 10
BATCH = 1_000
BIG_PODS = 1_000
CHANGES = 20


def rss_bytes(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class SwitchChannel:
    """An OpenFlow 1.3 management connection to kp-switch's listening port, for kp's
    experimenter requests (it answers echo requests itself)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(struct.pack("!BBHI", 4, 0, 8, 1))             # hello
        self.buf = b""
        self.xid = 100

    def close(self) -> None:
        self.sock.close()

    def request(self, exp_type: int, data: bytes, timeout: float = 10.0) -> bytes:
        self.xid += 1
        xid = self.xid
        self.sock.sendall(struct.pack("!BBHIII", 4, 4, 16 + len(data), xid, KP_EXPERIMENTER_ID,
                                      exp_type) + data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(self.buf) >= 8:
                _, typ, length, mxid = struct.unpack("!BBHI", self.buf[:8])
                if len(self.buf) < length:
                    break
                msg, self.buf = self.buf[:length], self.buf[length:]
                if typ == 4 and mxid == xid:
                    return msg[16:]
                if typ == 1 and mxid == xid:
                    raise RuntimeError("kp-switch refused experimenter request %d" % exp_type)
                if typ == 2:
                    self.sock.sendall(struct.pack("!BBHI", 4, 3, length, mxid) + msg[8:])
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("kp-switch closed the management connection")
            self.buf += chunk
        raise RuntimeError("no reply from kp-switch")

    def vips(self) -> dict:
        """{VIP id: number of pods} of every VIP the switch holds (paged)."""
        out, first = {}, 0
        while True:
            data = self.request(kplb.KP_LB_STATS_REQUEST, kplb.encode_stats_request(first))
            _, records, next_id = kplb.decode_stats_reply(data)
            for r in records:
                out[r["vip_id"]] = len(r["pods"])
            if not next_id or not records:
                return out
            first = next_id


def _service(i: int, pods: int, base: str) -> list:
    name = "svc%d" % i
    ip = "10.%d.%d.%d" % (100 + i // 65536, (i // 256) % 256, i % 256)
    addresses = ["%s.%d.%d" % (base, (i * pods + j) // 256 % 256, (i * pods + j) % 256)
                 for j in range(pods)]
    return [{"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": name, "namespace": "bench"},
             "spec": {"clusterIP": ip, "ports": [{"port": 80, "targetPort": 8080,
                                                  "protocol": "TCP"}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": name + "-a", "namespace": "bench",
                          "labels": {"kubernetes.io/service-name": name}},
             "addressType": "IPv4",
             "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
             "ports": [{"port": 8080, "protocol": "TCP"}]}]


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


class ProgrammingBench:
    def __init__(self, log, http, procs, start_kp_switch, free_port, wait_listening, ryu_cmd,
                 link, tmp) -> None:
        self.log, self.http, self.procs = log, http, procs
        self.start_kp_switch, self.free_port, self.wait_listening = (start_kp_switch, free_port,
                                                                     wait_listening)
        self.ryu_cmd, self.link, self.tmp = ryu_cmd, link, tmp
        self.results = {}

    def run(self) -> dict:
        of_port, ws_port, sw_port = self.free_port(), self.free_port(), self.free_port()
        cmd, kw = self.ryu_cmd(of_port, ws_port, os.path.join(self.tmp, "ryu-programming.log"))
        ctl = self.procs.start(cmd, **kw)
        sw = ch = None
        try:
            self.wait_listening(of_port, ctl)
            self.wait_listening(ws_port, ctl)
            api = "http://127.0.0.1:%d/v1" % ws_port
            self.http("PUT", api + "/conf", {"node_ip": "10.0.0.1"})
            sw = self.start_kp_switch(self.procs, [self.link()], sw_port, 1024,
                                      os.path.join(self.tmp, "kp-switch-programming.log"),
                                      controller="tcp:127.0.0.1:%d" % of_port)
            ch = SwitchChannel(sw_port)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:      # connected, in lb mode
                show = self.http("GET", api + "/show")
                if show.get("modes", {}).get("1") == "lb":
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("kp-switch never connected in lb mode: %r" % show)
            mem0 = (rss_bytes(ctl.pid), rss_bytes(sw.pid))
            docs = [{"apiVersion": "v1", "kind": "List",
                     "items": [o for i in range(b, b + BATCH) for o in _service(i, PODS_EACH, "10.1")]}
                    for b in range(0, SERVICES, BATCH)]
            t0 = time.monotonic()
            for doc in docs:
                self.http("POST", api + "/kubernetes/apply", doc)
            t_applied = time.monotonic()
            held = {}
            while time.monotonic() < t0 + 300:
                held = ch.vips()
                if len(held) >= SERVICES:
                    break
                time.sleep(0.25)
            t_done = time.monotonic()
            mem1 = (rss_bytes(ctl.pid), rss_bytes(sw.pid))
            r = {"services": SERVICES, "pods_each": PODS_EACH, "held": len(held),
                 "apply_s": t_applied - t0, "in_switch_s": t_done - t0,
                 "controller_rss_mb": mem1[0] / 2**20, "switch_rss_mb": mem1[1] / 2**20,
                 "bytes_per_service": ((mem1[0] - mem0[0]) + (mem1[1] - mem0[1])) / SERVICES}
            self.log("  %d Services x %d pods: applied in %.1f s, all in kp-switch after "
                     "%.1f s (%d held)" % (SERVICES, PODS_EACH, r["apply_s"], r["in_switch_s"],
                                           len(held)))
            self.log("  memory beyond the empty start: kp_app +%.0f MB, kp-switch +%.0f MB "
                     "(%.0f bytes per Service)"
                     % ((mem1[0] - mem0[0]) / 2**20, (mem1[1] - mem0[1]) / 2**20,
                        r["bytes_per_service"]))
            r.update(self._pod_changes(api, ch))
            self.results = r
            return r
        finally:
            if ch is not None:
                ch.close()
            if sw is not None:
                self.procs.stop(sw)
            self.procs.stop(ctl)

    def _pod_changes(self, api, ch) -> dict:
        """One endpoint added to / removed from a Service of BIG_PODS (its EndpointSlice
        applied again): until the switch holds the VIP's new table."""
        doc = {"apiVersion": "v1", "kind": "List", "items": _service(SERVICES, BIG_PODS, "10.2")}
        self.http("POST", api + "/kubernetes/apply", doc)
        deadline = time.monotonic() + 60
        vip_id = None
        while time.monotonic() < deadline and vip_id is None:
            vip_id = next((v for v, n in ch.vips().items() if n == BIG_PODS), None)
            time.sleep(0.1)
        if vip_id is None:
            raise RuntimeError("the %d-pod Service never reached kp-switch" % BIG_PODS)
        bigger = {"apiVersion": "v1", "kind": "List", "items": _service(SERVICES, BIG_PODS, "10.2")}
        bigger["items"][1]["endpoints"].append({"addresses": ["10.3.0.1"],
                                                "conditions": {"ready": True}})
        waits, answers = [], []
        for i in range(CHANGES):
            adding = i % 2 == 0
            want = BIG_PODS + 1 if adding else BIG_PODS
            t0 = time.monotonic()
            self.http("POST", api + "/kubernetes/apply", bigger if adding else doc)
            answers.append(time.monotonic() - t0)
            while time.monotonic() < t0 + 10:
                data = ch.request(kplb.KP_LB_STATS_REQUEST, kplb.encode_stats_request(vip_id))
                _, records, _ = kplb.decode_stats_reply(data)
                if records and records[0]["vip_id"] == vip_id and len(records[0]["pods"]) == want:
                    break
                time.sleep(0.002)
            waits.append(time.monotonic() - t0)
        p50, p99 = percentile(waits, 50) * 1000, percentile(waits, 99) * 1000
        a50 = percentile(answers, 50) * 1000
        self.log("  one pod added to or removed from a %d-pod Service: in kp-switch after "
                 "p50 %.0f ms, p99 %.0f ms (%d changes; the apply itself answered after "
                 "p50 %.0f ms)" % (BIG_PODS, p50, p99, CHANGES, a50))
        return {"pod_change_p50_ms": p50, "pod_change_p99_ms": p99, "pod_changes": waits,
                "apply_answer_p50_ms": a50}


def summary_line(r: dict) -> str:
    return json.dumps({k: v for k, v in r.items() if k != "pod_changes"})
