"""What an engine can do, in one frozen record per engine: the load engine reads it to choose
its path (staging or straight into the target, when DDL may run), the operator to check names.

As dlt's ``DestinationCapabilitiesContext``: facts, not code; an engine states them once
beside its dialect (``WarehouseDialect.capabilities``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Capabilities:
    """The defaults are ANSI SQL's, as far as a load can rely on them."""

    #: Whether DDL joins the load's transaction. Where it does not (MySQL, Snowflake: DDL
    #: commits), the load creates and stages first, changes the target in a transaction of DML
    #: only (``Session.begin_changes``), undoes the DDL of a failed load, and never loads
    #: straight into the target.
    transactional_ddl: bool = True
    #: Whether a merge or replace into an empty target streams straight into it, the engine
    #: keeping other writers out until commit (``Session.lock_empty_target``), instead of staging.
    direct_first_loads: bool = False
    #: Whether appends stream straight into the target (not where the bulk path itself commits).
    direct_appends: bool = True
    #: How the engine folds unquoted names: ``"lower"`` (PostgreSQL), ``"upper"`` (Snowflake),
    #: or None where quotes do not change how a name is found (SQLite and DuckDB match any case;
    #: MySQL treats a name alike quoted or not, per ``lower_case_table_names``) or where we
    #: cannot know (ANSI). Where it folds, ``check_case`` refuses a name that would be stored
    #: otherwise, since it would then answer only in quotes.
    unquoted_case: Literal["lower", "upper"] | None = None
    #: Whether tables live in schemas the load may name (SQLite has none).
    schemas: bool = True
    #: Fewest rows a bulk batch holds, whatever the load's ``batch_size``: for a bulk call with
    #: a high fixed cost (Snowflake's ``write_pandas``: a stage, a PUT and a ``COPY INTO``).
    min_batch_rows: int = 1
    #: Most rows a bulk batch holds, or None for the load's ``batch_size`` (MySQL's ``LOAD
    #: DATA`` files: the last one is waited for, so smaller ones shorten the wait).
    max_batch_rows: int | None = None

    def batch_rows(self, requested: int) -> int:
        """Rows per batch of the engine's bulk path, for a load that asks for ``requested``."""
        rows = max(requested, self.min_batch_rows)
        return rows if self.max_batch_rows is None else min(rows, self.max_batch_rows)
