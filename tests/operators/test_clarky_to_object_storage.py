"""ClarkyToObjectStorageOperator on file://: JSONL and Parquet, atomic on failure, and a child
resource's export killed (SIGKILL) halfway resumed by its next try."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from clarky_provider.compat import ObjectStoragePath
from clarky_provider.exceptions import ClarkyAuthError, ClarkyConfigError, ClarkyError
from clarky_provider.operators.clarky_to_object_storage import ClarkyToObjectStorageOperator
from clarky_provider.operators.export_progress import PROGRESS_PREFIX, ExportProgress
from clarky_provider.operators.plan import ReadPlan, table_spec
from clarky_provider.operators.resume import load_key, read_fingerprint
from clarky_provider.resources import get_resource
from clarky_provider.sql.schema import TableLayout
from clarky_provider.testing import ClarkyEmulator, FaultPlan
from tests.killing import kill_after_requests, resumed_try
from tests.operators.test_resumable_loads import task_instance


def export(path, **kwargs):
    kwargs.setdefault("task_id", "export")
    kwargs.setdefault("resource", "contacts")
    return ClarkyToObjectStorageOperator(path=f"file://{path}", **kwargs).execute({})


def test_jsonl_parts_hold_every_record_exactly(emulator, tmp_path):
    summary = export(tmp_path, records_per_file=120)
    parts = sorted(tmp_path.glob("part-*.jsonl"))
    assert [p.name for p in parts] == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    records = [json.loads(line) for part in parts for line in part.read_text(encoding="utf-8").splitlines()]
    assert records == emulator.dataset["contacts"]
    assert summary["files"] == 3 and summary["rows_fetched"] == 300
    assert (tmp_path / "_SUCCESS").exists()
    assert not list(tmp_path.glob(".clarky-tmp-*"))


def test_parquet_has_typed_columns_and_raw(emulator, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    export(tmp_path, format="parquet", records_per_file=1000)
    (part,) = tmp_path.glob("part-*.parquet")
    table = pq.read_table(part)
    assert table.num_rows == 300
    assert str(table.schema.field("updated_at").type) == "timestamp[ms, tz=UTC]"
    assert str(table.schema.field("deal_value").type) == "double"
    raws = [json.loads(raw) for raw in table.column("_raw").to_pylist()]
    assert raws == emulator.dataset["contacts"]


def test_failed_export_leaves_the_previous_one_untouched(emulator, tmp_path):
    export(tmp_path, records_per_file=100)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    emulator.mutate(updates=20)
    emulator.faults = FaultPlan(scheduled={emulator.stats.requests + 2: "revoke"})
    with pytest.raises(ClarkyAuthError):
        export(tmp_path, records_per_file=100)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bad_arguments_are_refused_before_any_request(emulator, tmp_path):
    with pytest.raises(ClarkyConfigError, match="format='csv'"):
        ClarkyToObjectStorageOperator(
            task_id="t", resource="contacts", path=f"file://{tmp_path}", format="csv"
        )
    with pytest.raises(ClarkyConfigError, match="not supported by Clarky resource 'companies'"):
        export(tmp_path, resource="companies", filters={"updated_after": "2026-01-01T00:00:00Z"})
    assert emulator.stats.requests == 0 and not list(tmp_path.iterdir())


# -- resumable exports (a child resource; contacts in created-time windows) ---------------------------

ACTIVITY_CONTACTS = 300
#: The killed try runs in a child process that exports as the same task instance would.
CHILD = """
import sys
from tests.operators.test_clarky_to_object_storage import export_in_child
export_in_child(sys.argv[1], sys.argv[2], sys.argv[3])
"""
#: resource -> the emulator's contacts and list order, and the connection's page size (as in
#: tests/operators/test_resumable_loads.py: contacts read in windows, in a fresh order per request).
KILLED_EXPORTS = {
    "contact_activities": (ACTIVITY_CONTACTS, "stable", 100),
    "contacts": (6000, "per_request", 50),
}


def activities_export(
    path: Path, fmt: str = "jsonl", resource: str = "contact_activities", **kwargs: Any
) -> ClarkyToObjectStorageOperator:
    return ClarkyToObjectStorageOperator(
        task_id="export_activities",
        resource=resource,
        path=f"file://{path}",
        format=fmt,
        records_per_file=1000,
        clarky_hook_params={"max_concurrency": 2},
        **kwargs,
    )


def run(run_id: str) -> dict[str, Any]:
    return task_instance(run_id, task_id="export_activities")


def export_in_child(path: str, fmt: str, resource: str = "contact_activities") -> None:
    """The killed try: the same task instance's export, in its own process."""
    activities_export(Path(path), fmt, resource).execute(run("run-1"))  # type: ignore[arg-type]


def published(path: Path, fmt: str) -> list[dict[str, Any]]:
    """The records of the published parts, by id (fails on a duplicate)."""
    records: list[dict[str, Any]] = []
    for part in sorted(path.glob(f"part-*.{fmt}")):
        if fmt == "jsonl":
            records += [json.loads(line) for line in part.read_text(encoding="utf-8").splitlines()]
        else:
            import pyarrow.parquet as pq

            records += [json.loads(raw) for raw in pq.read_table(part).column("_raw").to_pylist()]
    by_id = {record["id"]: record for record in records}
    assert len(by_id) == len(records), "a record was published twice"
    return sorted(records, key=lambda r: r["id"])


def source(emu: ClarkyEmulator, resource: str = "contact_activities") -> list[dict[str, Any]]:
    return sorted(emu.dataset[resource], key=lambda r: r["id"])


def progress_prefixes(path: Path) -> list[Path]:
    return sorted(path.glob(f"{PROGRESS_PREFIX}*"))


def only_published(path: Path) -> bool:
    """Nothing under the destination but the parts and ``_SUCCESS``: no progress, no staging."""
    return all(p.name == "_SUCCESS" or p.name.startswith("part-") for p in path.iterdir())


@pytest.mark.parametrize("resource", list(KILLED_EXPORTS))
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_killed_export_resumes_where_it_stopped(fmt, resource, tmp_path, monkeypatch):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    whole_path, path = tmp_path / "whole", tmp_path / "export"
    contacts, order, page_size = KILLED_EXPORTS[resource]
    with ClarkyEmulator(contacts, rate_limit=None, latency=0.01, order=order) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(page_size=page_size))
        truth = source(emu, resource)
        before = emu.stats.requests
        whole = activities_export(whole_path, fmt, resource).execute(run("run-0"))  # type: ignore[arg-type]
        uninterrupted = emu.stats.requests - before
        assert whole["records_from_earlier_tries"] == 0
        assert published(whole_path, fmt) == truth and only_published(whole_path)

        kill_after_requests(emu, CHILD, [str(path), fmt, resource], uninterrupted // 2)
        assert not (path / "_SUCCESS").exists() and not list(path.glob("part-*")), "nothing published"
        (kept,) = progress_prefixes(path)
        assert list(kept.iterdir()), "the killed try kept what it had finished"

        resumed = resumed_try(
            emu,
            f"{resource} {fmt}",
            uninterrupted,
            lambda: activities_export(path, fmt, resource).execute(run("run-1")),  # type: ignore[arg-type]
        )
        assert resumed["rows_fetched"] == len(truth)
        assert published(path, fmt) == truth
        assert (path / "_SUCCESS").exists()
        assert only_published(path), "the published export removed its progress"

        # the same task's next run starts afresh: a whole read, nothing resumed
        before = emu.stats.requests
        again = activities_export(path, fmt, resource).execute(run("run-2"))  # type: ignore[arg-type]
        assert again["records_from_earlier_tries"] == 0
        assert emu.stats.requests - before >= 0.8 * uninterrupted
        assert published(path, fmt) == truth and only_published(path)


def kept_by_a_killed_try(
    path: Path, key: str, units: int, fingerprint: str | None = None, max_age_seconds: float = 3600
) -> ExportProgress:
    """What a try killed mid-read leaves: finished units under the destination, nothing published."""
    resource = get_resource("contact_activities")
    if fingerprint is None:  # the fingerprint of the operator's read: resumable if the key matched
        fingerprint = read_fingerprint(ReadPlan(resource, {}).read(None))
    layout = TableLayout(table_spec(resource))
    progress = ExportProgress(
        ObjectStoragePath(f"file://{path}"), key, fingerprint, max_age_seconds, layout.record_key
    )
    progress.open()
    for n in range(units):
        progress.save(f"c_{n}", [{"id": f"a_{key}_{n}", "contact_id": f"c_{n}"}])
    progress.close()
    return progress


def run_key(run_id: str) -> str:
    return load_key(run(run_id), None) or ""


def test_a_new_run_starts_afresh_and_removes_abandoned_progress(tmp_path, monkeypatch):
    """Another run of the task does not resume a killed run's read (it would publish that run's
    records), and its successful export removes the abandoned progress."""
    with ClarkyEmulator(40, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        kept_by_a_killed_try(tmp_path, run_key("run-1"), units=3)
        assert len(progress_prefixes(tmp_path)) == 1
        summary = activities_export(tmp_path).execute(run("run-2"))  # type: ignore[arg-type]
        assert summary["records_from_earlier_tries"] == 0
        assert published(tmp_path, "jsonl") == source(emu)
    assert only_published(tmp_path), "the run that never retried left nothing behind"


def test_progress_of_another_read_is_not_resumed(tmp_path, monkeypatch):
    """A try whose read differs (the task's arguments changed) starts afresh: the records an
    earlier try kept for another read are never published."""
    with ClarkyEmulator(40, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        kept_by_a_killed_try(tmp_path, load_key({}, "same-key") or "", units=3, fingerprint="another-read")
        summary = activities_export(tmp_path, resume_key="same-key").execute({})  # type: ignore[arg-type]
        assert summary["records_from_earlier_tries"] == 0
        assert published(tmp_path, "jsonl") == source(emu)
    assert only_published(tmp_path)


def test_a_half_written_unit_is_ignored_and_read_again(tmp_path):
    progress = kept_by_a_killed_try(tmp_path, "k", units=2)
    (good, *_) = sorted(progress.prefix.iterdir())
    body = good.read_bytes()
    # as a local write killed midway leaves it: short of its last newline, or of a record
    (progress.prefix / f"9{good.name[1:-9]}a.progress").write_bytes(body[:-1])
    (progress.prefix / f"9{good.name[1:-9]}b.progress").write_bytes(body.split(b"\n")[0] + b"\n")
    resumed = kept_by_a_killed_try(tmp_path, "k", units=0)
    assert (resumed.units, resumed.earlier_records) == ({"c_0", "c_1"}, 2)
    assert sorted(r["id"] for r in resumed.replay()) == ["a_k_0", "a_k_1"]


def test_a_replay_missing_saved_units_fails_instead_of_publishing_less(tmp_path):
    progress = kept_by_a_killed_try(tmp_path, "k", units=2)
    sorted(progress.prefix.iterdir())[0].unlink()  # as another export removing it as abandoned would
    with pytest.raises(ClarkyError, match="1 parents' lists this export had read are gone"):
        list(progress.replay())


def test_progress_past_its_age_goes_when_another_export_opens(tmp_path):
    kept_by_a_killed_try(tmp_path, "old", units=1)
    kept_by_a_killed_try(tmp_path, "recent", units=1)
    old = tmp_path / f"{PROGRESS_PREFIX}old"
    (unit,) = old.iterdir()
    unit.rename(old / f"{int((time.time() - 7200) * 1000):013d}{unit.name[13:]}")  # saved 2 hours ago
    kept_by_a_killed_try(tmp_path, "new", units=0, max_age_seconds=3600)
    assert [p.name for p in progress_prefixes(tmp_path)] == [f"{PROGRESS_PREFIX}recent"]


def test_a_failed_resumable_export_keeps_the_published_files_and_its_progress(tmp_path, monkeypatch):
    """A try that fails mid-read (the key revoked) publishes nothing: the previous export stays
    as it was; what it read is kept, and the next try (a rotated key) reads only the rest."""
    with ClarkyEmulator(60, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        activities_export(tmp_path).execute(run("run-0"))  # type: ignore[arg-type]
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}  # _SUCCESS holds its time
        emu.faults = FaultPlan(scheduled={emu.stats.requests + 30: "revoke"})
        with pytest.raises(ClarkyAuthError):
            activities_export(tmp_path).execute(run("run-1"))  # type: ignore[arg-type]
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
        (kept,) = progress_prefixes(tmp_path)
        assert len(list(kept.iterdir())) >= 20, "the lists read before the failure were kept"

        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(emu.write_key))
        resumed = activities_export(tmp_path).execute(run("run-1"))  # type: ignore[arg-type]
        assert resumed["records_from_earlier_tries"] >= 20
        assert published(tmp_path, "jsonl") == source(emu)
    assert only_published(tmp_path)
