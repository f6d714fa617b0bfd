"""`ryu-manager kp_app --kp-config FILE`, really started (kp_lab.ControllerProcess, stopped
by its PID): the file's settings take effect, the command line wins over it, a bad file
stops the start with the field and the reason and changes nothing, and the health,
metrics and health check node port listeners answer over HTTP."""
import json
import subprocess
import time
import urllib.error
import urllib.request

import kp_lab
from kp_lab.controller import free_port, ryu_manager

from test_operate import families, load_balancer, value
from test_listeners import listening

HEAD = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(url: str, body=None, method: str = "GET"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with OPENER.open(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while port not in {p for p in _ports()} and time.monotonic() < deadline:
        time.sleep(0.05)


def _ports():
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "0A":
                yield int(fields[1].split(":")[1], 16)


def write(tmp_path, body: str) -> str:
    path = tmp_path / "kp.yaml"
    path.write_text(HEAD + body)
    return str(path)


def test_the_file_configures_kp_app_and_the_command_line_wins(tmp_path):
    healthz, metrics, file_metrics = free_port(), free_port(), free_port()
    file_api = free_port()
    config = write(tmp_path, f"""
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{file_metrics}
syncPeriod: 15s
conntrack:
  tcpEstablishedTimeout: 2h
kp:
  sessionTableBuckets: 2048
  apiBindAddress: 127.0.0.1:{file_api}
""")
    # --wsapi-port (ControllerProcess gives it) and --metrics-bind-address override the file
    with kp_lab.ControllerProcess(operate_ports=False, extra_args=[
            "--kp-config", config, "--metrics-bind-address", f"127.0.0.1:{metrics}"]) as ctl:
        status, body = call(ctl.url("/v1/conf"))
        assert status == 200 and (json.loads(body)["buckets"], json.loads(body)["timeout"]) \
            == (2048, 7200)
        wait_listening(metrics)
        assert listening(healthz) == {"127.0.0.1"} and listening(metrics) == {"127.0.0.1"}
        assert listening(file_metrics) == set() and listening(file_api) == set()
        status, body = call(f"http://127.0.0.1:{healthz}/healthz")
        assert status == 200 and json.loads(body)["nodeEligible"] is True
        assert call(f"http://127.0.0.1:{healthz}/livez")[0] == 200
        status, body = call(f"http://127.0.0.1:{metrics}/metrics")
        found = families(body.decode())
        # the file's conf was one sync
        assert value(found["kubeproxy_sync_proxy_rules_duration_seconds"],
                     "kubeproxy_sync_proxy_rules_duration_seconds_count") == 1
        assert value(found["kubeproxy_proxy_healthz"], "kubeproxy_proxy_healthz_total",
                     code="200") == 1


def test_a_bad_file_stops_the_start_with_the_field_and_changes_nothing(tmp_path):
    state = tmp_path / "state.json"
    state.write_text('{"version": 1, "vips": []}\n')
    before = state.read_bytes()
    for body, expected in (
            ("conntrack:\n  tcpEstablishedTimeout: 3d\n",
             "conntrack.tcpEstablishedTimeout: '3d' is not a duration"),
            (f"kp:\n  stateFile: {state}\n  sessionTableBuckets: 1000\n",
             "kp.sessionTableBuckets: 1000 is not a power of 2"),
            ("bogus: true\n", "bogus: unknown field")):
        config = write(tmp_path, body)
        out = start_and_stop(config, "--kp-state-file", str(state))
        assert out.returncode != 0, out.stderr[-2000:]
        assert f"configuration file {config}: {expected}" in out.stderr, out.stderr[-2000:]
        assert state.read_bytes() == before


def start_and_stop(config: str, *extra: str, seconds: float = 20) -> subprocess.CompletedProcess:
    """ryu-manager kp_app --kp-config `config`, stopped (by its PID) if still running
    after `seconds`."""
    with subprocess.Popen([ryu_manager(), "kp_app", "--kp-config", config, *extra,
                           "--ofp-tcp-listen-port", str(free_port()),
                           "--wsapi-port", str(free_port()),
                           "--healthz-bind-address", "", "--metrics-bind-address", ""],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=kp_lab.controller.REPO, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.terminate()
            out, err = proc.communicate(timeout=10)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_the_files_kubeconfig_goes_to_the_watchs_option_or_is_refused(tmp_path):
    """clientConnection.kubeconfig is --kubeconfig's (the Kubernetes watch's option): taken
    where that option exists, else refused with the reason."""
    has_watch = "--kubeconfig" in subprocess.run(
        [ryu_manager(), "--help"], capture_output=True, text=True, timeout=60,
        cwd=kp_lab.controller.REPO).stdout
    config = write(tmp_path, "clientConnection:\n  kubeconfig: /nonexistent/kubeconfig\n")
    out = start_and_stop(config, seconds=5)
    refusal = f"configuration file {config}: clientConnection.kubeconfig: this kp_app " \
              "has no Kubernetes watch (no --kubeconfig option)"
    if has_watch:
        assert refusal not in out.stderr, out.stderr[-2000:]
    else:
        assert out.returncode not in (0, None) and refusal in out.stderr, out.stderr[-2000:]


def test_a_health_check_node_port_answers_for_its_service(tmp_path):
    healthz, check = free_port(), free_port()
    config = write(tmp_path, f"healthzBindAddress: 127.0.0.1:{healthz}\n"
                             "metricsBindAddress: ''\n")
    with kp_lab.ControllerProcess(operate_ports=False,
                                  extra_args=["--kp-config", config]) as ctl:
        assert call(ctl.url("/v1/conf"), {"node_ip": "10.0.0.1/24"}, "PUT")[0] == 200
        docs = load_balancer(["10.0.0.101", "10.0.0.102", "10.0.1.9"], health_port=check)
        status, body = call(ctl.url("/v1/kubernetes/apply"), {"kind": "List", "items": docs}, "POST")
        assert status == 200, body
        status, body = call(f"http://127.0.0.1:{check}/")
        assert status == 200 and json.loads(body) == {
            "service": {"namespace": "shop", "name": "lb"}, "localEndpoints": 2,
            "serviceProxyHealthy": True}
        not_ready = load_balancer(["10.0.0.101", "10.0.0.102"], health_port=check,
                                  ready=False)
        assert call(ctl.url("/v1/kubernetes/apply"), {"kind": "List", "items": not_ready}, "POST")[0] == 200
        status, body = call(f"http://127.0.0.1:{check}/")
        assert status == 503 and json.loads(body)["localEndpoints"] == 0
        assert call(ctl.url("/v1/kubernetes/delete"), {"kind": "List", "items": docs}, "POST")[0] == 200
        assert listening(check) == set()        # the Service went, its listener too
