"""Declarative connection form of the ``clarky`` connection type.

Airflow 3.2+ draws the form from ``conn-fields`` / ``ui-field-behaviour`` in provider info
without importing the hook; the hook's ``get_ui_field_behaviour`` returns the same data, so both
read this one module. Defaults here are also the hook's defaults.
"""

from __future__ import annotations

from typing import Any

from clarky_provider.resources import DEFAULT_HOST, MAX_PAGE_SIZE, READS_PER_MINUTE

EXTRA_DEFAULTS: dict[str, int | float] = {
    "timeout": 30.0,
    "page_size": MAX_PAGE_SIZE,
    "max_retries": 5,
    "requests_per_minute": READS_PER_MINUTE,
    "max_concurrency": 4,
    "retry_backoff": 1.0,
}

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Connect and read timeout of every request.",
        "schema": {"type": ["number", "null"], "default": EXTRA_DEFAULTS["timeout"], "minimum": 1},
    },
    "page_size": {
        "label": "Page size",
        "description": "Records per page, 1-100. 100 uses the rate budget best.",
        "schema": {
            "type": ["integer", "null"],
            "default": EXTRA_DEFAULTS["page_size"],
            "minimum": 1,
            "maximum": MAX_PAGE_SIZE,
        },
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of a request that failed with 5xx, a network error or a bad body.",
        "schema": {"type": ["integer", "null"], "default": EXTRA_DEFAULTS["max_retries"], "minimum": 0},
    },
    "requests_per_minute": {
        "label": "Requests per minute",
        "description": "The key's read budget (120 unless Clarky raised it). Shared by all tasks in a worker.",
        "schema": {
            "type": ["integer", "null"],
            "default": EXTRA_DEFAULTS["requests_per_minute"],
            "minimum": 1,
        },
    },
    "max_concurrency": {
        "label": "Max concurrent requests",
        "description": "Pages fetched in parallel within the rate budget.",
        "schema": {
            "type": ["integer", "null"],
            "default": EXTRA_DEFAULTS["max_concurrency"],
            "minimum": 1,
            "maximum": 32,
        },
    },
    "retry_backoff": {
        "label": "Retry backoff (seconds)",
        "description": "First wait before retrying a transient failure; doubles per retry, capped at 30 s.",
        "schema": {"type": ["number", "null"], "default": EXTRA_DEFAULTS["retry_backoff"], "minimum": 0.001},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login", "extra"],
    "relabeling": {"password": "API key", "host": "Base URL"},
    "placeholders": {
        "host": f"{DEFAULT_HOST} (optional; /api/v1 is appended)",
        "password": "ck_live_... (a read-scoped key is enough)",
    },
}
