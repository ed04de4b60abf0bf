"""JSON for the JSON columns: orjson where it is exact, the standard library where not.

orjson writes 3-5x faster but refuses integers beyond 64 bits, which Clarky data may hold; those
values take the standard library, so nothing is rounded. Decoding stays with the standard
library: it keeps such integers exact, and a guard that would let orjson decode safely costs
more than orjson saves (measured on emulator pages, see docs/benchmarks.md).
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> str | None:
    """Compact JSON text of a value (None stays None)."""
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _stdlib_dumps(value)


def dumps_jsonb(value: Any) -> bytes:
    """A value in PostgreSQL's binary ``jsonb`` wire format: version byte 1, then the JSON text."""
    try:
        return b"\x01" + orjson.dumps(value)
    except TypeError:
        return b"\x01" + _stdlib_dumps(value).encode()


def _stdlib_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
