"""Which fields the catalog does not know yet each table has held: a load warns about a new
field once, when it first appears in the table, not on every run.

Under a real scheduler, with one process per task, a memory in the process forgets between
runs (one full sync logged 42 such warnings, most for fields its tables already had). So the
memory is the warehouse's: the schema's ``_clarky_fields`` table (table, field, first seen),
written in the load's own transaction, so a failed load remembers nothing and the next one
warns again. The load engine creates the table when a load first has a field to note, in its
transaction where DDL is transactional, else before it changes the target (``sql/load.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from clarky_provider.sql.dialects import WarehouseDialect
from clarky_provider.sql.schema import FIELDS, FIELDS_TABLE


class FieldLedger:
    """The new fields of one load into ``table`` (``seen()``, known once its records are read),
    and after ``record``, those the table had never held (``first_seen``)."""

    def __init__(
        self, dialect: WarehouseDialect, schema: str | None, table: str, seen: Callable[[], Sequence[str]]
    ) -> None:
        self.dialect, self.schema, self.table, self.seen = dialect, schema, table, seen
        self.ledger = dialect.qualified(schema, FIELDS_TABLE)
        #: The fields this load's records held that no earlier load of the table had seen.
        self.first_seen: list[str] = []

    def missing(self, cursor: Any) -> bool:
        """Whether the schema has no ``_clarky_fields`` yet."""
        return self.dialect.existing_columns(cursor, self.schema, FIELDS_TABLE) is None

    def create(self) -> str:
        return self.dialect.create_table(self.ledger, FIELDS)

    def record(self, cursor: Any, stamp: Any) -> None:
        """In the load's transaction: note the fields the table holds for the first time
        (``stamp``: the load's start as the warehouse takes timestamps)."""
        names = list(dict.fromkeys(self.seen()))
        if not names:
            return
        cursor.execute(self.dialect.known_fields(self.ledger), (self.table,))
        known = {row[0] for row in cursor.fetchall()}
        self.first_seen = [name for name in names if name not in known]
        if self.first_seen:
            cursor.executemany(
                self.dialect.remember_field(self.ledger, FIELDS),
                [(self.table, name, stamp) for name in self.first_seen],
            )
