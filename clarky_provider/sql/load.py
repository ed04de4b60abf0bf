"""The load engine: a plan, a record source and a dialect in; one table changed, atomically.

It knows tables, not where records come from: it finds the table's watermark (its newest
cursor value) when the load is incremental, asks the source for records with it, and returns
what it did to the table (``Loaded``); turning the watermark into a read is the source's job.

Records stream into a temporary staging table (PostgreSQL's binary ``COPY``, each engine's
bulk path: the dialect's writer), and the target is only touched at the end, inside one
transaction (the dialect's session); an empty target takes the stream directly where the
engine can lock it (its capabilities say whether). A merge writes only what changed: every
row carries a hash of its content, and a record whose hash equals its row's is not written at
all (a full snapshot compares before staging, any other merge in staging: see
``_drop_unchanged``). A failure anywhere leaves the target as it was, and a retry converges on
the same table. Every statement comes from the dialect.

A history (``write_mode="history"``, ``HistoryLayout``) takes the merge's path up to the
target: the same staging, the same comparison of content hashes (with the record's current
version only), the same delete detection; then, instead of the upsert, it closes the current
version of each changed record and inserts the new one (``_new_versions``), and a deletion
closes the version instead of flagging or removing the row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clarky_provider.normalize import parse_timestamp
from clarky_provider.sql.dialects import WarehouseDialect
from clarky_provider.sql.fields import FieldLedger
from clarky_provider.sql.locks import wait_until
from clarky_provider.sql.schema import (
    FIELDS_TABLE,
    HistoryLayout,
    Metadata,
    TableLayout,
    timestamp_or_none,
)

log = logging.getLogger(__name__)

#: The write modes that compare each record with its row (its current version) by content hash,
#: write only what changed, and detect deletes on full snapshots.
COMPARING = ("merge", "history")

#: The records to load, given the table's watermark: the newest cursor value it holds, or None
#: (an empty table, or a load that does not start from the watermark).
RecordSource = Callable[[datetime | None], Iterable[dict[str, Any]]]


@dataclass(frozen=True)
class LoadPlan:
    """A load into one table, complete and validated before the first read or write."""

    layout: TableLayout
    schema: str | None
    table: str
    write_mode: str  # merge, append, replace or history (then ``layout`` is a HistoryLayout)
    delete_mode: str | None  # None, flag or remove (a history closes the version either way)
    #: The records are every row there is: what they lack was deleted, and a merge compares
    #: each record with its row before staging.
    full_snapshot: bool
    #: The read starts from the table's watermark, which the load finds first.
    incremental: bool
    batch_size: int
    #: A full snapshot of only the rows whose column (``Scope.column``) holds one of these
    #: values: a targeted re-sync of named records, or of named parents' lists.
    scope: Scope | None = None

    def partial_load_consequence(self) -> str:
        """What landing a partial read would have done to the table, for the error message."""
        outcome = f"Nothing was written: {self.table} is exactly as it was."
        if self.write_mode == "replace":
            return (
                f"{outcome} A partial replace would not have been safe: it drops the rows that were not read."
            )
        if self.write_mode in COMPARING and self.delete_mode and self.full_snapshot:
            return (
                f"{outcome} A partial {self.write_mode} would not have been safe: delete_mode={self.delete_mode!r} "
                "would have marked every record that was not read as deleted."
            )
        return (
            f"{outcome} A {self.write_mode} of the records read would have been safe (rows not read stay "
            "as they are), but a load never lands a partial read as if it were complete."
        )


@dataclass(frozen=True)
class Scope:
    """The rows a full snapshot covers when it is not the whole table: those whose ``column``
    is one of ``values`` (a record's ``id``, or a child's parent key)."""

    column: str
    values: tuple[str, ...]


@dataclass
class Loaded:
    """What a load did to its table: rows by outcome, and the watermark it leaves (the newest
    cursor value read, or the table's own when that is newer)."""

    rows_fetched: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_deleted: int = 0
    watermark: datetime | None = None


def load(
    plan: LoadPlan,
    dialect: WarehouseDialect,
    connection: Any,
    read: RecordSource,
    metadata: Metadata,
    finish: Callable[[Any], None] | None = None,
    fields: FieldLedger | None = None,
) -> Loaded:
    """Run ``plan`` in one transaction on ``connection`` and commit; on any error roll back
    (and undo the DDL that committed, where DDL commits) and re-raise. ``finish(cursor)`` runs
    last in the same transaction (a resumable load removes its saved progress there);
    ``fields`` notes there which new fields the table holds for the first time."""
    dialect.session.begin(connection)
    table_load = _TableLoad(plan, dialect, dialect.session.cursor(connection), read, metadata, fields)
    try:
        loaded = table_load.run()
        if finish is not None:
            finish(table_load.cursor)
        connection.commit()
    except BaseException:
        roll_back(connection)
        table_load.undo_committed_ddl()
        raise
    return loaded


def watermark(plan: LoadPlan, dialect: WarehouseDialect, connection: Any) -> datetime | None:
    """The table's newest cursor value where the load is incremental (None: not incremental, no
    table, or an empty one), read and let go before the load: a resumable load reads its
    records before its transaction begins."""
    if not plan.incremental:
        return None
    cur = dialect.session.cursor(connection)
    try:
        if dialect.existing_columns(cur, plan.schema, plan.table) is None:
            return None
        return _newest(plan, dialect, cur, dialect.qualified(plan.schema, plan.table))
    finally:
        roll_back(connection)


def _newest(plan: LoadPlan, dialect: WarehouseDialect, cursor: Any, target: str) -> datetime | None:
    """The newest cursor value in ``target``, or None for an empty table."""
    cursor.execute(dialect.newest(target, plan.layout.spec.cursor or ""))
    return parse_timestamp(cursor.fetchone()[0])


class _TableLoad:
    """One load inside one open transaction."""

    def __init__(
        self,
        plan: LoadPlan,
        dialect: WarehouseDialect,
        cursor: Any,
        read: RecordSource,
        metadata: Metadata,
        fields: FieldLedger | None = None,
    ) -> None:
        self.plan, self.dialect, self.cursor, self.read, self.metadata = plan, dialect, cursor, read, metadata
        self.fields = fields
        self.session, self.writer = dialect.session, dialect.writer(cursor)
        self.target = dialect.qualified(plan.schema, plan.table)
        #: A history table's view of its current versions (``<table>_current``).
        self.view = dialect.qualified(plan.schema, current_view(plan.table))
        self.staging = dialect.staging_table(plan.schema, f"_clarky_stage_{plan.table}")
        self.gone = dialect.staging_table(plan.schema, f"_clarky_gone_{plan.table}")
        self.claimed = False  # whether this transaction holds the table's lock (see _ensure_table)
        self.created = False  # whether this load created the target (undone on failure if DDL commits)
        self.added: list[str] = []  # columns this load added: every row must be written again

    def run(self) -> Loaded:
        self._ensure_table()
        loaded = self._write()
        if self.fields is not None and self.fields.seen():
            if self.dialect.capabilities.transactional_ddl:
                self._ensure_ledger()
            self.fields.record(self.cursor, self._stamp())
        return loaded

    def _write(self) -> Loaded:
        plan, layout, dialect, cur = self.plan, self.plan.layout, self.dialect, self.cursor
        newest = self._newest() if plan.incremental else None
        if self._direct_load_possible():
            if not dialect.capabilities.transactional_ddl:  # after the rows, its DDL would commit them
                self._ensure_ledger()
            return self._loaded(newest, self._stream(self.target, newest, None))
        known = self._known_rows() if plan.write_mode in COMPARING and plan.full_snapshot else None
        cur.execute(dialect.create_table(self.staging, layout, temporary=True))
        streamed = self._stream(self.staging, newest, known)
        loaded = self._loaded(newest, streamed)
        if known and plan.delete_mode:
            self._stage_gone(known)
        if not dialect.capabilities.transactional_ddl and self.fields is not None and self.fields.seen():
            self._ensure_ledger()  # the last moment DDL commits nothing of the target's
        self.session.begin_changes(cur)
        if plan.write_mode == "merge":
            staged = streamed.written
            if known is None:  # not a full snapshot: staged as read, compared here
                unchanged = self._drop_unchanged(staged)
                staged -= unchanged
                self._count_existing(staged, loaded)
                loaded.rows_unchanged = unchanged
            if staged:
                cur.execute(dialect.upsert(self.target, self.staging, layout))
        elif plan.write_mode == "history":
            self._new_versions(streamed.written, known is not None, loaded)
        elif plan.write_mode == "replace":
            cur.execute(dialect.count_rows(self.target))
            loaded.rows_deleted = cur.fetchone()[0]
            cur.execute(dialect.delete_all(self.target))
            cur.execute(dialect.insert_all(self.target, self.staging, layout))
        else:  # an append through staging, where DDL commits
            cur.execute(dialect.insert_all(self.target, self.staging, layout))
        loaded.rows_deleted += self._apply_deletes(known)
        for table in (self.staging, self.gone if known and plan.delete_mode else None):
            drop = dialect.drop_staging(table) if table else None
            if drop:
                cur.execute(drop)
        return loaded

    def _new_versions(self, staged: int, compared: bool, loaded: Loaded) -> None:
        """History: of the ``staged`` records (already ``compared`` with their current versions
        while streamed, on a full snapshot), the unchanged are dropped; those the API flags
        deleted close their current version; each other one closes its record's current
        version where it starts, and is inserted as the new current version."""
        layout, dialect, cur = self.plan.layout, self.dialect, self.cursor
        assert isinstance(layout, HistoryLayout)
        if not compared:
            staged -= self._drop_unchanged(staged)
        closed = 0
        if layout.deleted_field and staged:
            flagged = dialect.flagged(layout.deleted_field)
            cur.execute(dialect.close_gone(self.target, self.staging, layout, flagged), (self._stamp(),) * 2)
            closed = max(cur.rowcount, 0)
            cur.execute(dialect.remove_flagged(self.staging, layout.deleted_field))
            cur.execute(dialect.count_rows(self.staging))
            staged = int(cur.fetchone()[0])
        self._count_existing(staged, loaded)
        loaded.rows_unchanged = loaded.rows_fetched - staged - closed
        loaded.rows_deleted += closed
        if staged:
            cur.execute(dialect.restamp_versions(self.target, self.staging, layout), (self._stamp(),))
            cur.execute(dialect.close_versions(self.target, self.staging, layout))
            cur.execute(dialect.insert_all(self.target, self.staging, layout))

    def _count_existing(self, staged: int, loaded: Loaded) -> None:
        """Split the ``staged`` records into updated (the target has the record) and inserted."""
        self.cursor.execute(self.dialect.count_existing(self.target, self.staging, self.plan.layout))
        existing = self.cursor.fetchone()[0]
        loaded.rows_updated, loaded.rows_inserted = existing, staged - existing

    def _stamp(self) -> Any:
        """The load's start, as this warehouse takes timestamps (a deletion's, a version's)."""
        return self.writer.timestamp_encoder()(self.metadata[0])

    def undo_committed_ddl(self) -> None:
        """After a failed load, where DDL committed, drop the table it created or the columns it
        added, so the table is as it was; where DDL is transactional the rollback already did.
        What another load has filled since (rows in the table, values in a column) stays."""
        if self.dialect.capabilities.transactional_ddl or not (self.created or self.added):
            return
        dialect = self.dialect
        if self.created:
            undo = [(self.target, dialect.any_row(self.target), dialect.drop_table(self.target))]
            if self.plan.layout.versioned:  # its view first
                undo.insert(0, (self.view, dialect.any_row(self.target), dialect.drop_view(self.view)))
        else:
            undo = [
                (
                    f"column {name} of {self.target}",
                    dialect.any_value(self.target, name),
                    dialect.drop_column(self.target, name),
                )
                for name in self.added
            ]
        for what, in_use, drop in undo:
            try:
                self.cursor.execute(in_use)
                if self.cursor.fetchone() is None:  # still empty: no other load has written to it
                    self.session.undo(self.cursor, drop)
                    log.info("Dropped %s again: this failed load had made it", what)
            except Exception:
                log.warning("Could not drop %s, which this failed load made (it is empty)", what)
        if self.added and self.plan.layout.versioned:
            try:  # the view this load made again, with the columns it added
                for statement in dialect.current_view(self.view, self.target):
                    self.session.undo(self.cursor, statement)
            except Exception:
                log.warning("Could not make %s again; rerun the load to fix it", self.view)

    # -- the table --------------------------------------------------------------------------

    def _ensure_table(self) -> None:
        """Create the schema and table, or add the catalog columns the table lacks, safely
        while other loads of the same table run.

        Two loads that both find the table (or a column) missing would both run the DDL, and
        the second fails. So a load with DDL to run, or that wants the table to itself (a
        ``replace``, or a merge into an empty table, which loads directly), first takes the
        table's lock (``try_lock``; SQLite's ``begin`` already took the database's), and then
        looks again and acts under it. Its transaction keeps the lock until commit, so the
        table stays as it was if the load fails. Another such load waits, trying again about
        every second, until the holder's transaction ends (possibly a whole load of minutes or
        hours: waiting, never failing), then looks again: usually the table is there and
        complete, and it goes on without the lock. Loads into an existing, complete, non-empty
        table take no lock and run side by side.
        """
        plan, dialect, cur = self.plan, self.dialect, self.cursor
        if plan.schema:
            schema = plan.schema

            def schema_missing() -> bool:
                return not dialect.schema_exists(cur, schema)

            create_schema = dialect.create_schema(schema)
            if (
                create_schema
                and self._claim_if(schema_missing, schema, None, f"schema {schema}")
                and schema_missing()
            ):
                cur.execute(create_schema)
        self.claimed = self._claim_if(self._needs_table_to_itself, plan.schema, plan.table, self.target)
        existing = dialect.existing_columns(cur, plan.schema, plan.table)
        if existing is None:
            log.info("Creating table %s for %s", self.target, plan.layout.spec.source)
            cur.execute(dialect.create_table(self.target, plan.layout))
            self.created = True
        else:
            for column in plan.layout.columns:
                if column.name not in existing:
                    log.warning("Adding column %s to %s (new in the catalog)", column.name, self.target)
                    cur.execute(dialect.add_column(self.target, column.name, column.type))
                    self.added.append(column.name)
        if plan.layout.versioned and (self.created or self.added):
            for statement in dialect.current_view(self.view, self.target):
                cur.execute(statement)

    def _ensure_ledger(self) -> None:
        """Create the schema's ``_clarky_fields`` where missing (``sql/fields.py``), under its lock
        like the table: once a load has new fields to note, or, where DDL commits, before rows
        go straight into the target. The last lock a load takes, so no two loads wait for each
        other in a circle."""
        fields, cur = self.fields, self.cursor
        if fields is None:
            return

        def missing() -> bool:
            return fields.missing(cur)

        if self._claim_if(missing, self.plan.schema, FIELDS_TABLE, fields.ledger) and missing():
            cur.execute(fields.create())

    def _claim_if(self, needed: Callable[[], bool], schema: str | None, table: str | None, what: str) -> bool:
        """Take the lock on ``schema``/``table`` if ``needed()``, waiting while another load
        holds it; True when this transaction holds it (and must re-check what it needs)."""
        holds = False

        def settled() -> bool:
            nonlocal holds
            if not needed():
                return True
            holds = self.session.try_lock(self.cursor, schema, table)
            return holds

        wait_until(settled, f"the lock on {what}")
        return holds

    def _needs_table_to_itself(self) -> bool:
        """Whether the load runs DDL on the table, replaces it, or may load straight into it."""
        existing = self.dialect.existing_columns(self.cursor, self.plan.schema, self.plan.table)
        if existing is None or not existing.issuperset(self.plan.layout.names):
            return True
        if self.plan.write_mode == "replace":
            return True  # two replaces at once: the second's DELETE would miss the first's rows
        return self.plan.write_mode in COMPARING and self._first_load_direct() and self._target_is_empty()

    def _first_load_direct(self) -> bool:
        """Whether the engine may stream a first load into its empty target; never a history's
        whose records carry the API's deletion flag (those must not land as current versions)."""
        layout = self.plan.layout
        if isinstance(layout, HistoryLayout) and layout.deleted_field:
            return False
        return self.dialect.capabilities.direct_first_loads

    def _direct_load_possible(self) -> bool:
        """Whether rows can go straight into the target instead of through staging.

        Appends can, where the bulk path does not commit; so can a merge or replace into an
        empty target (a table's first load), where staging and the upsert would only copy the
        same rows twice. The target is kept from other writers (readers are not blocked) so it
        stays empty until commit. Only a load that holds the table's lock (``_ensure_table``)
        does so: other loads of the table then wait for it by polling, not in a ``LOCK`` that a
        ``statement_timeout`` ends.
        """
        if self.plan.write_mode == "append":
            return self.dialect.capabilities.direct_appends
        if not self._first_load_direct() or not self.claimed or not self._target_is_empty():
            return False
        self.session.lock_empty_target(self.cursor, self.target)
        if not self._target_is_empty():  # a writer committed rows before the lock was granted
            return False
        log.info("%s is empty: loading straight into it, without a staging table", self.target)
        return True

    def _target_is_empty(self) -> bool:
        self.cursor.execute(self.dialect.any_row(self.target))
        return self.cursor.fetchone() is None

    def _newest(self) -> datetime | None:
        """The table's watermark: its newest cursor value, or None for an empty table."""
        newest = _newest(self.plan, self.dialect, self.cursor, self.target)
        if newest is None:
            log.info("%s is empty: loading the full history of %s", self.target, self.plan.layout.spec.source)
        return newest

    def _known_rows(self) -> dict[Any, int | None]:
        """Every row's key and content hash (of the plan's ``scope`` only, where it has one),
        before a full snapshot is merged in: a record whose hash is unchanged is not written.
        About 100 bytes a row in memory."""
        scope = self.plan.scope
        if scope is None:
            self.cursor.execute(self.dialect.key_hashes(self.target, self.plan.layout))
        else:
            within = (scope.column, len(scope.values))
            self.cursor.execute(self.dialect.key_hashes(self.target, self.plan.layout, within), scope.values)
        width = len(self.plan.layout.primary_key)
        if width == 1:
            return {key: digest for key, digest in self.cursor.fetchall()}
        return {tuple(row[:width]): row[width] for row in self.cursor.fetchall()}

    # -- rows -------------------------------------------------------------------------------

    def _stream(self, table: str, newest: datetime | None, known: dict[Any, int | None] | None) -> _Streamed:
        """Stream every record into ``table``; with ``known`` (the target's rows), only those
        that are new or changed (all, when this load added columns), and ``known`` keeps the
        keys that were not read. An unchanged record costs its hash, not a row."""
        plan = self.plan
        layout = plan.layout
        cursor_field = layout.spec.cursor
        streamed = _Streamed()
        encode_json, timestamp = self.writer.json_encoder(), self.writer.timestamp_encoder()
        make_row, encode = layout.row_maker(encode_json, timestamp), layout.encoder(encode_json)
        loaded_at, dag_id, run_id = self.metadata
        metadata = (timestamp(loaded_at), dag_id, run_id)
        compare = known is not None and not self.added
        absent = object()
        with self.writer.stream(table, layout, plan.batch_size) as write:
            for record in self.read(newest):
                streamed.fetched += 1
                if cursor_field is not None:
                    value = timestamp_or_none(record.get(cursor_field))
                    if value is not None and (streamed.newest is None or value > streamed.newest):
                        streamed.newest = value
                encoded = None
                if known is not None:
                    previous = known.pop(layout.record_key(record), absent)
                    if compare:
                        encoded = encode(record)
                        if previous == encoded[1]:
                            streamed.unchanged += 1
                            continue
                    if previous is not absent:
                        streamed.updated += 1
                write(make_row(record, metadata, encoded))
                streamed.written += 1
        return streamed

    def _drop_unchanged(self, staged: int) -> int:
        """Drop from staging the records whose row already holds the same content (hash), so
        the upsert writes only what changed; how many were dropped.

        A merge that is not a full snapshot (incremental: the watermark's overlap reads the
        newest rows again; an ``updated_after``, a filter, a window) stages every record it
        read; without this, the upsert would rewrite each one that is already there (its
        ``_loaded_at``, ``_dag_id``, ``_run_id``) and count it as updated. Not after this load
        added columns: every row is then written again, so the new column fills in."""
        if not staged or self.added:
            return 0
        self.cursor.execute(self.dialect.drop_unchanged(self.target, self.staging, self.plan.layout))
        self.cursor.execute(self.dialect.count_rows(self.staging))  # rowcount: -1 on DuckDB
        return int(staged - self.cursor.fetchone()[0])

    def _stage_gone(self, gone: dict[Any, int | None]) -> None:
        """The keys of the rows a full snapshot did not return, in a temporary table."""
        keys = self.plan.layout.key_columns()
        self.cursor.execute(self.dialect.create_table(self.gone, keys, temporary=True))
        with self.writer.stream(self.gone, keys, self.plan.batch_size) as write:
            for key in gone:
                write(key if isinstance(key, tuple) else (key,))

    def _apply_deletes(self, gone: dict[Any, int | None] | None) -> int:
        mode = self.plan.delete_mode
        if mode is None or self.plan.write_mode not in COMPARING:
            return 0
        if gone is None:
            log.info("delete_mode=%s skipped: only a complete snapshot shows what was deleted", mode)
            return 0
        if not gone:
            return 0
        keys = self.plan.layout.key_columns()
        if self.plan.layout.versioned:  # a history closes the current version, keeps them all
            self.cursor.execute(self.dialect.close_gone(self.target, self.gone, keys), (self._stamp(),) * 2)
        elif mode == "remove":
            self.cursor.execute(self.dialect.remove_gone(self.target, self.gone, keys))
        else:
            self.cursor.execute(self.dialect.flag_gone(self.target, self.gone, keys), (self._stamp(),))
        return max(self.cursor.rowcount, 0)

    def _loaded(self, newest: datetime | None, streamed: _Streamed) -> Loaded:
        """What the stream did (a merge's split into inserted and updated, a replace's and the
        deletes' ``rows_deleted`` are set after)."""
        watermark = max((t for t in (streamed.newest, newest) if t is not None), default=None)
        return Loaded(
            rows_fetched=streamed.fetched,
            rows_inserted=streamed.written - streamed.updated,
            rows_updated=streamed.updated,
            rows_unchanged=streamed.unchanged,
            watermark=watermark,
        )


@dataclass
class _Streamed:
    """What a stream of records did: read, written, and of those in the target, how many changed."""

    fetched: int = 0
    written: int = 0
    updated: int = 0
    unchanged: int = 0
    newest: datetime | None = None


def roll_back(connection: Any) -> None:
    """Roll back, tolerating a connection that is already gone (the server rolls back then)."""
    try:
        connection.rollback()
    except Exception:
        log.warning("Rollback failed; the database discards the open transaction with the connection")


def current_view(table: str) -> str:
    """The name of a history table's view of its current versions."""
    return f"{table}_current"
