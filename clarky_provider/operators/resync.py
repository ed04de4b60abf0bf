"""Targeted re-syncs (``record_ids``): exactly the named records read again and merged.

Support asks for one contact fixed now; a whole resource read again would cost every page.
The named records are read by id (``ClarkyHook.get_records``: one request per record, or per
parent's whole list for a child resource) and loaded as a full snapshot of just their rows
(``sql.load.Scope``): a record that changed is written, an unchanged one is not, and a row of
a named id that the API no longer has (404, or a child gone from its parent's list) is deleted
as ``delete_mode`` says (``remove`` unless set; a history closes its version). Every other
row is untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.operators.columns import RecordPolice
from clarky_provider.operators.plan import ReadPlan
from clarky_provider.operators.records import ResourceRecords
from clarky_provider.resources import Resource
from clarky_provider.sql.load import Scope
from clarky_provider.sql.schema import TableLayout

if TYPE_CHECKING:
    from clarky_provider.hooks.clarky import ClarkyHook

#: A re-sync is for a handful of records: one request each. More is a full load's job.
MAX_RECORD_IDS = 1000


def record_id_list(value: Any) -> tuple[str, ...] | None:
    """The rendered ``record_ids``: a list, or a string of ids separated by commas or spaces
    (a DAG param rendered as text), in order, each once; None when not a re-sync. Given but
    empty is an error, never a full load."""
    if value is None:
        return None
    items = re.split(r"[\s,]+", value) if isinstance(value, str) else list(value)
    ids = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
    if not ids:
        raise ClarkyConfigError(
            "record_ids names no record; pass at least one id (for a whole resource, leave record_ids unset)."
        )
    if len(ids) > MAX_RECORD_IDS:
        raise ClarkyConfigError(
            f"record_ids names {len(ids)} records; a targeted re-sync takes at most {MAX_RECORD_IDS} "
            "(one request each). Run a full merge (incremental='full') instead."
        )
    return ids


def resync_scope(
    resource: Resource, layout: TableLayout, ids: tuple[str, ...], write_mode: str, set_too: list[str]
) -> Scope:
    """The rows a re-sync of ``ids`` replaces, after checking it can run: a resource readable
    by id, a comparing write mode, and no other choice of what to read (``set_too`` names the
    arguments the user set besides ``record_ids``)."""
    resource.check_readable_by_id()
    if write_mode not in ("merge", "history"):
        raise ClarkyConfigError(
            f"record_ids re-syncs rows in place: use write_mode='merge' or 'history', not {write_mode!r}."
        )
    if set_too:
        raise ClarkyConfigError(
            f"record_ids names exactly what to read; drop {', '.join(set_too)} from this task."
        )
    column = resource.parent_key or resource.primary_key[0]
    if column not in layout.names:
        raise ClarkyConfigError(
            f"record_ids of {resource.name} are matched on {column!r}, which the column policy "
            "removes from the table; keep it (columns / exclude_columns)."
        )
    return Scope(column, ids)


def resync_delete_mode(delete_mode: str | None, write_mode: str) -> str:
    """What happens to a named row the API no longer has: as ``delete_mode`` says, else removed
    (a history closes the version either way)."""
    return delete_mode or ("flag" if write_mode == "history" else "remove")


class NamedRecords(ResourceRecords):
    """The records of a re-sync: those of ``scope``'s ids, read by id, whatever the watermark."""

    def __init__(
        self,
        hook: ClarkyHook,
        plan: ReadPlan,
        scope: Scope,
        police: RecordPolice | None = None,
        parent_table: str | None = None,
    ) -> None:
        super().__init__(hook, plan, police=police)
        self.scope = scope
        #: The ids' source in the summary: named by the user, or a parents' table (``parent_table``).
        self.chosen_by = (
            {"parent_table": parent_table, "parents": len(scope.values)} if parent_table else None
        )
        #: The ids the API answered 404 for (records, or parents, it no longer has).
        self.missing: list[str] = []

    def __call__(self, newest: datetime | None) -> Iterator[dict[str, Any]]:
        found = self.hook.get_records(self.plan.resource.name, self.scope.values)
        self.missing = found.missing
        self.filters = self.chosen_by or {"record_ids": list(self.scope.values)}
        return self.noting_workspace(map(self.police, found.records))
