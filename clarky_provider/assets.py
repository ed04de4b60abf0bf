"""Airflow Assets for the warehouse tables Clarky loads land in.

One naming rule, ``<sql_conn_id>.<schema>.<table>`` (schema left out when unset), so the DAG
that loads a table and the DAGs scheduled on it agree on the asset without sharing code.
"""

from __future__ import annotations

from typing import Any

from clarky_provider.compat import Asset

#: Summary fields copied into each asset event's extra (small, never records or secrets).
EVENT_FIELDS = ("resource", "rows_fetched", "rows_inserted", "rows_updated", "rows_deleted", "watermark")


def table_asset(table: str, *, sql_conn_id: str = "warehouse", schema: str | None = None) -> Asset:
    """The Asset of a warehouse table, e.g. ``table_asset("contacts")`` -> ``warehouse.contacts``."""
    return Asset(name=".".join(p for p in (sql_conn_id, schema, table) if p))


def event_extra(summary: dict[str, Any]) -> dict[str, Any]:
    """The part of a load summary that downstream DAGs may read from the asset event."""
    return {key: summary[key] for key in EVENT_FIELDS if key in summary}
