"""A local Clarky API for demos and tests: :class:`ClarkyEmulator` and its fault plan.

Also registered as a pytest plugin (fixtures ``clarky_emulator`` and ``clarky_connection``).
"""

from clarky_provider.testing.emulator import ClarkyEmulator, EmulatorStats
from clarky_provider.testing.faults import FAULT_KINDS, FaultPlan
from clarky_provider.testing.store import DatasetSize

__all__ = ["FAULT_KINDS", "ClarkyEmulator", "DatasetSize", "EmulatorStats", "FaultPlan"]
