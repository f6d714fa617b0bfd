"""The tables a packet can aim at are keyed with a per-process secret (csrc/keyed_hash.h):
two processes place the same keys differently, keys aimed at one bucket under one
secret spread out under another, and the twin agrees with C under C's secret (the
differential tests in test_fastpath_cache.py and test_fastpath_megaflow.py rely on it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import IMPLS
from kp_switch import fastpath_ref as ref
from kp_switch import keyed_hash

C = IMPLS.get("c")
pytestmark = pytest.mark.skipif(C is None, reason="extension not built")


def key(i: int) -> bytes:
    return i.to_bytes(4, "little") + bytes(96)


# Loads the extension the way conftest does (the ASan build under sanitize.sh) and
# prints its secret and the hashes of a few fixed keys.
_PROBE = r"""
import importlib.machinery, importlib.util, json, os, sys
so = os.environ.get("KP_FASTPATH_SO")
if so:
    loader = importlib.machinery.ExtensionFileLoader("kp_switch._fastpath", so)
    spec = importlib.util.spec_from_file_location("kp_switch._fastpath", so, loader=loader)
    fp = importlib.util.module_from_spec(spec)
    loader.exec_module(fp)
else:
    from kp_switch import _fastpath as fp
keys = [i.to_bytes(4, "little") + bytes(96) for i in range(8)]
print(json.dumps([list(fp.hash_secret()), [fp.key_hash(k) for k in keys]]))
"""


def _probe():
    out = subprocess.run([sys.executable, "-c", _PROBE], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)


def test_two_processes_have_different_secrets_and_place_keys_differently():
    (s1, h1), (s2, h2) = _probe(), _probe()
    assert s1 != s2
    assert h1 != h2           # an unkeyed hash gives every process the same buckets


def test_keys_aimed_at_one_bucket_under_another_secret_spread_out():
    """An attacker who knows the hash but not the secret: keys found to share bucket 0
    under a secret of its own choosing land all over the C cache's buckets."""
    saved = list(keyed_hash.SECRET)
    try:
        keyed_hash.set_secret(1, 2)                      # the attacker's guess
        guess = ref._CacheForTest(1024)
        aimed = [key(i) for i in range(200000) if guess.bucket_of(key(i)) == 0][:40]
    finally:
        keyed_hash.set_secret(*saved)
    assert len(aimed) == 40
    real = C._CacheForTest(1024)
    assert len({real.bucket_of(k) for k in aimed}) > 30


def test_twin_places_keys_as_c_only_under_c_secret():
    blobs = [key(i) for i in range(64)]
    assert [C.key_hash(b) for b in blobs] == [ref.key_hash(b) for b in blobs]
    saved = list(keyed_hash.SECRET)
    try:
        keyed_hash.set_secret(saved[0] ^ 1, saved[1])
        assert [C.key_hash(b) for b in blobs] != [ref.key_hash(b) for b in blobs]
    finally:
        keyed_hash.set_secret(*saved)
