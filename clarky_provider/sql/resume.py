"""What a resumable load has read, kept in the warehouse until the load commits.

A child resource's load reads one list per parent, for hours at real size, and its task can be
killed at any moment; Airflow's next try is a new process, often on another host, so what the
killed try read survives only where the data goes. A ``LoadProgress`` saves each finished unit
(a parent whose whole list was read and checked against its ``total``) with its records in the
schema's ``_clarky_progress`` table, in small transactions about once a second; the next try of
the same load (the same key) skips those units and reads only the rest.

The target is still changed in one transaction at the end, fed by ``replay`` (every record the
load read, in this try and the earlier ones), and the same transaction removes the load's
progress (``finish``), so readers never see a partial load and nothing is left behind. The
replay comes from a local spool file (earlier tries' records downloaded once, this try's as
read; unlinked at creation, so gone with the process) rather than from the table: the load's
connection may be busy with a bulk ``COPY``, and a second one would meet the load's own locks. Progress of a
load that never came back is removed by the next successful load of the same table, or by any
load of it once older than the age the user sets.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from clarky_provider.jsoncodec import dumps, loads
from clarky_provider.sql.dialects import WarehouseDialect
from clarky_provider.sql.schema import PROGRESS, PROGRESS_TABLE

log = logging.getLogger(__name__)

#: Records downloaded per query when a try resumes.
DOWNLOAD_BATCH = 2000


class LoadProgress:
    """The saved progress of one load (``load_key``) into ``table``, read as ``plan`` says.

    :meth:`open` on its own connection before the load, :meth:`save` each finished unit,
    :meth:`close`; then, in the load's transaction, :meth:`replay` and :meth:`finish`; at last
    :meth:`discard` the spool.
    """

    def __init__(
        self,
        dialect: WarehouseDialect,
        schema: str | None,
        table: str,
        load_key: str,
        plan: str,
        max_age_seconds: float,
        record_key: Callable[[dict[str, Any]], Any],
    ) -> None:
        self.dialect, self.schema, self.table = dialect, schema, table
        self.load_key, self.plan, self.max_age_seconds = load_key, plan, max_age_seconds
        #: ``record_key(record)``: the key a replayed record is kept once by (several parents'
        #: lists may hold the same record).
        self.record_key = record_key
        self.progress = dialect.qualified(schema, PROGRESS_TABLE)
        #: Records and units earlier tries saved (known after ``open``).
        self.earlier_records = 0
        self.earlier_units: set[str] = set()
        self.started = time.time()
        self._connection: Any = None
        self._cursor: Any = None
        self._seq = 0
        self._spool = tempfile.TemporaryFile()  # noqa: SIM115 - lives until discard()

    # -- before the load: what earlier tries left, and saving this try's units -------------------

    def open(self) -> set[str]:
        """Connect, create the progress table where missing, drop what cannot be resumed (the
        read changed, or progress past its age) and return the units earlier tries finished."""
        session = self.dialect.session
        self._connection = session.connect()
        self._cursor = session.cursor(self._connection)
        self._ensure_table()
        self._transaction(self._drop_stale)
        cur = self._cursor
        cur.execute(self.dialect.progress_units(self.progress), (self.load_key,))
        self.earlier_units = {row[0] for row in cur.fetchall()}
        cur.execute(self.dialect.progress_extent(self.progress), (self.load_key,))
        records, seq = cur.fetchone()
        self.earlier_records, self._seq = int(records or 0), int(seq or 0)
        if self.earlier_records:
            self._download()
        self._connection.commit()
        return self.earlier_units

    def save(self, unit: str, records: Iterable[dict[str, Any]]) -> None:
        """Commit a finished unit and its records, all or none: a killed try then reads again
        only what was in flight (the budget, not the database, sets the pace: a couple of units
        a second)."""
        now = int(time.time())
        rows = []
        for record in records:
            text = dumps(record)
            rows.append(self._row(unit, now, text))
            self._spool.write(f"{text}\n".encode())
        rows.append(self._row(unit, now, None))
        writer = self.dialect.writer(self._cursor)

        def write() -> None:
            with writer.executemany(self.progress, PROGRESS, len(rows)) as put:
                for row in rows:
                    put(row)

        self._transaction(write)

    def close(self) -> None:
        """Let go of the connection (the load opens its own); what was saved stays."""
        if self._connection is None:
            return
        connection, self._connection = self._connection, None
        try:
            self.dialect.session.close(connection)
        except Exception:
            log.debug("Closing the progress connection failed", exc_info=True)

    # -- in the load's transaction ----------------------------------------------------------------

    def replay(self) -> Iterator[dict[str, Any]]:
        """Every record the load read, in all its tries, once per ``record_key`` (several
        parents' lists may hold the same record)."""
        seen: set[int] = set()
        self._spool.flush()
        self._spool.seek(0)
        for line in self._spool:
            record = loads(line)
            marker = hash(self.record_key(record))
            if marker not in seen:
                seen.add(marker)
                yield record

    def finish(self, cursor: Any) -> None:
        """Remove this load's progress, and that of loads of the table that saved nothing since
        this one started (they are not running: abandoned, or their retry will start afresh),
        in the load's transaction: it goes exactly when the load lands."""
        cursor.execute(self.dialect.progress_loads(self.progress), (self.table,))
        for key, saved_at in cursor.fetchall():
            if key == self.load_key or (saved_at or 0) < self.started:
                cursor.execute(self.dialect.delete_progress(self.progress), (key,))

    def discard(self) -> None:
        """Let go of the spool (its file was unlinked when made)."""
        self._spool.close()

    # -- helpers ------------------------------------------------------------------------------------

    def _row(self, unit: str, saved_at: int, record: str | None) -> tuple[Any, ...]:
        self._seq += 1
        return (self.table, self.load_key, self._seq, unit, self.plan, saved_at, record)

    def _transaction(self, work: Callable[[], None], *, changes: bool = True) -> None:
        """Run ``work`` in one transaction and commit; ``changes``: its rows all land or none
        (``begin_changes``: Snowflake's ``BEGIN``, where the session otherwise autocommits)."""
        session, connection = self.dialect.session, self._connection
        session.begin(connection)
        try:
            if changes:
                session.begin_changes(self._cursor)
            work()
            connection.commit()
        except BaseException:
            connection.rollback()
            raise

    def _ensure_table(self) -> None:
        """``CREATE TABLE IF NOT EXISTS`` (and its schema); a concurrent load creating the same
        table first is fine, so a failure is an error only if the table is still missing."""
        dialect, cur = self.dialect, self._cursor
        if dialect.existing_columns(cur, self.schema, PROGRESS_TABLE) is not None:
            self._connection.commit()
            return

        def create() -> None:
            if self.schema and (create_schema := dialect.create_schema(self.schema)):
                cur.execute(create_schema)
            cur.execute(dialect.create_table(self.progress, PROGRESS))

        try:
            self._transaction(create, changes=False)
        except Exception:
            if dialect.existing_columns(cur, self.schema, PROGRESS_TABLE) is None:
                raise
            self._connection.commit()

    def _download(self) -> None:
        """Earlier tries' records into the spool, in bounded memory (keyset paging)."""
        statement = self.dialect.progress_records(self.progress, DOWNLOAD_BATCH)
        after = 0
        while True:
            self._cursor.execute(statement, (self.load_key, after))
            rows = self._cursor.fetchall()
            if not rows:
                return
            after = rows[-1][0]
            self._spool.writelines(f"{text}\n".encode() for _, text in rows)

    def _drop_stale(self) -> None:
        cur, dialect = self._cursor, self.dialect
        cur.execute(dialect.progress_plans(self.progress), (self.load_key,))
        if any(plan != self.plan for (plan,) in cur.fetchall()):
            log.warning(
                "Progress of an earlier try of this load was saved for another read (the task's "
                "arguments or the table's watermark changed); starting afresh"
            )
            cur.execute(dialect.delete_progress(self.progress), (self.load_key,))
        cur.execute(dialect.progress_loads(self.progress), (self.table,))
        oldest = time.time() - self.max_age_seconds
        for key, saved_at in cur.fetchall():
            if key != self.load_key and (saved_at or 0) < oldest:
                log.info(
                    "Removing progress of an abandoned load of %s (older than the resume age)", self.table
                )
                cur.execute(dialect.delete_progress(self.progress), (key,))
