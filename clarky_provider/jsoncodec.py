"""JSON in and out of the hot path: orjson where it is exact, the standard library where not.

orjson is 3-5x faster, but it turns integers beyond 64 bits into floats (and refuses to write
them), so bodies that may hold such numbers take the standard library: nothing is rounded.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

#: A run of 19+ digits may be an integer beyond 64 bits (2**63 has 19 digits).
_LONG_DIGITS = re.compile(rb"\d{19,}")


def loads(body: bytes) -> Any:
    """Decode a response body exactly; raises ``ValueError`` on invalid JSON."""
    if _LONG_DIGITS.search(body) is None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # let the standard library decide (it accepts NaN/Infinity, and words the error)
    return json.loads(body)


def dumps(value: Any) -> str | None:
    """Compact JSON text of a value (None stays None)."""
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
