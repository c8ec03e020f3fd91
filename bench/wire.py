"""What the benchmark's processes agree on: event bodies, the jobId clock, WebSocket frames, limits.

Rule: latency needs no shared map. The publisher writes its publish time and a (phase, index) sequence
into the ``jobId`` UUID itself; the load generator reads them back from the bytes it receives with a
substring search, never a JSON or MessagePack decode. ``time.monotonic_ns`` is one system-wide clock
on Linux, so times from two processes compare.
"""

from __future__ import annotations

import resource
import struct
import time
from typing import Final

__all__ = [
    "BROADCAST_GROUP",
    "decode_job_id",
    "event_body",
    "group_name",
    "job_id",
    "masked_frame",
    "now_us",
    "raise_fd_limit",
    "unmasked_frame",
]

BROADCAST_GROUP: Final = "all"
"""W2's group: every client joins it as well as its W1 group."""

_REQUEST_ID: Final = "11111111-2222-4333-8444-555555555555"
_GENERATED_AT: Final = "2025-01-01T00:00:00.000Z"


def now_us() -> int:
    return time.monotonic_ns() // 1000


def group_name(index: int) -> str:
    """W1's groups are regions ``g0`` … ``g999`` (valid region slugs; the hub's group is ``dispatch/g7``)."""
    return f"g{index}"


def job_id(published_us: int, phase: int, index: int) -> str:
    """A UUID-shaped id carrying the publish time (64 bits), the phase (16 bits) and an index (48 bits)."""
    digits = f"{published_us:016x}{phase:04x}{index:012x}"
    return f"{digits[0:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:32]}"


def decode_job_id(value: bytes | str) -> tuple[int, int, int]:
    """(publish time in µs, phase, index) from a ``job_id``."""
    if isinstance(value, str):
        value = value.encode()
    published = int(value[0:8] + value[9:13] + value[14:18], 16)
    return published, int(value[19:23], 16), int(value[24:36], 16)


def event_body(job: str, region: str) -> bytes:
    """A valid ``RecommendationReady`` body (schemas.RecommendationReady), built without a JSON encoder."""
    return (
        f'{{"type":"RecommendationReady","jobId":"{job}","requestId":"{_REQUEST_ID}",'
        f'"region":"{region}","configVersion":1,"generatedAt":"{_GENERATED_AT}"}}'
    ).encode()


def _header(first: int, length: int, mask_bit: int) -> bytes:
    if length < 126:
        return struct.pack("!BB", first, mask_bit | length)
    if length < 65536:
        return struct.pack("!BBH", first, mask_bit | 126, length)
    return struct.pack("!BBQ", first, mask_bit | 127, length)


def unmasked_frame(payload: bytes, *, binary: bool = False) -> bytes:
    """A server → client frame (RFC 6455 §5.2: servers never mask)."""
    return _header(0x82 if binary else 0x81, len(payload), 0) + payload


def masked_frame(payload: bytes, *, binary: bool = False) -> bytes:
    """A client → server frame. RFC 6455 requires the mask bit; an all-zero key leaves the payload as is."""
    return _header(0x82 if binary else 0x81, len(payload), 0x80) + b"\x00\x00\x00\x00" + payload


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
