"""The hot-path JSON codec reads everything the standard library reads, exactly."""

from __future__ import annotations

import json
import math

import pytest

from clarky_provider.jsoncodec import dumps, dumps_jsonb, loads


def test_integers_beyond_64_bits_survive_both_ways():
    body = b'{"huge": 123456789012345678901234567890, "neg": -9223372036854775809, "d": 0.1}'
    value = loads(body)
    assert value == {"huge": 123456789012345678901234567890, "neg": -9223372036854775809, "d": 0.1}
    assert dumps(value) == '{"huge":123456789012345678901234567890,"neg":-9223372036854775809,"d":0.1}'
    assert dumps_jsonb(value) == b"\x01" + dumps(value).encode()


def test_text_matches_the_standard_library_compact_form():
    value = {'quote"key': "é🎉\x00\\", "list": [None, True, 1.5, {"nested": []}]}
    assert dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_bodies_only_the_standard_library_reads_still_decode():
    assert math.isnan(loads(b'{"score": NaN}')["score"])
    assert loads(b'{"text": "\\ud83c"}') == {"text": "\ud83c"}


@pytest.mark.parametrize("body", [b'{"data": [', b"<html>502</html>", b""])
def test_broken_bodies_raise_value_error(body):
    with pytest.raises(ValueError):
        loads(body)
