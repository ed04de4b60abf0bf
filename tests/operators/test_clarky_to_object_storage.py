"""ClarkyToObjectStorageOperator on file://: JSONL and Parquet, atomic on failure."""

from __future__ import annotations

import json

import pytest

from clarky_provider.exceptions import ClarkyAuthError, ClarkyConfigError
from clarky_provider.operators.clarky_to_object_storage import ClarkyToObjectStorageOperator
from clarky_provider.testing import FaultPlan


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
