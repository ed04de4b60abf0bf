"""ClarkyToSqlOperator: stream a Clarky resource into a warehouse table, atomically.

``execute`` is the whole story: plan (every argument checked, before any request or write:
``plan.py``) -> hooks -> load (``clarky_provider.sql.load``, one transaction, statements from
the warehouse's dialect), which asks the record source (``records.py``) for records once it
knows the table's watermark -> summary and lineage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from clarky_provider.assets import event_extra
from clarky_provider.compat import BaseOperator
from clarky_provider.exceptions import (
    ClarkyConfigError,
    ClarkyError,
    ClarkyIncompleteReadError,
    ClarkyLoadError,
)
from clarky_provider.hooks.clarky import ClarkyHook
from clarky_provider.normalize import require_timestamp
from clarky_provider.operators.arguments import check_at_least_one, check_choice
from clarky_provider.operators.columns import ColumnPolicyArguments, RecordPolice
from clarky_provider.operators.history import history_layout
from clarky_provider.operators.hooks import clarky_hook, sql_hook
from clarky_provider.operators.lineage import LoadLineage, build_lineage, column_types
from clarky_provider.operators.parent_table import check_parent_table, parents_from_table
from clarky_provider.operators.plan import Plan, ReadPlan, table_spec, window_filters
from clarky_provider.operators.records import ResourceRecords
from clarky_provider.operators.resume import ResumableRecords, load_key, warehouse_progress
from clarky_provider.operators.resync import NamedRecords, record_id_list, resync_delete_mode, resync_scope
from clarky_provider.resources import RESOURCES, get_resource
from clarky_provider.sql.dialects import WarehouseDialect, dialect_for
from clarky_provider.sql.fields import FieldLedger
from clarky_provider.sql.load import LoadPlan, load
from clarky_provider.sql.schema import TableLayout, check_identifier

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

log = logging.getLogger(__name__)

WRITE_MODES = ("merge", "append", "replace", "history")
INCREMENTAL_MODES = ("auto", "watermark", "interval", "full")
DELETE_MODES = (None, "flag", "remove")


class ClarkyToSqlOperator(ColumnPolicyArguments, BaseOperator):
    """
    Load every record of a Clarky resource into a table of any common-sql connection.

    :param resource: catalog resource name (``contacts``, ``companies``, ``contact_activities``...).
    :param sql_conn_id: a common-sql connection: PostgreSQL, SQLite, DuckDB, MySQL/MariaDB or
        Snowflake (see docs/warehouses.md); other engines get ANSI SQL with ``MERGE``, untested.
    :param table: target table (default: the resource name); created when missing. Lower case
        on PostgreSQL, where another case would answer only in quotes (see docs/warehouses.md).
    :param schema: target schema (not for SQLite); lower case on PostgreSQL too.
    :param write_mode: ``merge`` (upsert on the primary key; idempotent), ``append``,
        ``replace`` (full refresh that readers never see half-done), or ``history`` (one row per
        version of a record, ``_valid_from``/``_valid_to``/``_is_current``, and a
        ``<table>_current`` view; see docs/operators/clarky_to_sql.md#history).
    :param filters: API filters of the resource, checked against the catalog before any request.
    :param incremental: ``auto`` (watermark when the resource supports it and the mode is merge
        or history),
        ``watermark`` (the table's max cursor minus ``watermark_overlap``), ``interval`` (the
        run's data interval start) or ``full``.
    :param updated_after: explicit lower bound of an incremental read (templated): the
        ``updated_after`` filter for contacts, the parents' change signal for activities.
    :param window_start: start of a backfill window on the partition field (inclusive).
    :param window_end: end of the window (exclusive), so adjacent windows neither overlap nor gap.
    :param delete_mode: on full snapshots, ``flag`` rows missing upstream with ``_deleted_at``, or
        ``remove`` them; ``None`` leaves them. A history closes their current version (``flag``).
    :param batch_size: rows per bulk write (an Arrow batch, a ``LOAD DATA`` file of at most
        2,000, an ``executemany``; PostgreSQL streams rows into ``COPY``, Snowflake stages at
        least 50,000 at a time); bounds memory.
    :param progress_interval: seconds between progress lines in the task log.
    :param clarky_hook_params: this task's overrides of the Clarky connection's extras, e.g.
        ``{"max_concurrency": 2, "page_size": 50}``; an unknown name is an error.
    :param sql_hook_params: arguments of the warehouse connection's hook, e.g. Snowflake's
        ``{"warehouse": "LOAD_WH", "role": "LOADER"}``; an unknown name is an error.
    :param record_ids: re-sync exactly these records (templated; a list, or ids separated by
        commas or spaces): one request each (for a child resource, the ids are parents' and each
        parent's whole list is read), merged in; a named row the API no longer has is removed
        (``delete_mode="flag"`` flags it; a history closes it); every other row is untouched.
        At most 1,000; not with filters, windows or ``updated_after``.
    :param parent_table: the table this DAG loads the resource's parents into, in full and
        upstream of this task (same connection and schema; templated), for ``contact_activities``
        and ``conversation_messages``: an incremental run then reads only the lists of the
        parents whose change signal there is newer than their newest child here, and no page of
        the parents' list (see docs/operators/clarky_to_sql.md#parent-table).
    :param recheck_fraction: share of a child resource's parents whose lists an incremental run
        re-reads whole, a different slice each day (``1/7``: every parent once a week), so what
        the parents' change signal misses (an edited child) heals; 0 (the default) is off. Costs
        about that share of the parents' lists (the bill; the summary's ``parents_rechecked``
        and ``recheck_requests``).
    :param resume_key: the identity of a load across tries, for use outside Airflow (in a task,
        the task instance is: Airflow's next try of a killed load of a child resource or of a long
        contacts read reads only what the killed try had not finished; see docs/reliability.md).
    :param resume_max_age: progress of a load of this table that was never resumed is removed
        once this old (or by the next successful load of the table).
    :param columns: load only these fields (plus the key and the cursor), in columns and ``_raw``
        (templated; see docs/privacy.md).
    :param exclude_columns: fields, or paths such as ``custom_fields.ssn``, that are never written:
        no column, not in ``_raw`` (templated).
    :param hash_columns: fields or paths written as HMAC-SHA-256 under the key of
        ``hash_key_conn_id``: their columns, ``_raw`` and derived columns (templated).
    :param hash_key_conn_id: the Airflow connection whose password is the hashing key (templated).
    :param on_new_field: a field the catalog does not know yet is kept in ``_raw`` (``raw``) or
        dropped (``drop``); either way listed once in the summary's ``new_fields``, and warned
        about in the log when it first appears in the table (the schema's ``_clarky_fields``).
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
        "record_ids",
        "parent_table",
        "recheck_fraction",
        *ColumnPolicyArguments.COLUMN_POLICY_FIELDS,
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
        record_ids: list[str] | str | None = None,
        parent_table: str | None = None,
        recheck_fraction: float | str = 0,
        batch_size: int = 5000,
        progress_interval: float = 30.0,
        clarky_hook_params: dict[str, Any] | None = None,
        sql_hook_params: dict[str, Any] | None = None,
        resume_key: str | None = None,
        resume_max_age: timedelta = timedelta(days=7),
        columns: list[str] | None = None,
        exclude_columns: list[str] | None = None,
        hash_columns: list[str] | None = None,
        hash_key_conn_id: str | None = None,
        on_new_field: str = "raw",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.set_column_policy(columns, exclude_columns, hash_columns, hash_key_conn_id, on_new_field)
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
        self.record_ids = record_ids
        self.parent_table = parent_table
        self.recheck_fraction = recheck_fraction
        self.batch_size = batch_size
        self.progress_interval = progress_interval
        self.clarky_hook_params = clarky_hook_params
        self.sql_hook_params = sql_hook_params
        self.resume_key = resume_key
        self.resume_max_age = resume_max_age
        self._lineage: LoadLineage | None = None

    # -- planning (no I/O) ------------------------------------------------------------------

    def plan(self, context: Context | dict[str, Any]) -> Plan:
        """Validate the rendered arguments; raises ``ClarkyConfigError`` before any request or write."""
        resource = get_resource(self.resource)
        table = check_identifier(self.table or resource.name, "Table name")
        schema = check_identifier(self.schema, "Schema name") if self.schema else None
        user_filters = dict(self.filters or {})
        window = window_filters(resource, self.window_start, self.window_end)
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
            and resource.incremental_filter not in user_filters
            and not window
            and (mode == "watermark" or (mode == "auto" and self.write_mode in ("merge", "history")))
        )
        policy = self.column_policy(resource)
        spec = table_spec(resource, policy)
        layout = (
            history_layout(resource, spec, table, self.delete_mode)
            if self.write_mode == "history"
            else TableLayout(spec)
        )
        ids = record_id_list(self.record_ids)
        # what else chooses the records to read, which a re-sync or a parents' table excludes
        chosen = {
            "filters": user_filters,
            "window_start/window_end": window,
            "updated_after": self.updated_after,
        }
        set_too = {**chosen, f"incremental={mode!r}": mode in ("watermark", "interval")}
        scope = (
            resync_scope(resource, layout, ids, self.write_mode, [name for name, v in set_too.items() if v])
            if ids is not None
            else None
        )
        parents_too = {**chosen, "record_ids": ids, f"incremental={mode!r}": mode in ("interval", "full")}
        parent_table = (
            check_parent_table(
                resource,
                self.parent_table,
                layout,
                self.write_mode,
                [name for name, v in parents_too.items() if v],
            )
            if self.parent_table
            else None
        )
        read = ReadPlan(  # checks and encodes every filter, before any request
            resource=resource,
            filters={**user_filters, **window},
            updated_after=updated_after,
            watermark_overlap=self.watermark_overlap,
            recheck_fraction=self.recheck_fraction,
            recheck_day=context.get("data_interval_start") or context.get("logical_date"),
        )
        return Plan(
            read=read,
            load=LoadPlan(
                layout=layout,
                schema=schema,
                table=table,
                write_mode=self.write_mode,
                delete_mode=resync_delete_mode(self.delete_mode, self.write_mode)
                if scope
                else self.delete_mode,
                full_snapshot=scope is not None or not (read.filters or updated_after or use_watermark),
                incremental=use_watermark and scope is None,
                batch_size=self.batch_size,
                scope=scope,
            ),
            columns=policy,
            parent_table=parent_table,
        )

    # -- execution --------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        started = time.monotonic()
        plan = self.plan(context)
        resource, table = plan.read.resource, plan.load.table
        # reads the hashing key, before any request; new fields are warned about once per table
        police = self.record_police(plan.columns, warn_new_fields=False)
        clarky = clarky_hook(self.clarky_conn_id, self.clarky_hook_params)
        _ = clarky.settings  # a bad key fails here, before the database is touched
        warehouse = sql_hook(self.sql_conn_id, self.sql_hook_params)
        dialect = dialect_for(warehouse)
        if plan.load.schema and dialect.create_schema(plan.load.schema) is None:
            raise ClarkyConfigError(
                f"{dialect.name} has no schemas; leave schema unset (got {plan.load.schema!r})."
            )
        # what only the engine can judge (its case folding), still before any request or write
        dialect.check_case(table, "table")
        if plan.load.schema:
            dialect.check_case(plan.load.schema, "schema")
        if plan.parent_table:
            dialect.check_case(plan.parent_table, "table")
            plan = parents_from_table(plan, dialect, plan.parent_table, self.delete_mode, clarky.stats)
        dag_run = context.get("dag_run")
        metadata = (
            datetime.now(timezone.utc),
            getattr(dag_run, "dag_id", None),
            getattr(dag_run, "run_id", None),
        )
        records = self._record_source(context, clarky, plan, dialect, police)
        fields = FieldLedger(dialect, plan.load.schema, table, lambda: police.new_fields)
        try:
            records.prepare()  # a resumable load reads here, keeping each unit as it ends
            connection = dialect.session.connect()
            try:
                loaded = load(
                    plan.load, dialect, connection, records, metadata, finish=records.finish, fields=fields
                )
            finally:
                _close(dialect, connection)
        except ClarkyIncompleteReadError as exc:
            raise exc.with_consequence(plan.load.partial_load_consequence()) from None
        except ClarkyError:
            raise
        except Exception as exc:
            state = (
                "the table is as it was"
                if dialect.capabilities.transactional_ddl
                else "the table's rows are as they were"
            )
            raise ClarkyLoadError(
                f"Loading Clarky {resource.name} into {table} failed in the database "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:500]}); the transaction was rolled back and "
                f"{state} before this run."
            ) from exc
        finally:
            records.close()
            clarky.close()
        police.warn(fields.first_seen, f" (new in table {table})")
        self._lineage = LoadLineage(
            api_base_url=clarky.settings.base_url,
            workspace_id=records.workspace_id,
            resource=resource.name,
            sql_conn_id=self.sql_conn_id,
            schema=plan.load.schema,
            table=table,
            columns=column_types(dialect, plan.load.layout),
            rows=loaded.rows_fetched,
        )
        summary = {
            "resource": resource.name,
            "table": table,
            "write_mode": self.write_mode,
            "filters": records.filters,
            **asdict(loaded),
            "watermark": loaded.watermark.isoformat() if loaded.watermark else None,
            **clarky.stats.load_summary(loaded.rows_fetched, earlier_records=records.earlier_records),
            "new_fields": police.new_fields,
            **({"records_not_found": records.missing} if isinstance(records, NamedRecords) else {}),
            "duration_seconds": round(time.monotonic() - started, 3),
        }
        log.info("Loaded Clarky %s into %s: %s", resource.name, table, summary)
        self._annotate_outlets(context, summary)
        return summary

    def _record_source(
        self,
        context: Context,
        clarky: ClarkyHook,
        plan: Plan,
        dialect: WarehouseDialect,
        police: RecordPolice,
    ) -> ResourceRecords:
        """Records streamed into the load, or, for a resumable resource in a task (or with a
        ``resume_key``), read first and kept unit by unit, so the next try resumes."""
        if plan.load.scope is not None:
            return NamedRecords(clarky, plan.read, plan.load.scope, police, plan.parent_table)
        key = load_key(context, self.resume_key)
        if key is None or not plan.read.resource.resumable:
            return ResourceRecords(clarky, plan.read, self.progress_interval, police)
        progress, newest = warehouse_progress(dialect, plan.load, key, self.resume_max_age.total_seconds())
        return ResumableRecords(
            clarky,
            plan.read,
            progress=progress,
            newest=newest,
            progress_interval=self.progress_interval,
            police=police,
        )

    def _annotate_outlets(self, context: Context, summary: dict[str, Any]) -> None:
        """Row counts, the watermark and the new fields ride on this task's asset events (``outlets``)."""
        from clarky_provider.compat import Asset

        events = context.get("outlet_events")
        if events is None:
            return
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                events[outlet].extra.update(event_extra(summary), new_fields=summary["new_fields"])

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """The Clarky resource as input, the warehouse table (schema, row count) as output."""
        return build_lineage(self._lineage) if self._lineage is not None else None


def _close(dialect: WarehouseDialect, connection: Any) -> None:
    try:
        dialect.session.close(connection)
    except Exception:
        log.debug("Closing the database connection failed", exc_info=True)
