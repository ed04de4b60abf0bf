"""A local Clarky API for demos and tests: :class:`ClarkyEmulator` and its fault plan.

Also registered as a pytest plugin (fixtures ``clarky_emulator`` and ``clarky_connection``).
Names are imported on first use, so loading the plugin does not import Airflow.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ClarkyEmulator": "clarky_provider.testing.emulator",
    "EmulatorStats": "clarky_provider.testing.emulator",
    "FAULT_KINDS": "clarky_provider.testing.faults",
    "FaultPlan": "clarky_provider.testing.faults",
    "DatasetSize": "clarky_provider.testing.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
