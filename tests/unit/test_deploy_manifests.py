"""deploy/: the manifests that run kp as kube-proxy runs, checked with the official
Kubernetes client's models (no cluster can run them here).

Each object is deserialized by kubernetes.ApiClient into its model (V1DaemonSet, ...),
which checks types and required fields; unknown fields, which the client drops silently,
are refused by walking each object against its model's attribute map. Then what kp needs
of them: the RBAC of a kube-proxy, one kp_app and one kp-switch per node on the host's
network, and a ConfigMap whose kp.yaml passes kp's own configuration validator."""
import glob
import inspect
import json
import os
import re

import pytest
import yaml

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402

from kp_app import config_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = {("v1", "ServiceAccount"): "V1ServiceAccount", ("v1", "ConfigMap"): "V1ConfigMap",
          ("apps/v1", "DaemonSet"): "V1DaemonSet",
          ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
          ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding"}
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float),
              "bytes": (str, bytes)}


def unknown_fields(value, type_name: str, path: str = "") -> list:
    """The paths in `value` that the model `type_name` has no field for (or of the wrong
    JSON type where the model says a primitive)."""
    if type_name in ("object", "datetime") or value is None:
        return []
    match = re.fullmatch(r"[lL]ist\[(.+)\]", type_name)
    if match:
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [p for i, v in enumerate(value)
                for p in unknown_fields(v, match[1], f"{path}[{i}]")]
    # the client's type names: dict(str, X) before version 35, Dict[str, X] since
    match = re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name)
    if match:
        if not isinstance(value, dict):
            return [f"{path}: not a mapping"]
        item_type = match[1] or match[2]
        return [p for k, v in value.items() for p in unknown_fields(v, item_type, f"{path}.{k}")]
    if type_name in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[type_name]) and not (
            type_name != "bool" and isinstance(value, bool))
        return [] if ok else [f"{path}: not {type_name}"]
    model = getattr(client, type_name)
    json_to_attr = {j: a for a, j in model.attribute_map.items()}
    if not isinstance(value, dict):
        return [f"{path}: not an object"]
    found = []
    for key, item in value.items():
        attr = json_to_attr.get(key)
        if attr is None:
            found.append(f"{path}.{key}".lstrip("."))
        else:
            found += unknown_fields(item, model.openapi_types[attr], f"{path}.{key}")
    return found


class _Response:
    """What older clients' deserialize takes: a response with the JSON in .data."""

    def __init__(self, obj) -> None:
        self.data = json.dumps(obj)


def deserialize(doc: dict, name: str):
    api = client.ApiClient()
    if "content_type" in inspect.signature(api.deserialize).parameters:
        return api.deserialize(json.dumps(doc), name, "application/json")
    return api.deserialize(_Response(doc), name)


def manifests() -> list:
    docs = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "*.yaml"))):
        with open(path) as f:
            docs += [(os.path.basename(path), d) for d in yaml.safe_load_all(f) if d]
    return docs


def load(doc):
    name = MODELS[(doc["apiVersion"], doc["kind"])]
    return deserialize(doc, name), name


def by_kind() -> dict:
    return {doc["kind"]: load(doc)[0] for _, doc in manifests()}


def test_every_manifest_is_a_valid_object_with_no_unknown_field():
    docs = manifests()
    assert {d["kind"] for _, d in docs} == {k for _, k in MODELS}
    for path, doc in docs:
        model, name = load(doc)
        assert type(model).__name__ == name
        assert unknown_fields(doc, name) == [], (path, doc["kind"])


def test_the_unknown_field_check_can_fail():
    doc = dict(next(d for _, d in manifests() if d["kind"] == "DaemonSet"))
    doc["spec"] = dict(doc["spec"], hostNetwrk=True)
    assert unknown_fields(doc, "V1DaemonSet") == ["spec.hostNetwrk"]
    doc["spec"]["template"] = {"spec": {"containers": [{"image": "kp:dev"}]}}
    with pytest.raises(ValueError):     # the model's own check: a container needs a name
        load(doc)


def test_rbac_lets_kp_list_and_watch_what_kube_proxy_reads():
    objs = by_kind()
    granted = {(group, resource, verb) for rule in objs["ClusterRole"].rules
               for group in rule.api_groups for resource in rule.resources
               for verb in rule.verbs}
    for group, resource in (("", "services"), ("discovery.k8s.io", "endpointslices"),
                            ("", "nodes")):
        assert {(group, resource, "list"), (group, resource, "watch")} <= granted
    assert not any(verb in ("delete", "deletecollection") for _, _, verb in granted)
    binding, account = objs["ClusterRoleBinding"], objs["ServiceAccount"]
    assert binding.role_ref.name == objs["ClusterRole"].metadata.name
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
        ("ServiceAccount", account.metadata.name, account.metadata.namespace)]


def test_the_daemonset_runs_kp_app_and_kp_switch_on_each_nodes_network():
    objs = by_kind()
    ds, config_map = objs["DaemonSet"], objs["ConfigMap"]
    pod = ds.spec.template.spec
    assert ds.spec.selector.match_labels.items() <= ds.spec.template.metadata.labels.items()
    assert pod.host_network is True
    assert pod.service_account_name == objs["ServiceAccount"].metadata.name
    assert ds.metadata.namespace == config_map.metadata.namespace
    app, switch = (next(c for c in pod.containers if c.name == n)
                   for n in ("kp-app", "kp-switch"))
    assert app.command[:2] == ["ryu-manager", "kp_app"]
    config_path = app.command[app.command.index("--kp-config") + 1]
    # the file is the ConfigMap's kp.yaml, mounted where the command reads it
    volume = next(v for v in pod.volumes if v.config_map is not None)
    assert volume.config_map.name == config_map.metadata.name
    mount = next(m for m in app.volume_mounts if m.name == volume.name)
    item = next(i for i in volume.config_map.items if i.key == "kp.yaml")
    assert config_path == os.path.join(mount.mount_path, item.path)
    assert "kp-switch" in " ".join(switch.command) and switch.security_context.privileged
    # the probes ask kp_app's health listener, where the file puts it
    config = config_file.parse(config_map.data["kp.yaml"])
    host, port = config_file.parse_bind_address(config.options["healthz_bind_address"], "",
                                                config_file.DEFAULT_HEALTHZ_PORT)
    for probe, path in ((app.liveness_probe, "/livez"), (app.readiness_probe, "/healthz")):
        assert (probe.http_get.path, probe.http_get.port) == (path, port)
    env = {e.name: e.value_from.config_map_key_ref for e in switch.env}
    ref = env["KP_SWITCH_INTERFACES"]
    assert ref.name == config_map.metadata.name and ref.key in config_map.data


def test_the_configmaps_kp_yaml_passes_the_validator():
    config = config_file.parse(by_kind()["ConfigMap"].data["kp.yaml"])
    assert config.options["kp_mode"] == "lb" and config.sync_period == 30.0
