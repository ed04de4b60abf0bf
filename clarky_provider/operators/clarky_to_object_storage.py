"""ClarkyToObjectStorageOperator: a Clarky resource as part files in any object store.

The staging step for warehouse bulk loads (Snowflake ``COPY INTO``, BigQuery load jobs):
newline-delimited JSON of the records as the API returns them (after the column policy:
``columns.py``), or Parquet with the catalog's typed columns. Records stream into part files of bounded size under a temporary
prefix; only when every part is written are they moved into place and ``_SUCCESS`` is written,
so readers never pick up a half-written export, and a failed run leaves the destination as it was.

A resumable resource's export in a task (or with a ``resume_key``) reads first and keeps each
unit (a parent's list, a created-time window of contacts) under the destination as it finishes (``export_progress.py``), so Airflow's next
try of a killed export reads only the rest; the progress goes once the parts are published.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from clarky_provider.compat import BaseOperator, ObjectStoragePath
from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.hooks.clarky import ClarkyHook
from clarky_provider.jsoncodec import dumps
from clarky_provider.operators.arguments import check_at_least_one, check_choice
from clarky_provider.operators.columns import ColumnPolicyArguments, RecordPolice
from clarky_provider.operators.export_progress import ExportProgress, remove_progress
from clarky_provider.operators.hooks import clarky_hook
from clarky_provider.operators.plan import ReadPlan, table_spec
from clarky_provider.operators.records import ResourceRecords
from clarky_provider.operators.resume import ResumableRecords, load_key
from clarky_provider.resources import get_resource
from clarky_provider.sql.arrow import arrow_schema
from clarky_provider.sql.schema import TableLayout

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

FORMATS = {"jsonl": ".jsonl", "parquet": ".parquet"}
SUCCESS_MARKER = "_SUCCESS"


class ClarkyToObjectStorageOperator(ColumnPolicyArguments, BaseOperator):
    """
    Export a Clarky resource to ``path`` (any ``ObjectStoragePath``: ``file://``, ``s3://``, ``gs://``...).

    :param resource: catalog resource name.
    :param path: destination prefix; part files ``part-00000.jsonl`` ... and ``_SUCCESS`` land there,
        replacing an earlier export's parts (templated, e.g. ``s3://bucket/clarky/contacts/{{ ds }}/``).
    :param format: ``jsonl`` (records as the API returns them) or ``parquet`` (typed columns plus
        ``_raw``; needs ``pyarrow``: ``pip install "airflow-provider-clarky[parquet]"``).
    :param filters: API filters, checked against the catalog (templated).
    :param records_per_file: records per part file (bounds memory and file size).
    :param clarky_hook_params: this task's overrides of the Clarky connection's extras, e.g.
        ``{"max_concurrency": 2}``; an unknown name is an error.
    :param resume_key: the identity of an export across tries, for use outside Airflow (in a task,
        the task instance is: Airflow's next try of a killed export of a child resource or of a long
        contacts read reads only what the killed try had not finished; see docs/operators/clarky_to_object_storage.md).
    :param resume_max_age: progress of an export to this destination that was never resumed is
        removed once this old (or by the next successful export to the destination).
    :param columns: export only these fields (plus the key and the cursor) (templated; see
        docs/privacy.md).
    :param exclude_columns: fields, or paths such as ``custom_fields.ssn``, never written (templated).
    :param hash_columns: fields or paths written as HMAC-SHA-256 under the key of
        ``hash_key_conn_id`` (templated).
    :param hash_key_conn_id: the Airflow connection whose password is the hashing key (templated).
    :param on_new_field: a field the catalog does not know yet is kept (``raw``) or dropped
        (``drop``); either way listed once in the summary's ``new_fields``.
    """

    template_fields: Sequence[str] = (
        "resource",
        "path",
        "filters",
        "clarky_conn_id",
        *ColumnPolicyArguments.COLUMN_POLICY_FIELDS,
    )
    template_fields_renderers = {"filters": "json"}

    def __init__(
        self,
        *,
        resource: str,
        path: str | ObjectStoragePath,
        format: str = "jsonl",
        filters: dict[str, Any] | None = None,
        clarky_conn_id: str = ClarkyHook.default_conn_name,
        records_per_file: int = 50_000,
        clarky_hook_params: dict[str, Any] | None = None,
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
        check_choice("format", format, FORMATS)
        check_at_least_one("records_per_file", records_per_file)
        self.resource = resource
        self.path = path
        self.format = format
        self.filters = filters
        self.clarky_conn_id = clarky_conn_id
        self.records_per_file = records_per_file
        self.clarky_hook_params = clarky_hook_params
        self.resume_key = resume_key
        self.resume_max_age = resume_max_age

    def execute(self, context: Context) -> dict[str, Any]:
        started, started_at = time.monotonic(), time.time()
        resource = get_resource(self.resource)
        read = ReadPlan(resource, dict(self.filters or {}))  # bad filters fail before any request or write
        policy = self.column_policy(resource)  # so do unknown column names
        if self.format == "parquet":
            _require_pyarrow()
        destination = ObjectStoragePath(self.path)
        staging = destination / f".clarky-tmp-{uuid.uuid4().hex}"
        police = self.record_police(policy)  # reads the hashing key, before any request
        hook = clarky_hook(self.clarky_conn_id, self.clarky_hook_params)
        layout = TableLayout(table_spec(resource, policy))
        key = load_key(context, self.resume_key)
        records = self._record_source(hook, read, destination, layout, key, police)
        try:
            records.prepare()  # a resumable export reads here, keeping each unit as it ends
            staging.mkdir(parents=True, exist_ok=True)
            parts, rows = self._write_parts(staging, layout, records(None))  # a whole read: no watermark
            self._publish(staging, destination, parts)
            remove_progress(destination, key, started_at)  # only now: the parts are in place
        finally:
            if staging.exists():
                staging.rmdir(recursive=True)
            records.close()
            hook.close()
        summary = {
            "resource": resource.name,
            "path": str(destination),
            "format": self.format,
            "files": len(parts),
            "rows_fetched": rows,
            **hook.stats.load_summary(rows, earlier_records=records.earlier_records),
            "new_fields": police.new_fields,
            "duration_seconds": round(time.monotonic() - started, 3),
        }
        log.info("Exported Clarky %s to %s: %s", resource.name, destination, summary)
        return summary

    def _record_source(
        self,
        hook: ClarkyHook,
        read: ReadPlan,
        destination: ObjectStoragePath,
        layout: TableLayout,
        key: str | None,
        police: RecordPolice,
    ) -> ResourceRecords:
        """Records streamed into the parts, or, for a resumable resource in a task (or with a
        ``resume_key``), read first and kept unit by unit under the destination, so the next
        try resumes."""
        if key is None or not read.resource.resumable:
            return ResourceRecords(hook, read, police=police)
        max_age = self.resume_max_age.total_seconds()

        def progress(fingerprint: str) -> ExportProgress:
            return ExportProgress(destination, key, fingerprint, max_age, layout.record_key)

        return ResumableRecords(hook, read, police=police, progress=progress)

    def _write_parts(
        self, staging: ObjectStoragePath, layout: TableLayout, records: Iterator[dict[str, Any]]
    ) -> tuple[list[str], int]:
        """Write records into part files of at most ``records_per_file``; returns (names, rows)."""
        writer = _write_jsonl if self.format == "jsonl" else _write_parquet
        names: list[str] = []
        rows = 0
        exhausted = False
        while not exhausted:
            chunk: list[dict[str, Any]] = []
            for record in records:
                chunk.append(record)
                if len(chunk) >= self.records_per_file:
                    break
            else:
                exhausted = True
            if not chunk and names:
                break
            name = f"part-{len(names):05d}{FORMATS[self.format]}"
            writer(staging / name, layout, chunk)
            names.append(name)
            rows += len(chunk)
        return names, rows

    @staticmethod
    def _publish(staging: ObjectStoragePath, destination: ObjectStoragePath, parts: list[str]) -> None:
        """Replace the previous export: drop its parts and marker, move ours in, then mark success."""
        marker = destination / SUCCESS_MARKER
        if marker.exists():
            marker.unlink()
        for old in destination.glob("part-*"):
            old.unlink()
        for name in parts:
            (staging / name).rename(destination / name)
        with marker.open("w") as handle:
            handle.write(datetime.now(timezone.utc).isoformat() + "\n")


def _write_jsonl(target: ObjectStoragePath, layout: TableLayout, records: list[dict[str, Any]]) -> None:
    with target.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(dumps(record) or "null")
            handle.write("\n")


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ClarkyConfigError(
            'format="parquet" needs pyarrow: pip install "airflow-provider-clarky[parquet]".'
        ) from None


def _write_parquet(target: ObjectStoragePath, layout: TableLayout, records: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    metadata = (datetime.now(timezone.utc), None, None)
    rows = [layout.row(record, metadata) for record in records]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in layout.columns]
    schema = arrow_schema(layout, "ms")
    table = pa.table(
        [pa.array(list(values), type=field.type) for values, field in zip(columns, schema, strict=True)],
        schema=schema,
    )
    with target.open("wb") as handle:
        pq.write_table(table, handle)
