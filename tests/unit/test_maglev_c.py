"""kp_app._maglev (kp_app/csrc/maglev.c) builds the very table kp_app/maglev.py's fill
does: the same slots for the same walk keys, at every size and pod count, including
keys whose round keys pass 2^64 (where Python's integers are wider than C's)."""
import ipaddress
import random

import pytest

from kp_app import maglev

try:
    from kp_app import _maglev
except ImportError:      # the suite builds it (./run test installs the package): fail
    _maglev = None


def test_the_extension_is_built():
    assert _maglev is not None, "kp_app._maglev is not built (setup.py builds it)"


@pytest.mark.parametrize("size", [1, 2, 32, 64, 1024, 2048, 1 << 13])
@pytest.mark.parametrize("pods", [1, 2, 3, 10, 100])
def test_c_and_python_fill_the_same_table(size, pods):
    rng = random.Random(size * 1000 + pods)
    keys = [rng.getrandbits(64) for _ in range(pods)]
    assert _maglev.build_table(keys, size) == maglev.fill(keys, size)


def test_round_keys_past_2_64_are_computed_as_python_does():
    keys = [(1 << 64) - 1, (1 << 64) - 2, (1 << 64) - 3, 0, 5]
    assert _maglev.build_table(keys, 4096) == maglev.fill(keys, 4096)


def test_the_table_kp_app_builds_is_the_c_one_and_the_python_one():
    pods = [ipaddress.ip_address("10.0.%d.%d" % (i // 250, i % 250 + 1)) for i in range(300)]
    table = maglev.MaglevTable(pods, 1 << 15)
    keys = [maglev.walk_key(p) for p in table.pods]
    assert list(table.slots) == maglev.fill(keys, 1 << 15)
    assert sorted(table.share().values())[-1] - sorted(table.share().values())[0] <= 1


def test_bad_sizes_and_keys_are_refused():
    with pytest.raises(ValueError):
        _maglev.build_table([1], 3)
    with pytest.raises(ValueError):
        _maglev.build_table([1], 0)
    with pytest.raises(OverflowError):
        _maglev.build_table([1 << 64], 8)
    with pytest.raises(TypeError):
        _maglev.build_table(["x"], 8)
    assert _maglev.build_table([], 8) == []
