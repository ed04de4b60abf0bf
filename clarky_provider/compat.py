"""Airflow names that moved between Airflow 3.0 and 3.3, resolved in one place.

The provider imports these names from here, never from ``airflow.sdk`` directly, so one
package runs on every Airflow 3 minor (docs/airflow-versions.md). Where they live:

* ``BaseHook``: ``airflow.hooks.base`` on 3.0, ``airflow.sdk`` from 3.1.
* ``AirflowException``, ``AirflowFailException``: ``airflow.exceptions`` on 3.0 and 3.1
  (3.1's ``airflow.sdk.exceptions`` re-exports only the first), ``airflow.sdk.exceptions``
  from 3.2. They must be the classes the running Airflow's task runner catches: an
  ``AirflowFailException`` from the wrong module would be retried like any other error.
* ``Asset``, ``BaseOperator``, ``ObjectStoragePath``: ``airflow.sdk`` on every 3.x.
* ``AirflowProviderDeprecationWarning``: ``airflow.exceptions`` on every 3.x.
* For the trigger, loaded on first use (only the triggerer and DAG files with an
  ``AssetWatcher`` need Airflow's trigger classes): ``BaseEventTrigger`` (what an
  ``AssetWatcher`` takes) and ``TriggerEvent``, ``airflow.triggers.base`` on every 3.x. Recent
  common-compat releases re-export the first from ``airflow.providers.common.compat.triggers``
  (1.23 does; the 1.7 that Airflow 3.0 shipped with has no such module), tried first in case
  it moves.
* For DAG tests (ours and users'), loaded on first use: ``DagBag`` (``airflow.models.dagbag``
  on 3.0 and 3.1, ``airflow.dag_processing.dagbag`` from 3.2) and ``DagSerialization``
  (``SerializedDAG`` of ``airflow.serialization.serialized_objects`` on 3.0 and 3.1).

First choice is ``airflow.providers.common.compat.sdk``, the shim Airflow's own providers
import through (apache-airflow-providers-common-compat 1.8+; ``AirflowFailException`` from
1.10). The common-compat that Airflow 3.0 shipped with (1.7) has no ``sdk`` module, so each name
falls back to the same lookup done here: the newest location first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowProviderDeprecationWarning",
    "Asset",
    "BaseEventTrigger",
    "BaseHook",
    "BaseOperator",
    "DagBag",
    "DagSerialization",
    "ObjectStoragePath",
    "TriggerEvent",
]

_COMMON_COMPAT_SDK = "airflow.providers.common.compat.sdk"

#: Where each name lives, newest Airflow first (after common-compat's shim): ``module`` or
#: ``module:name`` when the name differs there.
_LOCATIONS: dict[str, tuple[str, ...]] = {
    "AirflowException": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "AirflowFailException": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "AirflowProviderDeprecationWarning": ("airflow.exceptions",),
    "Asset": ("airflow.sdk",),
    "BaseHook": ("airflow.sdk", "airflow.hooks.base"),
    "BaseOperator": ("airflow.sdk",),
    "ObjectStoragePath": ("airflow.sdk",),
}
#: For DAG tests (ours and users'): not in common-compat, and loaded on first use only, since
#: they import Airflow's core.
_DAG_TEST_LOCATIONS: dict[str, tuple[str, ...]] = {
    "DagBag": ("airflow.dag_processing.dagbag", "airflow.models.dagbag"),
    "DagSerialization": (
        "airflow.serialization.serialized_objects",
        "airflow.serialization.serialized_objects:SerializedDAG",
    ),
}

#: For the trigger: loaded on first use too (task processes never need them).
_TRIGGER_LOCATIONS: dict[str, tuple[str, ...]] = {
    "BaseEventTrigger": ("airflow.providers.common.compat.triggers", "airflow.triggers.base"),
    "TriggerEvent": ("airflow.triggers.base",),
}
_LAZY_LOCATIONS = {**_DAG_TEST_LOCATIONS, **_TRIGGER_LOCATIONS}


def _resolve(name: str) -> Any:
    places = _LAZY_LOCATIONS.get(name) or (_COMMON_COMPAT_SDK, *_LOCATIONS[name])
    last_error: Exception | None = None
    for place in places:
        module_name, _, attribute = place.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute or name)
        except (ImportError, AttributeError) as error:
            last_error = error
    raise ImportError(
        f"clarky_provider: {name} was found in none of {', '.join(places)}. "
        "This provider supports Airflow 3.0.6 and later (docs/airflow-versions.md)."
    ) from last_error


if TYPE_CHECKING:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.exceptions import AirflowProviderDeprecationWarning
    from airflow.sdk import Asset, BaseHook, BaseOperator, ObjectStoragePath
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.triggers.base import BaseEventTrigger, TriggerEvent
else:
    AirflowException = _resolve("AirflowException")
    AirflowFailException = _resolve("AirflowFailException")
    AirflowProviderDeprecationWarning = _resolve("AirflowProviderDeprecationWarning")
    Asset = _resolve("Asset")
    BaseHook = _resolve("BaseHook")
    BaseOperator = _resolve("BaseOperator")
    ObjectStoragePath = _resolve("ObjectStoragePath")

    def __getattr__(name: str) -> Any:
        if name in _LAZY_LOCATIONS:
            return _resolve(name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
