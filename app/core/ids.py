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


def uuid7() -> uuid.UUID:
    ms = time.time_ns() // 1_000_000
    rand = _random10()
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return uuid.UUID(int=value)
