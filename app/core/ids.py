"""Time-ordered UUIDs (RFC 9562 version 7), generated here so a posting knows its id up front."""

import os
import time
import uuid

_pool = b""
_POOL_BYTES = 10 * 512


def _random10() -> int:
    """80 random bits from the OS, drawn a few kilobytes at a time: one system call per
    512 ids instead of one per id (a batch makes up to a thousand)."""
    global _pool
    if len(_pool) < 10:
        _pool = os.urandom(_POOL_BYTES)
    chunk, _pool = _pool[:10], _pool[10:]
    return int.from_bytes(chunk, "big")


_last_ms = 0
_last_tail = 0


def uuid7() -> uuid.UUID:
    """Monotonic within this process (RFC 9562, 6.2 method 2): an id made in the same
    millisecond as the one before, or after the clock stepped back, is the previous one's
    74 random bits plus one. So the transactions of one database transaction (a capture and
    the release of its rest, a release and the posting that caused it) sort in the order they
    were made, even though they share `posted_at`."""
    global _last_ms, _last_tail
    ms = time.time_ns() // 1_000_000
    tail = _random10() >> 6  # 74 bits: rand_a (12) and rand_b (62)
    if ms <= _last_ms:
        ms, tail = _last_ms, _last_tail + 1
        if tail >> 74:  # 2**74 ids in one millisecond: borrow the next one
            ms, tail = ms + 1, 0
    _last_ms, _last_tail = ms, tail
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= (tail >> 62) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= tail & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return uuid.UUID(int=value)
