import copy
import ipaddress

import pytest

from kp_app.errors import Conflict, InvalidInput, NotFound
from kp_app.kubeproxy import KubeProxy
from kp_app.maglev import MaglevTable, build_tables

ip = ipaddress.ip_address


@pytest.fixture
def kp():
    sent = []
    proxy = KubeProxy(lambda dpid, msgs: sent.append((dpid, msgs)), clock=lambda: 100.0)
    proxy.sent = sent
    return proxy


def snapshot(kp):
    return copy.deepcopy((kp.conf(), kp.vips(), kp.interfaces()))


@pytest.mark.parametrize("kwargs, field", [
    (dict(prefix="10.96.0.300/32", port=80), "prefix"),
    (dict(prefix="10.96.0.1/16", port=80), "prefix"),          # host bits set
    (dict(prefix="10.96.0.10/32", port=70000), "port"),
    (dict(prefix="10.96.0.10/32", port=-1), "port"),
    (dict(prefix="10.96.0.10/32", port="eighty"), "port"),
    (dict(prefix="10.96.0.10/32", port=80, target_port=0), "target_port"),
    (dict(prefix="10.96.0.10/32", port=0, target_port=8080), "target_port"),
    (dict(prefix="10.96.0.10/32", port=80, node_port=70000), "node_port"),
    (dict(prefix="10.96.0.10/32", port=80, protocol="quic"), "protocol"),
    (dict(prefix="10.96.0.10/32", port=80, nat="nat66"), "nat"),
    (dict(prefix="fd00:96::10/128", port=80, nat="nat44"), "nat"),
    (dict(prefix="10.96.0.10/32", port=80, new_len=1000), "new_len"),
    (dict(prefix="10.96.0.10/32", port=80, new_len=0), "new_len"),
    (dict(prefix="10.96.0.10/32", port=80, external_ips=["fd00::1"]), "external_ips"),
])
def test_bad_vip_is_refused_naming_the_field_and_changes_nothing(kp, kwargs, field):
    kp.add_vip("10.96.0.1/32", port=53)
    before = snapshot(kp)
    with pytest.raises(InvalidInput) as error:
        kp.add_vip(**kwargs)
    assert error.value.field == field and error.value.status == 400
    assert snapshot(kp) == before


def test_duplicate_vip_conflicts(kp):
    kp.add_vip("10.96.0.10/32", port=80, target_port=8080)
    with pytest.raises(Conflict):
        kp.add_vip("10.96.0.10/32", port=80, target_port=9090)
    kp.add_vip("10.96.0.10/32", port=443, target_port=8443)   # same address, other port
    assert len(kp.vips()) == 2


def test_node_port_is_unique_per_protocol(kp):
    kp.add_vip("10.96.0.10/32", port=80, node_port=30080, protocol="tcp")
    with pytest.raises(Conflict):
        kp.add_vip("10.96.0.11/32", port=80, node_port=30080)
    kp.add_vip("10.96.0.11/32", port=80, node_port=30080, protocol="udp")


def test_pods_are_all_or_nothing(kp):
    kp.add_vip("10.96.0.10/32", port=80, target_port=8080)
    before = snapshot(kp)
    for bad in (["10.0.0.101", "fd00::101"], ["10.0.0.101", "nonsense"],
                ["10.0.0.101", "10.0.0.101"], [], "10.0.0.101"):
        with pytest.raises(InvalidInput):
            kp.add_pods("10.96.0.10/32", 80, bad)
        assert snapshot(kp) == before
    kp.add_pods("10.96.0.10/32", 80, ["10.0.0.101"])
    with pytest.raises(Conflict):
        kp.add_pods("10.96.0.10/32", 80, ["10.0.0.102", "10.0.0.101"])
    assert [p["address"] for p in kp.vip("10.96.0.10/32")["pods"]] == ["10.0.0.101"]
    with pytest.raises(NotFound):
        kp.del_pods("10.96.0.10/32", 80, ["10.0.0.101", "10.0.0.109"])
    assert kp.vip("10.96.0.10/32")["pods"][0]["state"] == "active"


def test_unknown_vip_is_not_found_and_ambiguous_prefix_asks_for_port(kp):
    with pytest.raises(NotFound):
        kp.del_vip("10.96.0.99/32")
    kp.add_vip("10.96.0.10/32", port=80)
    kp.add_vip("10.96.0.10/32", port=443)
    with pytest.raises(InvalidInput) as error:
        kp.add_pods("10.96.0.10/32", None, ["10.0.0.101"])
    assert error.value.field == "port"


def test_conf_is_validated_whole(kp):
    before = snapshot(kp)
    for kwargs in (dict(buckets=1000), dict(buckets=0), dict(timeout=0),
                   dict(timeout=40, buckets=3), dict(buckets=64, node_ip="fd00::1"),
                   dict(node_ip6="10.0.0.1"), dict(node_ip="10.0.0.1", dpid=-1)):
        with pytest.raises(InvalidInput):
            kp.set_conf(**kwargs)
        assert snapshot(kp) == before
    conf = kp.set_conf(buckets=2048, timeout=5, node_ip="10.0.0.1")
    assert (conf["buckets"], conf["timeout"], conf["node_ip"]) == (2048, 5, "10.0.0.1")
    conf = kp.set_conf(node_ip="10.0.2.1", dpid=2)
    assert conf["nodes"] == {"2": {"node_ip": "10.0.2.1", "node_ip6": None,
                                   "node_subnet": "10.0.2.0/24", "node_subnet6": None,
                                   "announced": []}}
    assert kp.model.node_addresses(2).ipv4.exploded == "10.0.2.1"
    assert kp.model.node_addresses(1).ipv4.exploded == "10.0.0.1"


def test_interfaces(kp):
    kp.set_interface("nat4", "s1-eth3")
    with pytest.raises(Conflict):
        kp.set_interface("nat4", "s1-eth3")
    with pytest.raises(InvalidInput):
        kp.set_interface("nat5", "s1-eth3")
    with pytest.raises(NotFound):
        kp.set_interface("nat6", "s1-eth3", delete=True)
    assert kp.interfaces() == {"nat4": ["s1-eth3"], "nat6": []}


def test_a_table_built_ahead_is_found_by_the_change_it_is_for(kp):
    kp.add_vip("10.96.0.10/32", port=80, new_len=64)
    kp.add_pods("10.96.0.10/32", 80, ["10.0.0.1"])
    plan = kp.table_plan("10.96.0.10/32", 80, ["10.0.0.2", "10.0.0.3"])
    assert [str(p) for p in plan[0]] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] and plan[1] == 64
    tables = kp.model.tables
    assert tables.build_ahead([plan], build_tables, min_size=1) == 1
    built = tables.built
    kp.add_pods("10.96.0.10/32", 80, ["10.0.0.2", "10.0.0.3"])
    vip = kp.model.find_vip("10.96.0.10/32", 80)
    assert vip.table.pods == (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"))
    assert tables.built == built            # the change found it
    # Another change came first: the table built ahead is not this change's, which
    # builds its own.
    tables.build_ahead([kp.table_plan("10.96.0.10/32", 80, ["10.0.0.4"])], build_tables,
                       min_size=1)
    kp.del_pods("10.96.0.10/32", 80, ["10.0.0.1"])
    assert vip.table.pods == (ip("10.0.0.2"), ip("10.0.0.3"))
    assert vip.table.slots == MaglevTable([ip("10.0.0.2"), ip("10.0.0.3")], 64).slots
    assert tables.built == built + 1
    kp.del_pods("10.96.0.10/32", 80, ["10.0.0.2"])
    assert vip.table.pods == (ip("10.0.0.3"),)
    assert kp.table_plan("10.96.0.10/32", 80, ["10.0.0.3"], remove=True) == ([], 64)
    assert kp.table_plan("10.96.0.10/32", 80, ["not an address"]) is None
    assert kp.table_plan("10.96.0.99/32", 80, ["10.0.0.3"]) is None


def test_vips_with_the_same_pods_share_one_table(kp):
    builds = []
    for port in (80, 81):
        kp.add_vip("10.96.0.10/32", port=port, new_len=64)
        before = kp.model.tables.built
        kp.add_pods("10.96.0.10/32", port, ["10.0.0.1", "10.0.0.2"])
        builds.append(kp.model.tables.built - before)
    a, b = (kp.model.find_vip("10.96.0.10/32", p) for p in (80, 81))
    assert a.table is b.table and builds == [1, 0]


def test_a_local_policy_table_is_made_with_the_change_not_by_a_packet(kp):
    kp.set_conf(node_ip="10.0.0.1/24")
    kp.add_vip("10.96.0.10/32", port=80, new_len=64, internal_policy="local")
    kp.add_pods("10.96.0.10/32", 80, ["10.0.0.5", "10.0.9.5"])
    vip = kp.model.find_vip("10.96.0.10/32", 80)
    subnets = tuple(kp.model.node_addresses(1).subnets())
    assert vip.local_tables[subnets].pods == (ip("10.0.0.5"),)
    built = kp.model.tables.built
    assert kp.model.local_table(vip, subnets) is vip.local_tables[subnets]
    assert kp.model.tables.built == built
    kp.set_conf(node_ip="10.0.9.1/24")          # the node moved: its local pods too
    subnets = tuple(kp.model.node_addresses(1).subnets())
    assert vip.local_tables[subnets].pods == (ip("10.0.9.5"),)


def _brute_destination(model, ip_proto, dst, dst_port):
    """vip_for_destination by looking at every VIP: the most specific prefix, then a VIP
    of that port over one of every port."""
    fits = [v for v in model.vips.values()
            if ip_proto in v.ip_protos and v.version == dst.version
            and (not v.port or v.port == dst_port)
            and (dst in v.prefix or dst in v.external_ips)]
    return max(fits, key=lambda v: (v.prefix.prefixlen, bool(v.port)), default=None)


def test_indexed_lookups_agree_with_looking_at_every_vip():
    import random
    from kp_app.model import ServiceModel
    rng = random.Random(5)
    model = ServiceModel()
    addresses = [ip(f"10.96.{a}.{b}") for a in (0, 1) for b in (1, 2, 3)] + [ip("fd00::1")]
    prefixes = ["10.96.0.0/24", "10.96.0.0/16", "10.96.1.0/30", "10.96.0.2/31", "fd00::/64"]
    for step in range(600):
        if model.vips and rng.random() < 0.35:
            network, port = rng.choice(list(model.vips))
            model.del_vip(str(network), port)
            continue
        address = rng.choice(addresses)
        prefix = rng.choice(prefixes + [f"{address}/{address.max_prefixlen}"] * 3)
        externals = [str(a) for a in rng.sample(addresses, 2)
                     if a.version == ipaddress.ip_network(prefix).version]
        try:
            model.add_vip(prefix, rng.choice([0, 80, 443]), None,
                          rng.choice([None, 30080, 30081]), rng.choice(["tcp", "udp", "any"]),
                          external_ips=externals if rng.random() < 0.3 else [])
        except (Conflict, InvalidInput, NotFound):
            pass
        for dst in addresses:
            for proto, port in ((6, 80), (17, 443), (6, 22)):
                assert model.vip_for_destination(proto, dst, port) is \
                    _brute_destination(model, proto, dst, port), step
            assert model.serves(dst) == any(
                dst in v.prefix or dst in v.external_ips for v in model.vips.values()
                if v.version == dst.version)
        for node_port in (30080, 30081):
            want = [v for v in model.vips.values() if v.node_port == node_port and 6 in
                    v.ip_protos and v.version == 4]
            assert model.vip_for_node_port(4, 6, node_port) is (want[0] if want else None)
        for vip in model.vips.values():
            assert model.vip_by_id(vip.id) is vip


def test_reply_keys_and_draining_pods_are_indexed_as_the_vips_say():
    """The shared reply flows of a (pod, target port, protocol) stay while any VIP has
    that pod (has_reply_key), and the draining pods are found without looking at every
    pod: both indexes follow adds, drains, comebacks, forgets and deletes."""
    from kp_app.model import ServiceModel
    from kp_app.pipeline import reply_key
    m = ServiceModel()
    a = m.add_vip("10.96.0.1/32", 80, 8080, protocol="tcp")
    b = m.add_vip("10.96.0.2/32", 80, 8080, protocol="any")
    pod = ipaddress.ip_address("10.0.0.5")
    m.add_pods(a, ["10.0.0.5"])
    m.add_pods(b, ["10.0.0.5", "10.0.0.6"])
    tcp, udp = reply_key(a, pod, 6), reply_key(a, pod, 17)
    assert m.has_reply_key(tcp) and m.has_reply_key(udp)
    m.del_pods(b, ["10.0.0.5"])
    assert m.draining_pods() == [(b, pod)]
    m.forget_pod(b, pod)
    assert m.has_reply_key(tcp) and not m.has_reply_key(udp)   # a still has it over TCP
    assert m.draining_pods() == []
    m.del_pods(a, ["10.0.0.5"])
    m.add_pods(a, ["10.0.0.5"])                 # back before it drained: not draining
    assert m.draining_pods() == [] and m.has_reply_key(tcp)
    m.del_pods(a, ["10.0.0.5"])
    m.del_vip("10.96.0.1/32", 80)               # a deleted VIP takes its draining pods
    assert not m.has_reply_key(tcp) and m.draining_pods() == []
    assert m.has_reply_key(reply_key(b, ipaddress.ip_address("10.0.0.6"), 17))
    # a model that adopts a VIP (the plan's scratch model) indexes it whole
    other = ServiceModel()
    other.adopt(b)
    assert other.has_reply_key(reply_key(b, ipaddress.ip_address("10.0.0.6"), 6))
