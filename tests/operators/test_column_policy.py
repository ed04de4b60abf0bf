"""The column policy (docs/privacy.md): what ``exclude_columns`` drops and ``hash_columns`` hashes
exists nowhere downstream (every column, ``_raw``, the progress of a resumable load, export
files), on every engine; ``columns=`` makes only those columns; bad names and a missing key fail
before any request; new fields are reported once, and warned about once per table."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clarky_provider.exceptions import ClarkyAuthError, ClarkyConfigError
from clarky_provider.normalize import primary_email
from clarky_provider.operators.clarky_to_object_storage import ClarkyToObjectStorageOperator
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.operators.columns import ColumnPolicy, KeyedHash
from clarky_provider.operators.plan import table_spec
from clarky_provider.resources import get_resource
from clarky_provider.sql.schema import PROGRESS_TABLE
from clarky_provider.testing import ClarkyEmulator, FaultPlan
from tests.operators.test_resumable_loads import task_instance
from tests.warehouse import ENGINES, Warehouse, expected_row, open_warehouse

KEY = "pepper-" + "9f4c2e7a1b"
HASHING = {"hash_key_conn_id": "clarky_hash_key"}
#: The policy of the issue: e-mails hashed, phone numbers never written.
PII = {"hash_columns": ["emails"], "exclude_columns": ["phone_numbers"], **HASHING}
METADATA = ["_raw", "_loaded_at", "_dag_id", "_run_id", "_deleted_at", "_content_hash"]


@pytest.fixture(params=ENGINES)
def warehouse(request, tmp_path, monkeypatch):
    yield from open_warehouse(request.param, tmp_path, monkeypatch)


@pytest.fixture(autouse=True)
def hash_key(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CLARKY_HASH_KEY", json.dumps({"conn_type": "generic", "password": KEY}))


def h(text: str) -> str:
    """The documented recipe, written out independently: HMAC-SHA-256 of the trimmed,
    lower-cased UTF-8 text, lowercase hex."""
    return hmac.new(KEY.encode(), text.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()


def hashed_emails(emails: Any) -> Any:
    if not isinstance(emails, list):
        return emails
    return [
        {**item, "email": h(item["email"]) if item.get("email") else item.get("email")}
        if isinstance(item, dict)
        else h(item)
        for item in emails
    ]


def policed(record: dict[str, Any]) -> dict[str, Any]:
    """A contact as the PII policy must leave it."""
    out = {k: v for k, v in record.items() if k != "phone_numbers"}
    if "emails" in out:
        out["emails"] = hashed_emails(out["emails"])
    return out


def secrets_of(records: list[dict[str, Any]]) -> set[str]:
    """Every e-mail address and phone number of the source, as text."""
    found: set[str] = set()
    for record in records:
        for name, key in (("emails", "email"), ("phone_numbers", "phone_number")):
            for item in record.get(name) or []:
                value = item.get(key) if isinstance(item, dict) else item
                if value:
                    found.add(value)
    return found


def plaintext_in_database(warehouse: Warehouse, tables: set[str], secrets: set[str]) -> set[str]:
    """The secrets that any value of any row of ``tables`` holds."""
    text = " ".join(
        str(row)
        for table in sorted(tables & warehouse.tables())
        for row in warehouse.query(f"SELECT * FROM {warehouse.quote(table)}")
    )
    return {s for s in secrets if s in text}


def plaintext_in_files(root: Path, secrets: set[str]) -> set[str]:
    """The secrets that any file under ``root`` holds as UTF-8 bytes (a database file, parts)."""
    blobs = [p.read_bytes() for p in root.rglob("*") if p.is_file()]
    return {s for s in secrets if any(s.encode() in blob for blob in blobs)}


def load(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("resource", "contacts")
    operator = ClarkyToSqlOperator(task_id="load", sql_conn_id="warehouse", **kwargs)
    return operator.execute({})  # type: ignore[arg-type]


def test_hashed_and_excluded_fields_reach_no_column_and_no_raw(emulator, warehouse, tmp_path):
    source = emulator.dataset["contacts"]
    secrets = secrets_of(source)
    assert len(secrets) > 300  # the test can fail: the source holds many

    summary = load(**PII)

    assert summary["rows_inserted"] == 300
    assert plaintext_in_database(warehouse, {"contacts"}, secrets) == set()
    if warehouse.kind in ("sqlite", "duckdb", "snowflake"):  # the files themselves
        assert plaintext_in_files(tmp_path, secrets) == set()
    rows = warehouse.rows("contacts")
    assert not {"phone_numbers", "primary_phone"} & set(next(iter(rows.values())))
    for record in source:
        row, expected = rows[record["id"]], policed(record)
        assert row["_raw"] == expected
        want = expected_row("contacts", expected)
        del want["phone_numbers"], want["primary_phone"]
        assert {k: row[k] for k in want} == want
    primaries = {r["id"]: primary_email(r) for r in source if primary_email(r)}
    assert primaries and all(rows[key]["primary_email"] == h(e) for key, e in primaries.items())


def test_a_resumable_load_keeps_only_policed_records(warehouse, monkeypatch):
    """A child load that fails mid-read keeps its finished lists in _clarky_progress: already
    hashed and without the excluded field; the resumed try lands them policed."""
    policy = {"hash_columns": ["metadata.attendees", "title"], "exclude_columns": ["description"], **HASHING}
    with ClarkyEmulator(60, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        source = emu.dataset["contact_activities"]
        attendees = {a for r in source for a in (r.get("metadata") or {}).get("attendees") or []}
        descriptions = {
            r["description"] for r in source if r.get("description") and len(r["description"]) > 20
        }
        assert attendees and descriptions
        emu.faults = FaultPlan(scheduled={emu.stats.requests + 30: "revoke"})
        operator = ClarkyToSqlOperator(
            task_id="load_activities", resource="contact_activities", sql_conn_id="warehouse", **policy
        )
        with pytest.raises(ClarkyAuthError):
            operator.execute(task_instance("run-1"))  # type: ignore[arg-type]
        _, kept = warehouse.select(
            f"SELECT {warehouse.quote('_record')} FROM {warehouse.quote(PROGRESS_TABLE)}"
        )
        kept_records = [json.loads(r) for (r,) in kept if r is not None]
        assert len(kept_records) >= 20, "the lists read before the failure were kept"
        assert plaintext_in_database(warehouse, {PROGRESS_TABLE}, attendees | descriptions) == set()
        by_id = {r["id"]: r for r in source}
        for record in kept_records:
            assert "description" not in record
            assert record["title"] == h(by_id[record["id"]]["title"])

        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(emu.write_key))
        resumed = operator.execute(task_instance("run-1"))  # type: ignore[arg-type]
        assert resumed["records_from_earlier_tries"] >= 20
        assert plaintext_in_database(warehouse, {"contact_activities"}, attendees | descriptions) == set()
        rows = warehouse.rows("contact_activities")
        assert set(rows) == set(by_id)
        for key, row in rows.items():
            record = by_id[key]
            assert "description" not in row and "description" not in row["_raw"]
            assert row["title"] == row["_raw"]["title"] == h(record["title"])
            if (record.get("metadata") or {}).get("attendees"):
                assert row["metadata"]["attendees"] == [h(a) for a in record["metadata"]["attendees"]]


def test_columns_make_only_those_columns(emulator, warehouse):
    operator = ClarkyToSqlOperator(
        task_id="load", resource="contacts", sql_conn_id="warehouse", columns=["first_name", "emails"]
    )
    operator.execute({})  # type: ignore[arg-type]
    names, _ = warehouse.select(f"SELECT * FROM {warehouse.quote('contacts')}")
    expected = ["id", "first_name", "emails", "updated_at", "primary_email", *METADATA]  # catalog order
    assert [n.lower() for n in names] == expected
    assert operator._lineage is not None and [c for c, _ in operator._lineage.columns] == expected
    rows = warehouse.rows("contacts")
    for record in emulator.dataset["contacts"]:
        keep = {"id", "first_name", "emails", "updated_at"}
        assert rows[record["id"]]["_raw"] == {k: v for k, v in record.items() if k in keep}


@pytest.mark.parametrize(
    ("option", "value"),
    [("columns", ["first_name", "e_mails"]), ("exclude_columns", ["e_mails"]), ("hash_columns", ["e_mails"])],
)
@pytest.mark.parametrize("operator", ["sql", "object_storage"])
def test_an_unknown_name_fails_before_any_request(emulator, tmp_path, monkeypatch, option, value, operator):
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")})
    )
    with pytest.raises(ClarkyConfigError) as error:
        run(operator, tmp_path, **{option: value}, **HASHING)
    assert "'e_mails'" in str(error.value)
    assert ", ".join(f.name for f in get_resource("contacts").fields) in str(error.value)  # the valid ones
    assert emulator.stats.requests == 0


def run(operator: str, tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    if operator == "sql":
        return load(**kwargs)
    export = ClarkyToObjectStorageOperator(
        task_id="export", resource="contacts", path=f"file://{tmp_path}", **kwargs
    )
    return export.execute({})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hash_columns": ["emails"]}, "hash_columns needs a key"),
        ({"hash_columns": ["emails"], "hash_key_conn_id": "nowhere"}, "no such Airflow connection"),
        ({"hash_columns": ["emails"], "hash_key_conn_id": "keyless"}, "has no password"),
        ({"exclude_columns": ["id"]}, "is the key or the incremental cursor"),
        ({"hash_columns": ["updated_at"], **HASHING}, "is the key or the incremental cursor"),
        ({"exclude_columns": ["company.name"]}, "must name an object field"),
        ({"columns": ["custom_fields.ssn"]}, "must name a top-level field"),
        (
            {"hash_columns": ["custom_fields.ssn"], "exclude_columns": ["custom_fields"], **HASHING},
            "both excluded and hashed",
        ),
        ({"columns": "emails"}, "must be a list of field names"),
    ],
)
@pytest.mark.parametrize("operator", ["sql", "object_storage"])
def test_a_bad_policy_or_missing_key_fails_before_any_request(
    emulator, tmp_path, monkeypatch, kwargs, message, operator
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")})
    )
    monkeypatch.setenv("AIRFLOW_CONN_KEYLESS", json.dumps({"conn_type": "generic", "password": ""}))
    with pytest.raises(ClarkyConfigError, match=message):
        run(operator, tmp_path, **kwargs)
    assert emulator.stats.requests == 0


def test_on_new_field_column_is_refused_with_the_reason():
    with pytest.raises(ClarkyConfigError, match=r"not supported.*commits"):
        ClarkyToSqlOperator(task_id="t", resource="contacts", sql_conn_id="w", on_new_field="column")
    with pytest.raises(ClarkyConfigError, match="'raw', 'drop'"):
        ClarkyToObjectStorageOperator(task_id="t", resource="contacts", path="file:///x", on_new_field="keep")


@pytest.mark.parametrize("on_new_field", ["raw", "drop"])
def test_new_fields_are_listed_once_and_follow_on_new_field(
    emulator, tmp_path, monkeypatch, caplog, on_new_field
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")})
    )
    holders = [r["id"] for r in emulator.dataset["contacts"] if "x_engagement_score" in r]
    assert len(holders) >= 2  # so "once" means something
    with caplog.at_level(logging.WARNING):
        summary = load(on_new_field=on_new_field)
    assert summary["new_fields"] == ["x_engagement_score"]
    assert sum("x_engagement_score" in r.getMessage() for r in caplog.records) == 1
    rows = ClarkySqlite(tmp_path / "w.db").raws()
    assert all(("x_engagement_score" in rows[key]) is (on_new_field == "raw") for key in holders)


@pytest.mark.parametrize("on_new_field", ["raw", "drop"])
def test_a_new_field_is_warned_about_when_it_first_appears_in_a_table(
    emulator, warehouse, caplog, on_new_field
):
    """Every load lists a new field in its summary (data); only the first load of each table
    warns. The memory is the warehouse's ``_clarky_fields``, written in the load's transaction,
    so another process (each load here is a new operator) remembers too."""

    def warnings(**kwargs: Any) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            summary = load(on_new_field=on_new_field, incremental="full", **kwargs)
        assert summary["new_fields"] == ["x_engagement_score"]
        return [r.getMessage() for r in caplog.records if "x_engagement_score" in r.getMessage()]

    first = warnings()
    assert len(first) == 1 and "new in table contacts)" in first[0]
    assert warnings() == []  # the same data again
    again = warnings(table="contacts_copy")  # another table: new there
    assert len(again) == 1 and "new in table contacts_copy)" in again[0]
    assert warnings(table="contacts_copy") == warnings() == []
    assert sorted(warehouse.query("SELECT _table, _field FROM _clarky_fields")) == [
        ("contacts", "x_engagement_score"),
        ("contacts_copy", "x_engagement_score"),
    ]


class ClarkySqlite:
    def __init__(self, path: Path) -> None:
        self.path = path

    def raws(self) -> dict[str, dict[str, Any]]:
        import sqlite3

        with sqlite3.connect(self.path) as conn:
            return {key: json.loads(raw) for key, raw in conn.execute("SELECT id, _raw FROM contacts")}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_files_hold_no_plaintext(emulator, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    source = emulator.dataset["contacts"]
    secrets = secrets_of(source)
    out = tmp_path / "out"
    summary = run("object_storage", out, format=fmt, **PII)
    assert summary["rows_fetched"] == 300
    assert plaintext_in_files(out, secrets) == set()
    if fmt == "jsonl":
        records = [
            json.loads(line) for part in sorted(out.glob("part-*")) for line in part.read_text().splitlines()
        ]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(next(out.glob("part-*")))
        assert "phone_numbers" not in table.column_names and "primary_phone" not in table.column_names
        assert plaintext_in_files(out, secrets) == set()
        assert not {s for s in secrets if s in str(table.to_pylist())}
        records = [json.loads(raw) for raw in table.column("_raw").to_pylist()]
    assert records == [policed(r) for r in source]


def test_a_resumable_export_keeps_only_policed_records(tmp_path, monkeypatch):
    """Progress objects of a failed export hold hashes, not the attendees' addresses."""
    with ClarkyEmulator(60, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        attendees = {
            a
            for r in emu.dataset["contact_activities"]
            for a in (r.get("metadata") or {}).get("attendees") or []
        }
        emu.faults = FaultPlan(scheduled={emu.stats.requests + 30: "revoke"})
        export = ClarkyToObjectStorageOperator(
            task_id="export",
            resource="contact_activities",
            path=f"file://{tmp_path}",
            hash_columns=["metadata.attendees"],
            **HASHING,
        )
        with pytest.raises(ClarkyAuthError):
            export.execute(task_instance("run-1", "export"))  # type: ignore[arg-type]
        kept = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert len(kept) >= 20 and plaintext_in_files(tmp_path, attendees) == set()
        assert any(h(sorted(attendees)[0]).encode() in p.read_bytes() for p in kept)


def test_the_key_is_never_shown(emulator, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")})
    )
    with caplog.at_level(logging.DEBUG):
        summary = load(**PII)
    assert KEY not in json.dumps(summary) and KEY not in caplog.text
    assert KEY not in repr(KeyedHash(KEY.encode()))
    operator = ClarkyToSqlOperator(task_id="load", resource="contacts", sql_conn_id="warehouse", **PII)
    assert KEY not in repr(vars(operator))


def test_policy_options_are_templated():
    for operator in (ClarkyToSqlOperator, ClarkyToObjectStorageOperator):
        assert {"columns", "exclude_columns", "hash_columns", "hash_key_conn_id"} <= set(
            operator.template_fields
        )
    operator = ClarkyToSqlOperator(
        task_id="t", resource="contacts", sql_conn_id="w", exclude_columns=["{{ params.drop }}"], columns=None
    )
    operator.render_template_fields({"params": {"drop": "phone_numbers"}})  # type: ignore[arg-type]
    assert operator.exclude_columns == ["phone_numbers"]


def test_paths_name_keys_inside_objects_and_the_source_record_is_left_alone():
    resource = get_resource("contacts")
    policy = ColumnPolicy.checked(
        resource,
        exclude_columns=["custom_fields.ssn"],
        hash_columns=["custom_fields.tax_id", "emails", "first_name", "deal_value"],
    )
    record = {
        "id": "c_1",
        "first_name": "",
        "deal_value": 1.5,
        "emails": [{"email": " Ann@X.com", "is_primary": True}, None, "bob@x.com"],
        "custom_fields": {"ssn": "078-05-1120", "tax_id": 12345, "plan.tier": "gold"},
    }
    original = json.dumps(record)
    out = policy.police(KeyedHash(KEY.encode()))(record)
    assert json.dumps(record) == original, "the caller's record is not changed"
    assert out == {
        "id": "c_1",
        "first_name": "",  # empty: kept
        "deal_value": h("1.5"),  # a number: its JSON text
        "emails": [{"email": h("ann@x.com"), "is_primary": True}, None, h("bob@x.com")],
        "custom_fields": {"tax_id": h("12345"), "plan.tier": "gold"},
    }
    assert [f.name for f in table_spec(resource, policy).fields] == [f.name for f in resource.fields]
    assert "primary_email" in [d.name for d in table_spec(resource, policy).derived]


def test_new_fields_ride_on_the_asset_event(emulator, tmp_path, monkeypatch):
    from clarky_provider.assets import table_asset

    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")})
    )
    events: dict[Any, SimpleNamespace] = defaultdict(lambda: SimpleNamespace(extra={}))
    asset = table_asset("contacts")
    operator = ClarkyToSqlOperator(
        task_id="load", resource="contacts", sql_conn_id="warehouse", outlets=[asset]
    )
    operator.execute({"outlet_events": events})  # type: ignore[arg-type]
    assert events[asset].extra["new_fields"] == ["x_engagement_score"]
    assert events[asset].extra["rows_fetched"] == 300


def test_a_try_with_another_policy_does_not_resume_unpoliced_records(warehouse, monkeypatch):
    """Records an earlier try kept under another policy (here: none) never land in a hashed load."""
    with ClarkyEmulator(60, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        emu.faults = FaultPlan(scheduled={emu.stats.requests + 30: "revoke"})

        def activities(**policy: Any) -> ClarkyToSqlOperator:
            return ClarkyToSqlOperator(
                task_id="load_activities", resource="contact_activities", sql_conn_id="warehouse", **policy
            )

        with pytest.raises(ClarkyAuthError):
            activities().execute(task_instance("run-1"))  # type: ignore[arg-type]
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(emu.write_key))
        summary = activities(hash_columns=["title"], **HASHING).execute(task_instance("run-1"))  # type: ignore[arg-type]
        assert summary["records_from_earlier_tries"] == 0
        titles = {r["id"]: r["title"] for r in emu.dataset["contact_activities"]}
        rows = warehouse.rows("contact_activities")
        assert rows and all(row["title"] == h(titles[key]) for key, row in rows.items())
