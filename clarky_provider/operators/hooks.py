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

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

#: Keyword arguments a hook reads from ``**kwargs`` in its ``__init__`` (``kwargs.get("x")``).
_KWARGS_READ = re.compile(r"""kwargs(?:\.get|\.pop|\.setdefault)?[(\[]\s*["'](\w+)["']""")
#: Constructor arguments that are not settings: set by the operator or by Airflow.
_NOT_SETTINGS = {"self", "connection", "context", "logger_name"}


def clarky_hook(conn_id: str, params: Mapping[str, Any] | None) -> ClarkyHook:
    """A ``ClarkyHook`` with this task's overrides of the connection's extras (it checks them)."""
    return ClarkyHook(conn_id, **dict(params or {}))


def sql_hook(conn_id: str, params: Mapping[str, Any] | None) -> DbApiHook:
    """The connection's common-sql hook, built with ``params`` once they are known to it."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    connection = BaseHook.get_connection(conn_id)
    hook = connection.get_hook()
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
