"""The records an operator reads: the hook's ``paginate`` as a ``ReadPlan`` says, with progress.

A ``ResourceRecords`` is the load engine's record source (``sql.load.RecordSource``): the
engine calls it with the table's watermark, and it keeps what the operator reports after
the load (the filters of the read, and the workspace the records belong to, for lineage).
A resumable load's source (``operators/resume.py``) reads before the load instead: ``prepare``
and ``finish`` are its moments, no-ops here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clarky_provider.operators.columns import ColumnPolicy, RecordPolice
from clarky_provider.operators.plan import Read, ReadPlan
from clarky_provider.operators.progress import ProgressLog

if TYPE_CHECKING:
    from clarky_provider.hooks.clarky import ClarkyHook


class ResourceRecords:
    """Call it with the table's watermark (or None) for the resource's records."""

    #: Runs last in the load's transaction (``sql.load.load``'s ``finish``), where one is needed.
    finish: Callable[[Any], None] | None = None

    def __init__(
        self,
        hook: ClarkyHook,
        plan: ReadPlan,
        progress_interval: float = 30.0,
        police: RecordPolice | None = None,
    ) -> None:
        """``police`` applies the load's column policy to each record as it is read, before
        anything keeps it (the default: the catalog's, which only notes new fields)."""
        self.hook, self.plan, self.progress_interval = hook, plan, progress_interval
        self.police = police or ColumnPolicy(plan.resource).police(None)
        #: The read's filters, as the summary lists them, once called.
        self.filters: dict[str, Any] = {}
        #: The first record's ``workspace_id`` (the lineage namespace), once read.
        self.workspace_id: str | None = None
        #: Records an earlier try of the load read (a resumed load).
        self.earlier_records = 0

    def prepare(self) -> None:
        """Before the load's transaction: nothing to do for a read that streams into it."""

    def close(self) -> None:
        """After the load, landed or not: nothing held here."""

    def __call__(self, newest: datetime | None) -> Iterator[dict[str, Any]]:
        read = self.plan.read(newest)
        self.filters = read.filters
        return self.noting_workspace(self._records(read))

    def _records(self, read: Read) -> Iterator[dict[str, Any]]:
        progress = ProgressLog(read.resource, self.hook.stats, self.progress_interval)
        yield from map(
            self.police,
            self.hook.paginate(read.resource, on_page=progress.page, **read.hook_options, **read.params),
        )
        progress.finish()

    def noting_workspace(self, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """``records``, noting the workspace of the first record that names one."""
        records = iter(records)
        for record in records:  # until a record names its workspace; then straight through
            self.workspace_id = record.get("workspace_id")
            yield record
            if self.workspace_id is not None:
                break
        yield from records
