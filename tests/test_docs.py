"""Every ```python example in README.md and docs/ runs, and every operator or test it defines runs for real."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from airflow.sdk import BaseOperator

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
EXAMPLES = [
    (page, index, code) for page in PAGES for index, code in enumerate(BLOCK.findall(page.read_text()))
]


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


def test_readme_examples_are_collected():
    assert sum(page.name == "README.md" for page, _, _ in EXAMPLES) >= 4


@pytest.mark.parametrize(
    ("page", "index", "code"),
    EXAMPLES,
    ids=[f"{page.relative_to(ROOT).as_posix()}-{index}" for page, index, _ in EXAMPLES],
)
def test_example_runs(page, index, code, emulator, tmp_path, monkeypatch, request):
    """Run a block as written (``clarky_default`` points at the emulator, ``warehouse`` at SQLite).

    Operators the block defines are executed; ``test_*`` functions it defines are called with
    the pytest fixtures they name, as pytest would.
    """
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", f'{{"conn_type": "sqlite", "host": "{tmp_path / "w.db"}"}}')
    namespace: dict = {"__name__": f"example_{index}"}
    exec(compile(code.replace("/tmp/clarky-export", str(tmp_path)), str(page), "exec"), namespace)
    for value in list(namespace.values()):
        if isinstance(value, BaseOperator):
            summary = value.execute({})
            assert summary["rows_fetched"] > 0, value.task_id
    for name, value in list(namespace.items()):
        if name.startswith("test_") and inspect.isfunction(value):
            value(**{arg: request.getfixturevalue(arg) for arg in inspect.signature(value).parameters})
