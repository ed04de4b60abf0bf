"""Every ```python example in docs/ runs, and every operator it defines loads for real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from airflow.sdk import BaseOperator

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
EXAMPLES = [(page, code) for page in sorted(DOCS.rglob("*.md")) for code in BLOCK.findall(page.read_text())]


def test_docs_pages_exist():
    names = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert {
        "connection.md",
        "hook.md",
        "troubleshooting.md",
        "changelog.md",
        "comparison.md",
        "operators/clarky_to_sql.md",
        "operators/clarky_to_object_storage.md",
    } <= names


@pytest.mark.parametrize(
    ("page", "code"), EXAMPLES, ids=[f"{p.relative_to(DOCS)}-{i}" for i, (p, _) in enumerate(EXAMPLES)]
)
def test_example_runs(page, code, emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", f'{{"conn_type": "sqlite", "host": "{tmp_path / "w.db"}"}}')
    namespace: dict = {}
    exec(compile(code.replace("/tmp/clarky-export", str(tmp_path)), str(page), "exec"), namespace)
    for value in list(namespace.values()):
        if isinstance(value, BaseOperator):
            summary = value.execute({})
            assert summary["rows_fetched"] > 0, value.task_id
