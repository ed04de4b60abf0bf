"""The hooks a transfer operator builds from a connection id and its ``*_hook_params``.

As in common-sql's transfer operators, per-task settings ride in ``clarky_hook_params`` and
``sql_hook_params``; unlike most of them, a parameter the hook does not take is an error that
names the ones it does, never silently dropped (``DbApiHook`` would swallow it in ``**kwargs``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from contextlib import suppress
from functools import cache
from typing import TYPE_CHECKING, Any

from clarky_provider.compat import BaseHook
from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.hooks.clarky import ClarkyHook
from clarky_provider.hooks.settings import check_overrides

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

#: Keyword arguments a hook reads from ``**kwargs`` in its ``__init__`` (``kwargs.get("x")``).
_KWARGS_READ = re.compile(r"""kwargs(?:\.get|\.pop|\.setdefault)?[(\[]\s*["'](\w+)["']""")
#: Constructor arguments that are not settings: set by the operator or by Airflow.
_NOT_SETTINGS = {"self", "connection", "context", "logger_name"}
#: The provider package of each warehouse's connection type, and our extra that installs it
#: (None: the package is all there is). Other types get ``apache-airflow-providers-<type>``.
PROVIDER_PACKAGES: dict[str, tuple[str, str | None]] = {
    "sqlite": ("apache-airflow-providers-sqlite", None),
    "postgres": ("apache-airflow-providers-postgres", "postgres"),
    "mysql": ("apache-airflow-providers-mysql", "mysql"),
    "duckdb": ("apache-airflow-providers-duckdb", "duckdb"),
    "snowflake": ("apache-airflow-providers-snowflake", "snowflake"),
}


def clarky_hook(conn_id: str, params: Mapping[str, Any] | None) -> ClarkyHook:
    """A ``ClarkyHook`` with this task's overrides of the connection's extras, checked first so
    that an error names ``clarky_hook_params``, where the user set them."""
    check_overrides(params or {}, "clarky_hook_params", also_valid=("max_retry_seconds",))
    return ClarkyHook(conn_id, **dict(params or {}))


def sql_hook(conn_id: str, params: Mapping[str, Any] | None) -> DbApiHook:
    """The connection's common-sql hook, built with ``params`` once they are known to it."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    connection = BaseHook.get_connection(conn_id)
    try:
        hook = connection.get_hook()
    except Exception:
        # Airflow says only 'Unknown hook type "x"' (an AirflowException); its registry of
        # providers tells that case from any other failure, and which package is missing.
        if _has_hook(connection.conn_type):
            raise
        raise ClarkyConfigError(missing_provider(conn_id, connection.conn_type)) from None
    hook_class: Any = type(hook)
    if not isinstance(hook, DbApiHook):
        raise ClarkyConfigError(
            f"Connection {conn_id!r} is not a SQL connection (its hook is {hook_class.__name__}); "
            "use a common-sql connection such as postgres, sqlite, duckdb, mysql or snowflake."
        )
    unknown = sorted(set(params or {}) - accepted_params(hook_class))
    if unknown:
        raise ClarkyConfigError(
            f"sql_hook_params: {hook_class.__name__} takes no {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(accepted_params(hook_class)))}."
        )
    return connection.get_hook(hook_params=dict(params)) if params else hook


@cache
def accepted_params(hook_class: Any) -> frozenset[str]:
    """The settings a hook class's constructors take: named parameters, and the keyword
    arguments they read out of ``**kwargs`` (how most Airflow hooks take theirs)."""
    names: set[str] = set()
    for cls in hook_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None or cls is object:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                names.add(parameter.name)
        with suppress(OSError, TypeError):  # no source (a C extension): its named parameters are all
            names.update(_KWARGS_READ.findall(inspect.getsource(init)))
    conn_attr = getattr(hook_class, "conn_name_attr", None)
    return frozenset(names - _NOT_SETTINGS - {conn_attr})


def providers_manager() -> Any:
    """The registry of installed providers that ``Connection.get_hook`` looks hooks up in:
    the task SDK's own from Airflow 3.2, the core's before (both read the same packages)."""
    try:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:
        from airflow.providers_manager import ProvidersManager

        return ProvidersManager()
    return ProvidersManagerTaskRuntime()


def _has_hook(conn_type: str | None) -> bool:
    """Whether an installed provider gives ``conn_type`` a hook that imports."""
    return bool(conn_type) and providers_manager().hooks.get(conn_type) is not None


def missing_provider(conn_id: str, conn_type: str | None) -> str:
    """Why connection ``conn_id`` has no hook, and the package that gives it one."""
    if not conn_type:
        return (
            f"Connection {conn_id!r} has no connection type; set it to the warehouse's, such as "
            "postgres, sqlite, duckdb, mysql or snowflake."
        )
    package, extra = PROVIDER_PACKAGES.get(conn_type, (None, None))
    if conn_type in providers_manager().hooks:  # registered, but its hook failed to import
        return (
            f"Connection {conn_id!r} is of type {conn_type!r}: an installed provider"
            f"{f' ({package})' if package else ''} registers that type, but its hook could not be "
            'imported. Airflow logged why, as a warning "Exception when importing ..." whose '
            "error names the missing module (often the database driver): install that module, or "
            "reinstall the provider."
        )
    if package is None:
        guess = f"apache-airflow-providers-{conn_type.replace('_', '-')}"
        install = f"install its provider, probably {guess} (a guess from the type's name)"
    elif extra is None:
        install = f"install {package} (pip install {package})"
    else:
        install = (
            f"install {package} (pip install 'airflow-provider-clarky[{extra}]' installs it with "
            "the driver the load uses)"
        )
    return (
        f"Connection {conn_id!r} is of type {conn_type!r}, and no installed Airflow provider "
        f"serves that type: {install}."
    )
