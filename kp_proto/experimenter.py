"""kp's OpenFlow experimenter messages (see switch/FASTPATH.md, bottom): the one
definition, which kp-switch (answering them) and kp_app (sending them) both import.

Standard library only.  All integers are network order.

- KP_SET_BUCKETS (exp_type 1): data = u32 number of cache buckets (a power of 2).
  A bad value or a short message is refused with OFPET_BAD_REQUEST / OFPBRC_BAD_LEN.
- KP_CACHE_STATS_REQUEST (exp_type 2): no data.  The switch answers with
- KP_CACHE_STATS_REPLY (exp_type 3), same xid: 15 x u64, in CACHE_STATS_FIELDS order
  (the first 10 are the original reply; the megaflow counters were appended, so a
  reader that knows only the first 10 still works, and `decode_cache_stats` accepts a
  10-field reply from an older switch).
"""
import struct

KP_EXPERIMENTER_ID = 0x004B5000

KP_SET_BUCKETS = 1
KP_CACHE_STATS_REQUEST = 2
KP_CACHE_STATS_REPLY = 3

CACHE_STATS_FIELDS = ("hits", "misses", "inserts", "insert_failures", "evictions",
                      "expired", "invalidated", "entries", "buckets", "parse_errors",
                      "mf_hits", "mf_inserts", "mf_insert_failures", "mf_entries",
                      "mf_subtables")
CACHE_STATS_MIN_FIELDS = 10   # the reply before the megaflow counters
_STATS = struct.Struct("!%dQ" % len(CACHE_STATS_FIELDS))
_U32 = struct.Struct("!I")


def encode_set_buckets(buckets):
    """The experimenter data of KP_SET_BUCKETS."""
    return _U32.pack(buckets)


def decode_set_buckets(data):
    """The bucket count of KP_SET_BUCKETS data; ValueError when short or not a power of 2."""
    if len(data) < _U32.size:
        raise ValueError("KP_SET_BUCKETS: %d bytes of data, want 4" % len(data))
    (n,) = _U32.unpack_from(data)
    if n < 1 or n & (n - 1):
        raise ValueError("KP_SET_BUCKETS: %d is not a power of 2" % n)
    return n


def encode_cache_stats(stats):
    """The data of KP_CACHE_STATS_REPLY from a dict with CACHE_STATS_FIELDS (missing: 0)."""
    return _STATS.pack(*(int(stats.get(f, 0)) & 0xFFFFFFFFFFFFFFFF for f in CACHE_STATS_FIELDS))


def decode_cache_stats(data):
    """The dict of a KP_CACHE_STATS_REPLY's data (the fields it has: 10 from an older
    switch, more are ignored); ValueError when shorter than 10 fields."""
    n = min(len(data) // 8, len(CACHE_STATS_FIELDS))
    if n < CACHE_STATS_MIN_FIELDS:
        raise ValueError("KP_CACHE_STATS_REPLY: %d bytes of data, want at least %d"
                         % (len(data), 8 * CACHE_STATS_MIN_FIELDS))
    return dict(zip(CACHE_STATS_FIELDS, struct.unpack_from("!%dQ" % n, data)))
