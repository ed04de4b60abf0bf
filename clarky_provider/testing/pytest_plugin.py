"""Pytest fixtures for testing DAGs against a local Clarky API (registered via ``pytest11``).

``clarky_emulator`` starts a small emulator per test and stops it afterwards;
``clarky_connection`` also points the ``clarky_default`` connection at it through
``AIRFLOW_CONN_CLARKY_DEFAULT``, so a DAG test needs no other setup.

Pytest loads this module before any conftest, so it must not import Airflow at import time
(that would fix ``AIRFLOW_HOME`` before a project's conftest can set it): imports are lazy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from clarky_provider.testing.emulator import ClarkyEmulator


@pytest.fixture
def clarky_emulator() -> Iterator[ClarkyEmulator]:
    """A running emulator with 200 contacts, no rate limit and no faults."""
    from clarky_provider.testing.emulator import ClarkyEmulator

    with ClarkyEmulator(200, rate_limit=None) as emulator:
        yield emulator


@pytest.fixture
def clarky_connection(clarky_emulator: ClarkyEmulator, monkeypatch: pytest.MonkeyPatch) -> ClarkyEmulator:
    """``clarky_default`` points at ``clarky_emulator`` for the duration of the test."""
    monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", clarky_emulator.connection_uri())
    return clarky_emulator
