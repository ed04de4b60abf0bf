"""Record-to-row conversion: every value a column type cannot hold exactly stays only in _raw."""

from __future__ import annotations

from datetime import datetime, timezone

from clarky_provider.operators.plan import table_spec
from clarky_provider.resources import CONVERSATIONS
from clarky_provider.sql.schema import TableLayout


def test_values_that_do_not_fit_their_column_become_null_but_stay_in_raw():
    layout = TableLayout(table_spec(CONVERSATIONS))
    record = {"id": "x", "type": 2**70, "active": "yes", "assigned_at": "last tuesday", "human": {"a": 1}}
    row = dict(zip(layout.names, layout.row(record, (datetime.now(timezone.utc), None, None)), strict=True))
    assert row["type"] is None and row["active"] is None and row["assigned_at"] is None
    assert row["human"] == '{"a":1}'  # a string column keeps non-strings as JSON text
    assert '"type":1180591620717411303424' in row["_raw"]


def test_integers_and_integral_floats_fit():
    layout = TableLayout(table_spec(CONVERSATIONS))
    for given, expected in ((5, 5), (5.0, 5), (2**63 - 1, 2**63 - 1), (True, None), (1.5, None)):
        row = dict(zip(layout.names, layout.row({"id": "x", "type": given}, (None, None, None)), strict=True))
        assert row["type"] == expected, given


def test_timestamps_in_every_shape_become_aware_utc():
    layout = TableLayout(table_spec(CONVERSATIONS))
    utc = datetime(2026, 1, 12, 14, 30, tzinfo=timezone.utc)
    for given, expected in (
        ("2026-01-12T14:30:00Z", utc),
        ("2026-01-12T14:30:00.000Z", utc),
        ("2026-01-12T14:30:00.250z", utc.replace(microsecond=250_000)),
        ("2026-01-12T15:30:00+01:00", utc),
        ("2026-01-12T14:30:00", utc),  # no offset: the API means UTC
        (" 2026-01-12T14:30:00Z ", utc),
        ("last tuesday", None),
        (1768228200, None),
        (None, None),
    ):
        row = layout.row({"id": "x", "assigned_at": given}, (None, None, None))
        value = dict(zip(layout.names, row, strict=True))["assigned_at"]
        assert value == expected, given
        assert value is None or value.tzinfo is timezone.utc, given


def test_json_columns_take_the_warehouse_wire_format():
    from clarky_provider.jsoncodec import dumps_jsonb

    layout = TableLayout(table_spec(CONVERSATIONS))
    record = {"id": "x", "human": "ok", "huge": [2**70]}
    row = dict(zip(layout.names, layout.row_maker(dumps_jsonb)(record, (None, None, None)), strict=True))
    assert row["_raw"] == b'\x01{"id":"x","human":"ok","huge":[1180591620717411303424]}'
    assert row["human"] == "ok"  # strings stay text whatever the JSON format


def test_text_timestamps_cut_from_the_api_form_equal_parsed_and_formatted_ones():
    """SQLite's and MySQL's text timestamps: the API's usual forms are re-cut, not parsed; the
    text must be exactly what parsing and formatting would give, and a non-date stays None."""
    from clarky_provider.sql.schema import timestamp_or_none, timestamp_text

    def formatted(value, separator, offset, timespec):
        moment = timestamp_or_none(value)
        return None if moment is None else moment.replace(tzinfo=None).isoformat(separator, timespec) + offset

    sqlite, mysql = ("T", "+00:00", "milliseconds"), (" ", "", "microseconds")
    assert timestamp_text(*sqlite)("2026-01-12T14:30:00.250Z") == "2026-01-12T14:30:00.250+00:00"
    assert timestamp_text(*mysql)("2026-01-12T14:30:00Z") == "2026-01-12 14:30:00.000"
    for given in (
        "2026-01-12T14:30:00.250Z",  # the API's two usual forms: cut
        "2026-01-12T14:30:00Z",
        "2026-01-12T15:30:00.250+01:00",  # any other form: parsed
        "2026-01-12T14:30:00.123456Z",
        "2026-01-12 14:30:00.250Z",
        "2026-01-12T14:30:00",
        datetime(2026, 1, 12, 14, 30, 0, 250_000, tzinfo=timezone.utc),
    ):
        assert timestamp_text(*sqlite)(given) == formatted(given, *sqlite), given  # milliseconds
        assert timestamp_or_none(timestamp_text(*mysql)(given)) == timestamp_or_none(given), given
    for not_a_date in (
        "2026-13-12T14:30:00.250Z",
        "2026-02-30T14:30:00Z",
        "2026-01-12T24:30:00Z",
        "soon",
        None,
    ):
        assert timestamp_text(*sqlite)(not_a_date) is None, not_a_date
        assert timestamp_text(*mysql)(not_a_date) is None, not_a_date
