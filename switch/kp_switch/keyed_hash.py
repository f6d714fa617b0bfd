"""Pure-Python twin of csrc/keyed_hash.c: SipHash-1-3 and the process secret.

The C tables a packet can aim at (the flow cache, the megaflows, the session table) are
placed by SipHash-1-3 under a per-process random key (see csrc/keyed_hash.h for why).
The twin's tables place entries the same way under ``SECRET``, its own random key;
differential tests give it the C extension's (``_fastpath.hash_secret()``) so that
both put a key in the same bucket.
"""
from __future__ import annotations

import os
from typing import List, Sequence

_M64 = (1 << 64) - 1

# The process secret (k0, k1).  Nothing outside the process sets it.
SECRET: List[int] = [int.from_bytes(os.urandom(8), "little"),
                     int.from_bytes(os.urandom(8), "little")]


def set_secret(k0: int, k1: int) -> None:
    """For tests: place entries as a C extension with this secret does."""
    SECRET[0], SECRET[1] = k0 & _M64, k1 & _M64


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def siphash13(words: Sequence[int], k0: int, k1: int) -> int:
    """SipHash-1-3 of 64-bit words (each the little-endian read of 8 bytes)."""
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1

    def rnd() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _M64
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _M64
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _M64
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _M64
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    for w in words:
        v3 ^= w
        rnd()
        v0 ^= w
    b = ((8 * len(words)) & 0xFF) << 56
    v3 ^= b
    rnd()
    v0 ^= b
    v2 ^= 0xFF
    rnd()
    rnd()
    rnd()
    return v0 ^ v1 ^ v2 ^ v3


def secret_hash(words: Sequence[int]) -> int:
    """The tables' 32-bit hash of words under the process secret."""
    return siphash13(words, SECRET[0], SECRET[1]) & 0xFFFFFFFF
