"""Which parents a child load must read, told by the warehouse instead of the parents' list.

An incremental read of a child resource (activities, messages) finds the parents whose change
signal moved (a contact's ``last_contacted_at``) by listing every parent: every page of
contacts, each day. When the same DAG has just loaded that list into the parents' table, the
pages are paid twice. The warehouse already holds both sides: a parent needs its list read when
its signal there is newer than the newest child the child table holds for it. The comparison is
per parent, not against one watermark, so a parent missed once (its row older than its newest
child) is read by the next run that sees its fresh row: nothing depends on the order in which
the two tables were loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.sql.dialects import WarehouseDialect
from clarky_provider.sql.load import roll_back
from clarky_provider.sql.schema import IS_CURRENT


@dataclass(frozen=True)
class ParentLink:
    """How a child table's rows hang off their parents' table (same schema), by column."""

    parents: str  #: what the parents are, for messages (``contacts``)
    parent_table: str
    parent_id: str  #: the parents' key
    signals: tuple[str, ...]  #: parent columns a new child moves to its own time
    child_table: str
    parent_key: str  #: the child column holding its parent's key
    child_time: str  #: the child column the signals follow (its creation time)


@dataclass(frozen=True)
class ParentSignals:
    """Every live parent in the parents' table, and whether its signal says its list changed."""

    changed: tuple[str, ...]
    unchanged: tuple[str, ...]


def parent_signals(
    dialect: WarehouseDialect, connection: Any, schema: str | None, link: ParentLink
) -> ParentSignals | None:
    """The parents of the load into ``link.child_table``, judged by their rows in
    ``link.parent_table``; None when the tables cannot tell: no child table yet (a first load
    reads every parent), or no parent carrying a signal at all (a workspace without it: every
    parent's list is read, as without a parents' table). Read on its own transaction, let go
    before the load."""
    dialect.session.begin(connection)
    cursor = dialect.session.cursor(connection)
    try:
        columns = dialect.existing_columns(cursor, schema, link.parent_table)
        if columns is None:
            raise ClarkyConfigError(
                f"parent_table {link.parent_table!r} does not exist; load {link.parents} into it first "
                "(upstream of this task, in the same DAG), or leave parent_table unset."
            )
        lacking = [name for name in (link.parent_id, *link.signals) if name not in columns]
        if lacking:
            raise ClarkyConfigError(
                f"parent_table {link.parent_table!r} has no column {', '.join(map(repr, lacking))}: it "
                f"must hold {link.parents} with their change signal; keep those fields in its load "
                "(columns / exclude_columns)."
            )
        if dialect.existing_columns(cursor, schema, link.child_table) is None:
            return None
        parents = dialect.qualified(schema, link.parent_table)
        if not any(_holds_a_value(dialect, cursor, parents, signal) for signal in link.signals):
            return None
        cursor.execute(
            dialect.parent_signals(
                parents,
                link.parent_id,
                link.signals,
                dialect.qualified(schema, link.child_table),
                link.parent_key,
                link.child_time,
                versioned=IS_CURRENT in columns,
            )
        )
        rows = cursor.fetchall()
    finally:
        roll_back(connection)  # a read only: nothing to keep, no lock held into the load
    return ParentSignals(
        changed=tuple(str(row[0]) for row in rows if row[1]),
        unchanged=tuple(str(row[0]) for row in rows if not row[1]),
    )


def _holds_a_value(dialect: WarehouseDialect, cursor: Any, table: str, column: str) -> bool:
    cursor.execute(dialect.any_value(table, column))
    return cursor.fetchone() is not None
