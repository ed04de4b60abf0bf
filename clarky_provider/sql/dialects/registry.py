"""Which dialect a connection gets: engines register under an entry-point group, ours included.

As Airflow's ``provider.yaml`` ``dialects:`` section (read by common-sql's ``resolve_dialects``),
keyed by the names common-sql knows an engine by: a connection type (``postgres``) or the
SQLAlchemy dialect name it reads off a connection (``postgresql``). Any installed package can add
an engine, or replace one of ours, without editing this one::

    [project.entry-points."clarky_provider.dialects"]
    exasol = "my_package.clarky:ExasolDialect"

A connection whose engine nobody registered gets ANSI SQL with ``MERGE``, and a warning: no
test of ours has proven it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.sql.dialects.ansi import WarehouseDialect

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

log = logging.getLogger(__name__)

#: The entry-point group of dialects: ``<connection type or dialect name> = "module:Class"``.
ENTRY_POINT_GROUP = "clarky_provider.dialects"


class DialectRegistry(Mapping[str, type[WarehouseDialect]]):
    """Engine names (lower case) to dialect classes, as registered in ``group``.

    Read again on every use (a few tens of milliseconds, once per load), so a package installed
    or put on ``sys.path`` after start-up counts; a class is imported only when asked for.
    """

    def __init__(self, group: str) -> None:
        self.group = group

    def entries(self) -> dict[str, EntryPoint]:
        """Each name's entry point. Where several packages register one name, another package's
        entry replaces ours, and of two others the first found on ``sys.path`` is kept."""
        chosen: dict[str, EntryPoint] = {}
        for entry in entry_points(group=self.group):
            name = entry.name.lower()
            kept = chosen.get(name)
            if kept is None or (_ours(kept) and not _ours(entry)):
                chosen[name] = entry
            elif kept.value != entry.value and not _ours(entry):
                log.warning(
                    "Two Clarky dialects are registered for %r: %s and %s; using the first.",
                    name,
                    kept.value,
                    entry.value,
                )
        return chosen

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered, without importing its class."""
        return isinstance(name, str) and name.lower() in self.entries()

    def __getitem__(self, name: str) -> type[WarehouseDialect]:
        return load_dialect(self.entries()[name.lower()])

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries()))

    def __len__(self) -> int:
        return len(self.entries())


#: Every registered engine: ``DIALECTS["postgres"]`` is ``PostgresDialect``.
DIALECTS = DialectRegistry(ENTRY_POINT_GROUP)


def load_dialect(entry: EntryPoint) -> type[WarehouseDialect]:
    """The class ``entry`` names, which must be a ``WarehouseDialect``; a package that is
    registered but broken fails the load, rather than falling back to ANSI SQL."""
    try:
        dialect = entry.load()
    except Exception as exc:
        raise ClarkyConfigError(
            f"The Clarky dialect registered for {entry.name!r} ({entry.value}) could not be "
            f"loaded: {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(dialect, type) and issubclass(dialect, WarehouseDialect)):
        raise ClarkyConfigError(
            f"The Clarky dialect registered for {entry.name!r} ({entry.value}) is not a "
            "subclass of clarky_provider.sql.dialects.WarehouseDialect."
        )
    return dialect


def dialect_for(hook: DbApiHook) -> WarehouseDialect:
    """The dialect of ``hook``'s connection: by connection type, else by the SQLAlchemy dialect
    name common-sql reads off the connection (a generic or ODBC connection to a known engine)."""
    registered = DIALECTS.entries()
    for name in _engine_names(hook):
        entry = registered.get(name.lower())
        if entry is not None:
            return load_dialect(entry)(hook)
    log.warning(
        "No Clarky dialect for connection type %r (dialect %r): using ANSI SQL with MERGE, which no "
        "test of this provider has run on this engine. Registered (entry-point group %s): %s.",
        hook.conn_type,
        hook.dialect_name,
        ENTRY_POINT_GROUP,
        ", ".join(sorted(registered)),
    )
    return WarehouseDialect(hook)


def _engine_names(hook: DbApiHook) -> Iterator[str]:
    """The connection type, then (only if needed: it may build the connection's URI) the
    dialect name."""
    yield hook.conn_type or ""
    yield hook.dialect_name or ""


def _ours(entry: EntryPoint) -> bool:
    """Whether ``entry`` is one of this provider's own dialects."""
    return entry.module.partition(".")[0] == "clarky_provider"
