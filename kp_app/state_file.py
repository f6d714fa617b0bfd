"""kp_app's configuration kept across restarts, in a JSON file a user can read.

The model is the single source of truth and the switches' programming is a function of
it, so a controller that comes back with the same configuration gives every switch the
same flows, and the sessions a switch keeps itself (Open vSwitch's conntrack) go on. What
is kept is what was configured: conf and node addresses, SNAT interfaces, VIPs with their
active pods, and which Services `ku apply` owns. Not kept: sessions (they belong to the
switches), counters, draining pods (their sessions end with the restart), node addresses
a switch announced (it announces them again when it connects) or a watched cluster's
Node gave (the watch gives them again).

The file is written whole to a temporary file and renamed over the old one after each
change, so a crash never leaves half a file; restoring goes through the same checked
service calls as REST, so a file edited by hand into nonsense is refused with the field
and the reason, and the controller does not start on it.
"""
import json
import os
import tempfile
from typing import Any, Dict

from kp_app.errors import InvalidInput

VERSION = 1
VIP_FIELDS = {"prefix", "port", "target_port", "node_port", "protocol", "nat", "new_len",
              "external_ips", "service", "affinity_timeout", "external_policy",
              "internal_policy", "source_ranges", "pods"}
# The service methods that change the configuration (each is followed by a save).
CHANGES = ("set_conf", "add_vip", "del_vip", "add_pods", "del_pods", "apply_kubernetes",
           "delete_kubernetes", "set_interface")


def dump(kubeproxy) -> Dict[str, Any]:
    """The configuration as plain data."""
    conf = kubeproxy.conf()
    vips = []
    for vip in kubeproxy.vips():
        vips.append({
            "prefix": vip["prefix"], "port": vip["port"], "target_port": vip["target_port"],
            "node_port": vip["node_port"], "protocol": vip["protocol"], "nat": vip["nat"],
            "new_len": vip["new_len"], "external_ips": vip["external_ips"],
            "service": vip["service"], "affinity_timeout": vip["affinity_timeout"],
            "external_policy": vip["external_policy"],
            "internal_policy": vip["internal_policy"],
            "source_ranges": vip["source_ranges"],
            "pods": [p["address"] for p in vip["pods"] if p["state"] == "active"]})
    return {"version": VERSION,
            "conf": {"buckets": conf["buckets"], "timeout": conf["timeout"],
                     "udp_timeout": conf["udp_timeout"],
                     "tcp_close_wait": conf["tcp_close_wait"],
                     **_configured(kubeproxy.model.default_node.to_dict_with_source())},
            "nodes": {dpid: kept for dpid, kept in (
                (dpid, _configured(addresses)) for dpid, addresses in conf["nodes"].items())
                if any(kept.values())},
            "interfaces": kubeproxy.interfaces(),
            "services": sorted(kubeproxy.model.services),
            "health_check_ports": dict(sorted(kubeproxy.model.health_check_ports.items())),
            "vips": vips}


def _configured(addresses: dict) -> dict:
    """A node's addresses set by hand: what a switch announces it announces again."""
    announced = addresses.get("announced", [])
    return {name: None if name in announced else _interface(addresses, name[len("node_ip"):])
            for name in ("node_ip", "node_ip6")}


def _interface(addresses: dict, family: str):
    """"10.0.1.1/24" from a conf dict's node_ip and node_subnet (None if unset)."""
    address = addresses.get("node_ip" + family)
    subnet = addresses.get("node_subnet" + family)
    if address is None:
        return None
    return f"{address}/{subnet.split('/')[1]}" if subnet else address


def restore(kubeproxy, data: Any) -> None:
    """Configure an empty controller from `dump`'s data (InvalidInput if it is not)."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise InvalidInput(f"not a kp_app state file of version {VERSION}", "version")
    with kubeproxy.syncs.syncing():     # the whole restore is one sync
        _restore(kubeproxy, data)


def _restore(kubeproxy, data: dict) -> None:
    conf = data.get("conf") or {}
    kubeproxy.set_conf(conf.get("buckets"), conf.get("timeout"), conf.get("node_ip"),
                       conf.get("node_ip6"), udp_timeout=conf.get("udp_timeout"),
                       tcp_close_wait=conf.get("tcp_close_wait"))
    for dpid, addresses in (data.get("nodes") or {}).items():
        kubeproxy.set_conf(node_ip=addresses.get("node_ip"),
                           node_ip6=addresses.get("node_ip6"), dpid=dpid)
    for nat, names in (data.get("interfaces") or {}).items():
        for name in names:
            kubeproxy.set_interface(nat, name)
    for vip in data.get("vips") or []:
        if not isinstance(vip, dict):
            raise InvalidInput(f"{vip!r} is not a VIP", "vips")
        unknown = sorted(set(vip) - VIP_FIELDS)
        if unknown or "prefix" not in vip:
            raise InvalidInput(f"unknown fields {unknown}" if unknown else "no prefix", "vips")
        spec = dict(vip)
        pods = spec.pop("pods", [])
        kubeproxy.add_vip(**spec)
        if pods:
            kubeproxy.add_pods(spec["prefix"], spec["port"], pods)
    kubeproxy.model.services.update(data.get("services") or [])
    ports = data.get("health_check_ports") or {}
    if not isinstance(ports, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            and 0 < v < 65536 for k, v in ports.items()):
        raise InvalidInput("expected Service names and port numbers", "health_check_ports")
    kubeproxy.model.health_check_ports.update(ports)


def load(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save(path: str, data: Dict[str, Any]) -> None:
    """Atomically: the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, scratch = tempfile.mkstemp(prefix=".kp-state-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(scratch, path)
    except BaseException:
        if os.path.exists(scratch):
            os.unlink(scratch)
        raise
