"""Record-to-row conversion: every value a column type cannot hold exactly stays only in _raw."""

from __future__ import annotations

from datetime import datetime, timezone

from clarky_provider.resources import CONVERSATIONS
from clarky_provider.sql.schema import TableLayout


def test_values_that_do_not_fit_their_column_become_null_but_stay_in_raw():
    layout = TableLayout(CONVERSATIONS)
    record = {"id": "x", "type": 2**70, "active": "yes", "assigned_at": "last tuesday", "human": {"a": 1}}
    row = dict(zip(layout.names, layout.row(record, (datetime.now(timezone.utc), None, None)), strict=True))
    assert row["type"] is None and row["active"] is None and row["assigned_at"] is None
    assert row["human"] == '{"a":1}'  # a string column keeps non-strings as JSON text
    assert '"type":1180591620717411303424' in row["_raw"]


def test_integers_and_integral_floats_fit():
    layout = TableLayout(CONVERSATIONS)
    for given, expected in ((5, 5), (5.0, 5), (2**63 - 1, 2**63 - 1), (True, None), (1.5, None)):
        row = dict(zip(layout.names, layout.row({"id": "x", "type": given}, (None, None, None)), strict=True))
        assert row["type"] == expected, given
