"""kp_app's state file: the configuration kept across restarts, restored through the same
checked calls as REST, and a broken file refused at start with the field and the reason."""
import json
import os
import subprocess
import sys

import pytest

from kp_app import state_file
from kp_app.errors import InvalidInput
from kp_app.kubeproxy import KubeProxy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RYU_MANAGER = os.path.join(os.path.dirname(sys.executable), "ryu-manager")


def configured() -> KubeProxy:
    kp = KubeProxy(lambda dpid, msgs: None)
    kp.set_conf(buckets=2048, timeout=30, node_ip="10.0.0.1/24", node_ip6="fd00::1/64")
    kp.set_conf(node_ip="10.0.2.1/24", dpid=2)
    kp.set_interface("nat4", "s1-eth3")
    kp.add_vip("10.96.0.10/32", port=80, target_port=8080, node_port=30080, protocol="tcp",
               external_ips=["192.0.2.10"], affinity_timeout=600, source_ranges=["10.0.0.0/8"])
    kp.add_pods("10.96.0.10/32", 80, ["10.0.0.101", "10.0.0.102", "10.0.0.103"])
    kp.del_pods("10.96.0.10/32", 80, ["10.0.0.103"])      # draining: not kept
    kp.add_vip("fd00:96::10/128", port=53, protocol="any", new_len=2048)
    kp.model.services.add("shop/web")
    kp.switch_described(3, b"s3 kp-node ipv4=10.0.3.1/24")    # announced: not kept
    return kp


def test_what_is_restored_is_what_was_configured(tmp_path):
    before = configured()
    path = str(tmp_path / "state.json")
    state_file.save(path, state_file.dump(before))
    after = KubeProxy(lambda dpid, msgs: None)
    state_file.restore(after, state_file.load(path))
    assert after.conf()["nodes"] == {"2": before.conf()["nodes"]["2"]}
    assert {k: v for k, v in after.conf().items() if k != "nodes"} == \
        {k: v for k, v in before.conf().items() if k != "nodes"}
    assert after.interfaces() == before.interfaces()
    assert after.model.services == {"shop/web"}

    def config(kp):
        return [{k: v for k, v in vip.items() if k not in ("counters", "pods")}
                | {"pods": [p["address"] for p in vip["pods"] if p["state"] == "active"]}
                for vip in kp.vips()]
    assert config(after) == config(before)
    assert [p["address"] for p in after.vips()[0]["pods"]] == ["10.0.0.101", "10.0.0.102"]
    assert not [p for p in os.listdir(tmp_path) if p != "state.json"]   # no scratch left


@pytest.mark.parametrize("data,field", [
    ({"version": 2}, "version"),
    ([], "version"),
    ({"version": 1, "conf": {"buckets": 1000}}, "buckets"),
    ({"version": 1, "vips": [{"prefix": "10.96.0.300/32", "port": 80}]}, "prefix"),
    ({"version": 1, "vips": [{"prefix": "10.96.0.10/32", "port": 80, "colour": "red"}]},
     "vips"),
])
def test_a_bad_state_is_refused(data, field):
    with pytest.raises(InvalidInput) as error:
        state_file.restore(KubeProxy(lambda dpid, msgs: None), data)
    assert error.value.field == field


def test_ryu_manager_refuses_to_start_on_a_broken_state_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 1, "vips": [{"prefix": "10.96.0.10/32",
                                                        "port": 70000}]}))
    result = subprocess.run([RYU_MANAGER, "kp_app", "--kp-state-file", str(path),
                             "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", "0",
                             "--wsapi-host", "127.0.0.1", "--wsapi-port", "0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"kp_app: state file {path}: port: " in result.stderr + result.stdout
