"""``write_mode="history"`` planned from the catalog: which field starts a version, which flag
deletes a record, and the options a history cannot take, refused before any request.

The load engine (``sql/load.py``) keeps the versions; it never sees the catalog. So the facts it
needs come from here, as a ``HistoryLayout``: the field whose value is a version's start
(``updated_at`` where the resource has one and the column policy keeps it) and the API's own
deletion flag (``Resource.soft_delete_field``).
"""

from __future__ import annotations

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.resources import Resource
from clarky_provider.sql.load import current_view
from clarky_provider.sql.schema import HistoryLayout, check_identifier
from clarky_provider.tables import TableSpec

#: The field whose value is when a record last changed: a version starts there.
VERSION_FIELD = "updated_at"


def history_layout(resource: Resource, spec: TableSpec, table: str, delete_mode: str | None) -> HistoryLayout:
    """The history table of ``spec``; ``ClarkyConfigError`` for an option a history cannot take."""
    if delete_mode == "remove":
        raise ClarkyConfigError(
            "write_mode='history' keeps every version of a record, so delete_mode='remove' cannot apply: "
            "use delete_mode='flag' (a record deleted upstream closes its current version) or None."
        )
    view = current_view(table)
    if len(view) > 63:
        raise ClarkyConfigError(
            f"Table name {table!r} is too long for a history table: its view {view!r} must fit in 63 "
            f"characters; use a table name of at most {63 - len(view) + len(table)} characters."
        )
    check_identifier(view, "History view name")
    names = {f.name for f in spec.fields}
    version = VERSION_FIELD if VERSION_FIELD in names else None
    deleted = resource.soft_delete_field if resource.soft_delete_field in names else None
    return HistoryLayout(spec, version, deleted)
