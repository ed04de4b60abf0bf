"""The bulk path of rows into a table on one engine: how values are encoded on the way, and how
rows are sent (``executemany`` here; ``COPY``, Arrow, ``LOAD DATA`` or ``write_pandas`` in the
engines' writers). The statements it sends come from the dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from clarky_provider.jsoncodec import dumps as to_json
from clarky_provider.sql.dialects.capabilities import Capabilities
from clarky_provider.sql.schema import Columns, timestamp_or_none

Row = tuple[Any, ...]
#: ``write(row)``: one row into the table being written.
WriteRow = Callable[[Row], None]


class BulkWriterDialect(Protocol):
    """The dialect as a writer sees it (``WarehouseDialect`` is one): engines' writers ask theirs
    for more statements (``COPY``, ``LOAD DATA``)."""

    @property
    def capabilities(self) -> Capabilities: ...

    def insert_values(self, table: str, columns: Columns) -> str: ...


@contextmanager
def batches(flush: Callable[[list[Row]], None], size: int) -> Iterator[WriteRow]:
    """``write(row)`` that hands ``flush`` every ``size`` rows, and the rest at the end; the
    list is reused afterwards, so ``flush`` must be done with it when it returns."""
    batch: list[Row] = []

    def write(row: Row) -> None:
        batch.append(row)
        if len(batch) >= size:
            flush(batch)
            batch.clear()

    yield write
    if batch:
        flush(batch)


class BulkWriter:
    """ANSI: JSON as text, timestamps as aware UTC datetimes, ``executemany`` of an ``INSERT``."""

    def __init__(self, dialect: BulkWriterDialect, cursor: Any) -> None:
        self.dialect = dialect
        self.cursor = cursor

    def json_encoder(self) -> Callable[[Any], Any]:
        """How JSON columns travel to this warehouse (text by default)."""
        return to_json

    def timestamp_encoder(self) -> Callable[[Any], Any]:
        """How timestamps travel to this warehouse (timestamp fields, ``_loaded_at``, the
        deletion flag): an API value or a datetime in, the column value out, None for what is
        not a timestamp. Aware UTC datetimes by default."""
        return timestamp_or_none

    @contextmanager
    def stream(self, table: str, columns: Columns, batch_size: int) -> Iterator[WriteRow]:
        """Yield ``write(row)`` that loads rows into ``table`` through the engine's bulk path,
        in batches of ``batch_size`` rows within the engine's bounds (``Capabilities.batch_rows``)."""
        with self.executemany(table, columns, self.dialect.capabilities.batch_rows(batch_size)) as write:
            yield write

    @contextmanager
    def executemany(self, table: str, columns: Columns, batch_size: int) -> Iterator[WriteRow]:
        """``write(row)`` that sends the dialect's ``INSERT ... VALUES`` every ``batch_size`` rows."""
        statement = self.dialect.insert_values(table, columns)

        def flush(batch: list[Row]) -> None:
            self.cursor.executemany(statement, batch)

        with batches(flush, batch_size) as write:
            yield write
