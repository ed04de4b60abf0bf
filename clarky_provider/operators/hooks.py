"""The hooks a transfer operator builds from a connection id and its ``*_hook_params``.

As in common-sql's transfer operators, per-task settings ride in ``clarky_hook_params`` and
``sql_hook_params``; unlike most of them, a parameter the hook does not take is an error, not
silently dropped (``DbApiHook`` would swallow it in ``**kwargs``; ``dropped_params`` says how
we tell, and what can still slip through).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from difflib import get_close_matches
from functools import cached_property
from typing import TYPE_CHECKING, Any

from clarky_provider.compat import BaseHook
from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.hooks.clarky import ClarkyHook
from clarky_provider.hooks.settings import check_overrides

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

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
    """The connection's common-sql hook built with ``params`` the way ``sql_to_s3`` builds its
    hook (``Connection.get_hook(hook_params=...)``), refused if it dropped any of them."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    params = dict(params or {})
    connection = BaseHook.get_connection(conn_id)
    try:
        hook = connection.get_hook(hook_params=params)
    except Exception as error:
        # Airflow says only 'Unknown hook type "x"' (an AirflowException); its registry of
        # providers tells that case from any other failure, and which package is missing.
        if not _has_hook(connection.conn_type):
            raise ClarkyConfigError(missing_provider(conn_id, connection.conn_type)) from None
        if params and isinstance(error, TypeError):  # a constructor that refuses a name itself
            raise ClarkyConfigError(
                f"sql_hook_params: the hook of connection {conn_id!r} (type "
                f"{connection.conn_type!r}) refused them: {error}"
            ) from error
        raise
    if not isinstance(hook, DbApiHook):
        raise ClarkyConfigError(
            f"Connection {conn_id!r} is not a SQL connection (its hook is {type(hook).__name__}); "
            "use a common-sql connection such as postgres, sqlite, duckdb, mysql or snowflake."
        )
    dropped = dropped_params(hook, params)
    if dropped:
        raise ClarkyConfigError(dropped_message(hook, dropped))
    return hook


def named_params(hook_class: type[DbApiHook]) -> set[str]:
    """The keyword parameters a hook's constructors name, down to ``DbApiHook``'s (which hands
    none on to ``BaseHook``), less the connection id that ``get_hook`` sets."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    mro = hook_class.__mro__
    names: set[str] = set()
    for cls in mro[: mro.index(DbApiHook) + 1]:
        if init := cls.__dict__.get("__init__"):
            names.update(
                p.name
                for p in inspect.signature(init).parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            )
    return names - {"self", hook_class.conn_name_attr}


def dropped_params(hook: DbApiHook, params: Mapping[str, Any]) -> list[str]:
    """The ``params`` that ``hook``, built with them, did not take.

    ``DbApiHook.__init__`` takes any keyword in ``**kwargs``, so a name no constructor reads is
    dropped without a word. Hooks that read theirs from there keep each as a public attribute
    of its name (``self.warehouse = kwargs.pop("warehouse", None)``), or behind a property
    (``DbApiHook``'s ``escape_word_format``). An attribute is taken if it holds the value given;
    a property on trust, unread: reading one may connect (``inspector``), so a value the hook
    overrides there is not caught (``MySqlHook`` sets its own ``escape_word_format``).
    """
    named = named_params(type(hook))
    return sorted(
        name for name, value in params.items() if name not in named and not _kept(hook, name, value)
    )


def _kept(hook: DbApiHook, name: str, value: Any) -> bool:
    """Whether ``hook`` shows keyword argument ``name``: see ``dropped_params``."""
    if name.startswith("_"):
        return False
    if name in vars(hook):
        return bool(vars(hook)[name] == value)
    return isinstance(inspect.getattr_static(type(hook), name, None), (property, cached_property))


def dropped_message(hook: DbApiHook, dropped: list[str]) -> str:
    """Why ``dropped`` are refused, each with the names it may be a typo of: those the hook's
    constructors name or it keeps as attributes (e.g. Snowflake's ``warehouse``)."""
    hook_class = type(hook)
    named = named_params(hook_class)
    kept = {name for name in vars(hook) if not name.startswith("_")} - {hook_class.conn_name_attr}
    names = []
    for name in dropped:
        close = get_close_matches(name, (named | kept) - {name}, n=2)
        names.append(f"{name} (did you mean {' or '.join(close)}?)" if close else name)
    return (
        f"sql_hook_params: {hook_class.__name__} takes no {', '.join(names)}: a hook built with "
        f"{'it' if len(dropped) == 1 else 'them'} does not keep the value given. Its constructor "
        f"names {', '.join(sorted(named))}; the keyword arguments it reads from **kwargs are in "
        "its documentation."
    )


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
