"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from clarky_provider import __version__
from clarky_provider.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR

INTEGRATION = "Clarky"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-clarky",
        "name": "Clarky",
        "description": "Load Clarky CRM records (contacts, companies, pipelines, ...) into warehouse tables.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://docs.clarky.ai/api-reference/quickstart",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": ["clarky_provider.hooks.clarky"]}],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "clarky_provider.operators.clarky_to_sql",
                    "clarky_provider.operators.clarky_to_object_storage",
                ],
            }
        ],
        "triggers": [
            {"integration-name": INTEGRATION, "python-modules": ["clarky_provider.triggers.change"]}
        ],
        "connection-types": [
            {
                "connection-type": "clarky",
                "hook-class-name": "clarky_provider.hooks.clarky.ClarkyHook",
                "hook-name": "Clarky",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
