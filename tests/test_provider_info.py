"""The provider registers with Airflow: schema-valid info, the clarky connection type, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema

from clarky_provider.connection_form import CONN_FIELDS, EXTRA_DEFAULTS, UI_FIELD_BEHAVIOUR
from clarky_provider.get_provider_info import get_provider_info
from clarky_provider.hooks.clarky import ClarkyHook


def test_provider_info_validates_against_airflows_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_entry_point_is_registered():
    (entry,) = [
        e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("clarky_provider")
    ]
    assert entry.load()() == get_provider_info()


def test_connection_form_matches_hook_and_defaults():
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == ClarkyHook.conn_type == "clarky"
    assert conn_type["hook-class-name"] == f"{ClarkyHook.__module__}.{ClarkyHook.__name__}"
    assert set(conn_type["conn-fields"]) == set(EXTRA_DEFAULTS)
    for name, spec in CONN_FIELDS.items():
        assert spec["schema"]["default"] == EXTRA_DEFAULTS[name]
    behaviour = ClarkyHook.get_ui_field_behaviour()
    assert behaviour["hidden_fields"] == UI_FIELD_BEHAVIOUR["hidden-fields"]
    assert behaviour["relabeling"]["password"] == "API key"


def test_every_declared_module_imports():
    import importlib

    info = get_provider_info()
    for section in ("hooks", "operators"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)


def _airflow_cli(*args: str) -> str:
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, env=env, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_airflow_cli_lists_provider_and_connection_type():
    providers = json.loads(_airflow_cli("providers", "list", "-o", "json"))
    assert any(p["package_name"] == "airflow-provider-clarky" for p in providers)
    hooks = json.loads(_airflow_cli("providers", "hooks", "-o", "json"))
    assert any(h.get("connection_type") == "clarky" for h in hooks), hooks[:3]
