"""ClarkyToSqlOperator: stream a Clarky resource into a warehouse table, atomically.

Records stream into a temporary staging table (one ``COPY`` on PostgreSQL), and the target
is only touched at the end, inside the same single transaction; an empty target takes the
stream directly. A failure anywhere leaves the target exactly as it was, and a retry converges
on the same table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from clarky_provider.assets import event_extra
from clarky_provider.compat import BaseHook, BaseOperator
from clarky_provider.exceptions import (
    ClarkyConfigError,
    ClarkyError,
    ClarkyIncompleteReadError,
    ClarkyLoadError,
)
from clarky_provider.hooks.clarky import ClarkyHook
from clarky_provider.hooks.progress import ProgressLog
from clarky_provider.normalize import minus_one_millisecond, parse_timestamp, require_timestamp
from clarky_provider.operators.arguments import check_at_least_one, check_choice
from clarky_provider.operators.lineage import LoadLineage, build_lineage, column_types
from clarky_provider.resources import RESOURCES, Resource, encode_filters, get_resource
from clarky_provider.sql.dialects import SqlDialect, dialect_for, wait_until
from clarky_provider.sql.schema import TableLayout, check_identifier

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

log = logging.getLogger(__name__)

WRITE_MODES = ("merge", "append", "replace")
INCREMENTAL_MODES = ("auto", "watermark", "interval", "full")
DELETE_MODES = (None, "flag", "remove")


@dataclass(frozen=True)
class LoadPlan:
    """Everything validated before the first request or write."""

    resource: Resource
    layout: TableLayout
    schema: str | None
    table: str
    user_filters: dict[str, Any]
    window_filters: dict[str, Any]
    updated_after: datetime | None
    use_watermark: bool

    @property
    def is_full_snapshot(self) -> bool:
        return not (self.user_filters or self.window_filters or self.updated_after or self.use_watermark)


class ClarkyToSqlOperator(BaseOperator):
    """
    Load every record of a Clarky resource into a table of any common-sql connection.

    :param resource: catalog resource name (``contacts``, ``companies``, ``contact_activities``...).
    :param sql_conn_id: a common-sql connection (PostgreSQL, SQLite, Snowflake, ...).
    :param table: target table (default: the resource name); created when missing.
    :param schema: target schema (not for SQLite).
    :param write_mode: ``merge`` (upsert on the primary key; idempotent), ``append``, or
        ``replace`` (full refresh that readers never see half-done).
    :param filters: API filters of the resource, checked against the catalog before any request.
    :param incremental: ``auto`` (watermark when the resource supports it and the mode is merge),
        ``watermark`` (the table's max cursor minus ``watermark_overlap``), ``interval`` (the
        run's data interval start) or ``full``.
    :param updated_after: explicit lower bound of an incremental read (templated): the
        ``updated_after`` filter for contacts, the parents' change signal for activities.
    :param window_start: start of a backfill window on the partition field (inclusive).
    :param window_end: end of the window (exclusive), so adjacent windows neither overlap nor gap.
    :param delete_mode: on full snapshots, ``flag`` rows missing upstream with ``_deleted_at``, or
        ``remove`` them; ``None`` leaves them.
    :param batch_size: rows per ``executemany`` on warehouses without a bulk path (PostgreSQL
        streams rows into ``COPY``); bounds memory.
    :param progress_interval: seconds between progress lines in the task log.
    """

    template_fields: Sequence[str] = (
        "resource",
        "sql_conn_id",
        "clarky_conn_id",
        "table",
        "schema",
        "filters",
        "updated_after",
        "window_start",
        "window_end",
    )
    template_fields_renderers = {"filters": "json"}
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        resource: str,
        sql_conn_id: str,
        table: str | None = None,
        schema: str | None = None,
        write_mode: str = "merge",
        filters: dict[str, Any] | None = None,
        clarky_conn_id: str = ClarkyHook.default_conn_name,
        incremental: str = "auto",
        updated_after: str | datetime | None = None,
        watermark_overlap: timedelta = timedelta(minutes=5),
        window_start: str | datetime | None = None,
        window_end: str | datetime | None = None,
        delete_mode: str | None = None,
        batch_size: int = 5000,
        progress_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choice("write_mode", write_mode, WRITE_MODES)
        check_choice("incremental", incremental, INCREMENTAL_MODES)
        check_choice("delete_mode", delete_mode, DELETE_MODES)
        check_at_least_one("batch_size", batch_size)
        self.resource = resource
        self.sql_conn_id = sql_conn_id
        self.clarky_conn_id = clarky_conn_id
        self.table = table
        self.schema = schema
        self.write_mode = write_mode
        self.filters = filters
        self.incremental = incremental
        self.updated_after = updated_after
        self.watermark_overlap = watermark_overlap
        self.window_start = window_start
        self.window_end = window_end
        self.delete_mode = delete_mode
        self.batch_size = batch_size
        self.progress_interval = progress_interval
        self._lineage: LoadLineage | None = None

    # -- planning (no I/O) ------------------------------------------------------------------

    def plan(self, context: Context | dict[str, Any]) -> LoadPlan:
        """Validate the rendered arguments; raises ``ClarkyConfigError`` before any request or write."""
        resource = get_resource(self.resource)
        table = check_identifier(self.table or resource.name, "Table name")
        schema = check_identifier(self.schema, "Schema name") if self.schema else None
        user_filters = dict(self.filters or {})
        window_filters = self._window_filters(resource)
        cursor_filter = resource.incremental_filter
        mode = self.incremental
        if mode in ("watermark", "interval") and not resource.incremental:
            incremental = ", ".join(sorted(r.name for r in RESOURCES.values() if r.incremental))
            raise ClarkyConfigError(
                f"incremental={mode!r} needs a resource that can be read incrementally; {resource.name!r} "
                f"cannot ({incremental} can). Use incremental='full' with write_mode='merge'."
            )
        explicit = self.updated_after or (context.get("data_interval_start") if mode == "interval" else None)
        updated_after = require_timestamp(explicit, "updated_after") if explicit else None
        if mode == "interval" and updated_after is None:
            raise ClarkyConfigError(
                "incremental='interval' needs a data interval; pass updated_after instead."
            )
        use_watermark = (
            updated_after is None
            and resource.incremental
            and cursor_filter not in user_filters
            and not window_filters
            and (mode == "watermark" or (mode == "auto" and self.write_mode == "merge"))
        )
        plan = LoadPlan(
            resource,
            TableLayout(resource),
            schema,
            table,
            user_filters,
            window_filters,
            updated_after,
            use_watermark,
        )
        encode_filters(resource, self._api_filters(plan, None))  # every filter, before any request
        return plan

    def _window_filters(self, resource: Resource) -> dict[str, Any]:
        if self.window_start is None and self.window_end is None:
            return {}
        if resource.partition_filters is None:
            raise ClarkyConfigError(
                f"Backfill windows need a resource with created_after/created_before filters; {resource.name!r} has none."
            )
        after, before = resource.partition_filters
        window: dict[str, Any] = {}
        start = require_timestamp(self.window_start, "window_start") if self.window_start else None
        end = require_timestamp(self.window_end, "window_end") if self.window_end else None
        if start and end and start >= end:
            raise ClarkyConfigError(
                f"window_start ({start.isoformat()}) must be before window_end ({end.isoformat()})."
            )
        if start:
            window[after] = start
        if end:
            window[before] = minus_one_millisecond(end)  # the API's bound is inclusive; ours is exclusive
        return window

    @staticmethod
    def _api_filters(plan: LoadPlan, watermark: datetime | None) -> dict[str, Any]:
        filters = {**plan.user_filters, **plan.window_filters}
        lower = plan.updated_after or watermark
        if lower is not None and plan.resource.incremental_filter:
            filters[plan.resource.incremental_filter] = lower
        return filters

    @staticmethod
    def _read_options(plan: LoadPlan, watermark: datetime | None) -> dict[str, Any]:
        """Hook arguments beyond API filters: the lower bound of a child resource's incremental read."""
        lower = plan.updated_after or watermark
        if lower is not None and plan.resource.parent_change_fields:
            return {"changed_since": lower}
        return {}

    # -- execution --------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        started = time.monotonic()
        plan = self.plan(context)
        clarky = ClarkyHook(self.clarky_conn_id)
        _ = clarky.settings  # a bad key fails here, before the database is touched
        sql_hook = self._sql_hook()
        dialect = dialect_for(sql_hook.conn_type)
        if plan.schema and dialect.create_schema(plan.schema) is None:
            raise ClarkyConfigError(
                f"{dialect.name} has no schemas; leave schema unset (got {plan.schema!r})."
            )
        dag_run = context.get("dag_run")
        metadata = (
            datetime.now(timezone.utc),
            getattr(dag_run, "dag_id", None),
            getattr(dag_run, "run_id", None),
        )
        connection = sql_hook.get_conn()
        try:
            dialect.begin(connection)
            cursor = connection.cursor()
            summary = _Load(self, plan, dialect, cursor, clarky, metadata).run()
            connection.commit()
        except ClarkyIncompleteReadError as exc:
            _rollback(connection)
            raise exc.with_consequence(self._unsafe_partial_load(plan)) from None
        except ClarkyError:
            _rollback(connection)
            raise
        except Exception as exc:
            _rollback(connection)
            raise ClarkyLoadError(
                f"Loading Clarky {plan.resource.name} into {plan.table} failed in the database "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:500]}); the transaction was rolled back and "
                "the table is as it was before this run."
            ) from exc
        except BaseException:
            _rollback(connection)
            raise
        finally:
            _close(connection)
            clarky.close()
        self._lineage = LoadLineage(
            api_base_url=clarky.settings.base_url,
            workspace_id=summary.pop("workspace_id"),
            resource=plan.resource.name,
            sql_conn_id=self.sql_conn_id,
            schema=plan.schema,
            table=plan.table,
            columns=column_types(dialect, plan.layout),
            rows=summary["rows_fetched"],
        )
        summary.update(
            clarky.stats.load_summary(summary["rows_fetched"]),
            duration_seconds=round(time.monotonic() - started, 3),
        )
        log.info("Loaded Clarky %s into %s: %s", plan.resource.name, plan.table, summary)
        self._annotate_outlets(context, summary)
        return summary

    def _unsafe_partial_load(self, plan: LoadPlan) -> str:
        """What landing a partial read would have done to the table, for the error message."""
        outcome = f"Nothing was written: {plan.table} is exactly as it was."
        if self.write_mode == "replace":
            return (
                f"{outcome} A partial replace would not have been safe: it drops the rows that were not read."
            )
        if self.write_mode == "merge" and self.delete_mode and plan.is_full_snapshot:
            return (
                f"{outcome} A partial merge would not have been safe: delete_mode={self.delete_mode!r} would "
                "have marked every record that was not read as deleted."
            )
        return (
            f"{outcome} A {self.write_mode} of the records read would have been safe (rows not read stay "
            "as they are), but a load never lands a partial read as if it were complete."
        )

    def _annotate_outlets(self, context: Context, summary: dict[str, Any]) -> None:
        """Row counts and the watermark ride on this task's asset events (``outlets``)."""
        from clarky_provider.compat import Asset

        events = context.get("outlet_events")
        if events is None:
            return
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                events[outlet].extra.update(event_extra(summary))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """The Clarky resource as input, the warehouse table (schema, row count) as output."""
        return build_lineage(self._lineage) if self._lineage is not None else None

    def _sql_hook(self) -> DbApiHook:
        from airflow.providers.common.sql.hooks.sql import DbApiHook

        hook = BaseHook.get_connection(self.sql_conn_id).get_hook()
        if not isinstance(hook, DbApiHook):
            raise ClarkyConfigError(
                f"Connection {self.sql_conn_id!r} is not a SQL connection (its hook is {type(hook).__name__}); "
                "use a common-sql connection such as postgres, sqlite or snowflake."
            )
        return hook


class _Load:
    """One load inside one open transaction."""

    def __init__(
        self,
        operator: ClarkyToSqlOperator,
        plan: LoadPlan,
        dialect: SqlDialect,
        cursor: Any,
        clarky: ClarkyHook,
        metadata: tuple[datetime, str | None, str | None],
    ) -> None:
        self.op, self.plan, self.dialect, self.cursor, self.clarky = operator, plan, dialect, cursor, clarky
        self.metadata = metadata
        self.target = dialect.qualified(plan.schema, plan.table)
        self.staging = dialect.quote(f"_clarky_stage_{plan.table}")
        self.claimed = False  # whether this transaction holds the table's lock (see _ensure_table)

    def run(self) -> dict[str, Any]:
        plan, layout, dialect, cur = self.plan, self.plan.layout, self.dialect, self.cursor
        self._ensure_table()
        watermark = self._watermark() if plan.use_watermark else None
        filters = {**self.op._api_filters(plan, watermark), **self.op._read_options(plan, watermark)}
        if self._direct_load_possible():
            return self._summary(filters, watermark, *self._stream(self.target, filters))
        cur.execute(dialect.create_table(self.staging, layout, temporary=True))
        fetched, newest, workspace_id = self._stream(self.staging, filters)
        summary = self._summary(filters, watermark, fetched, newest, workspace_id)
        if self.op.write_mode == "merge":
            cur.execute(dialect.count_existing(self.target, self.staging, layout))
            existing = cur.fetchone()[0]
            cur.execute(dialect.upsert(self.target, self.staging, layout))
            summary.update(rows_updated=existing, rows_inserted=fetched - existing)
        else:
            cur.execute(dialect.count_rows(self.target))
            summary["rows_deleted"] = cur.fetchone()[0]
            cur.execute(dialect.delete_all(self.target))
            cur.execute(dialect.insert_all(self.target, self.staging, layout))
        summary["rows_deleted"] += self._detect_deletes()
        cur.execute(dialect.drop_table(self.staging))
        return summary

    def _direct_load_possible(self) -> bool:
        """Whether rows can go straight into the target instead of through staging.

        Appends always can; so can a merge or replace into an empty target (a table's first
        load), where staging and the upsert would only copy the same rows twice. The target is
        locked against other writers (readers are not blocked) so it stays empty until commit.
        Only a load that holds the table's lock (``_ensure_table``) does so: other loads of the
        table then wait for it by polling, not in a ``LOCK`` that a ``statement_timeout`` ends.
        """
        if self.op.write_mode == "append":
            return True
        lock = self.dialect.lock_for_direct_load(self.target)
        if lock is None or not self.claimed or not self._target_is_empty():
            return False
        self.cursor.execute(lock)
        if not self._target_is_empty():  # a writer committed rows before the lock was granted
            return False
        log.info("%s is empty: loading straight into it, without a staging table", self.target)
        return True

    def _target_is_empty(self) -> bool:
        self.cursor.execute(self.dialect.any_row(self.target))
        return self.cursor.fetchone() is None

    def _summary(
        self,
        filters: dict[str, Any],
        watermark: datetime | None,
        fetched: int,
        newest: datetime | None,
        workspace_id: str | None,
    ) -> dict[str, Any]:
        """The run's XCom summary as if every fetched row was inserted (merge and replace correct it)."""
        previous = watermark + self.op.watermark_overlap if watermark else None
        best = max((t for t in (newest, previous) if t is not None), default=None)
        return {
            "resource": self.plan.resource.name,
            "table": self.plan.table,
            "write_mode": self.op.write_mode,
            "filters": {k: v.isoformat() if isinstance(v, datetime) else v for k, v in filters.items()},
            "rows_fetched": fetched,
            "rows_inserted": fetched,
            "rows_updated": 0,
            "rows_deleted": 0,
            "watermark": best.isoformat() if best else None,
            "workspace_id": workspace_id,
        }

    def _ensure_table(self) -> None:
        """Create the schema and table, or add the catalog columns the table lacks, safely
        while other loads of the same table run.

        Two loads that both find the table (or a column) missing would both run the DDL, and
        the second fails. So a load with DDL to run, or that wants the table to itself (a
        ``replace``, or a merge into an empty table, which loads directly), first takes the
        table's lock (``SqlDialect.try_lock``; SQLite's ``begin`` already took the database's),
        and then looks again and acts under it. Its transaction keeps the lock until commit,
        so the table stays as it was if the load fails. Another such load waits, trying again
        about every second, until the holder's transaction ends (possibly a whole load of
        minutes or hours: waiting, never failing), then looks again: usually the table is
        there and complete, and it goes on without the lock. Loads into an existing, complete,
        non-empty table take no lock and run side by side as before.
        """
        plan, dialect, cur = self.plan, self.dialect, self.cursor
        if plan.schema:
            schema = plan.schema

            def schema_missing() -> bool:
                return not dialect.schema_exists(cur, schema)

            if self._claim_if(schema_missing, schema, None, f"schema {schema}") and schema_missing():
                cur.execute(dialect.create_schema(schema))
        self.claimed = self._claim_if(self._needs_table_to_itself, plan.schema, plan.table, self.target)
        existing = dialect.existing_columns(cur, plan.schema, plan.table)
        if existing is None:
            log.info("Creating table %s for Clarky %s", self.target, plan.resource.name)
            cur.execute(dialect.create_table(self.target, plan.layout))
            return
        for column in plan.layout.columns:
            if column.name not in existing:
                log.warning("Adding column %s to %s (new in the catalog)", column.name, self.target)
                cur.execute(dialect.add_column(self.target, column.name, column.type))

    def _claim_if(self, needed: Callable[[], bool], schema: str | None, table: str | None, what: str) -> bool:
        """Take the lock on ``schema``/``table`` if ``needed()``, waiting while another load
        holds it; True when this transaction holds it (and must re-check what it needs)."""
        holds = False

        def settled() -> bool:
            nonlocal holds
            if not needed():
                return True
            holds = self.dialect.try_lock(self.cursor, schema, table)
            return holds

        wait_until(settled, f"the lock on {what}")
        return holds

    def _needs_table_to_itself(self) -> bool:
        """Whether the load runs DDL on the table, replaces it, or may load straight into it."""
        existing = self.dialect.existing_columns(self.cursor, self.plan.schema, self.plan.table)
        if existing is None or not existing.issuperset(self.plan.layout.names):
            return True
        if self.op.write_mode == "replace":
            return True  # two replaces at once: the second's DELETE would miss the first's rows
        return (
            self.op.write_mode == "merge"
            and self.dialect.lock_for_direct_load(self.target) is not None
            and self._target_is_empty()
        )

    def _watermark(self) -> datetime | None:
        """The table's newest cursor value minus the safety overlap, or None for an empty table."""
        cursor_field = self.plan.resource.cursor_field or ""
        self.cursor.execute(self.dialect.newest(self.target, cursor_field))
        newest = parse_timestamp(self.cursor.fetchone()[0])
        if newest is None:
            log.info("%s is empty: loading the full history of %s", self.target, self.plan.resource.name)
            return None
        lower = newest - self.op.watermark_overlap
        log.info(
            "Incremental load of %s: %s from %s",
            self.plan.resource.name,
            self.plan.resource.incremental_filter or "parents changed",
            lower.isoformat(),
        )
        return lower

    def _stream(self, table: str, filters: dict[str, Any]) -> tuple[int, datetime | None, str | None]:
        """Stream every record into ``table``; returns (rows, newest cursor value, workspace id).

        ``filters`` are the hook's ``paginate`` arguments: API filters and ``changed_since``.
        """
        layout = self.plan.layout
        cursor_field = self.plan.resource.cursor_field
        cursor_index = layout.names.index(cursor_field) if cursor_field else None
        fetched = 0
        newest: datetime | None = None
        workspace_id: str | None = None
        progress = ProgressLog(self.plan.resource.name, self.clarky.stats, self.op.progress_interval)
        records = self.clarky.paginate(self.plan.resource.name, on_page=progress.page, **filters)
        make_row = layout.row_maker(self.dialect.json_encoder(self.cursor))
        with self.dialect.row_writer(self.cursor, table, layout, self.op.batch_size) as write:
            for record in records:
                row = make_row(record, self.metadata)
                if cursor_index is not None:
                    value = row[cursor_index]
                    if value is not None and (newest is None or value > newest):
                        newest = value
                if workspace_id is None:
                    workspace_id = record.get("workspace_id")
                write(row)
                fetched += 1
        progress.finish()
        return fetched, newest, workspace_id

    def _detect_deletes(self) -> int:
        mode = self.op.delete_mode
        if mode is None or self.op.write_mode != "merge":
            return 0
        if not self.plan.is_full_snapshot:
            log.info("delete_mode=%s skipped: only a complete snapshot shows what was deleted", mode)
            return 0
        target, staging, layout = self.target, self.staging, self.plan.layout
        if mode == "remove":
            self.cursor.execute(self.dialect.remove_missing(target, staging, layout))
        else:
            stamp = self.dialect.timestamp_value(self.metadata[0])
            self.cursor.execute(self.dialect.flag_missing(target, staging, layout), (stamp,))
        return max(self.cursor.rowcount, 0)


def _rollback(connection: Any) -> None:
    """Roll back, tolerating a connection that is already gone (the server rolls back then)."""
    try:
        connection.rollback()
    except Exception:
        log.warning("Rollback failed; the database discards the open transaction with the connection")


def _close(connection: Any) -> None:
    try:
        connection.close()
    except Exception:
        log.debug("Closing the database connection failed", exc_info=True)
