"""The records an operator reads: the hook's ``paginate`` as a ``ReadPlan`` says, with progress.

A ``ResourceRecords`` is the load engine's record source (``sql.load.RecordSource``): the
engine calls it with the table's watermark, and it keeps what the operator reports after
the load (the filters of the read, and the workspace the records belong to, for lineage).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clarky_provider.operators.plan import Read, ReadPlan
from clarky_provider.operators.progress import ProgressLog

if TYPE_CHECKING:
    from clarky_provider.hooks.clarky import ClarkyHook


class ResourceRecords:
    """Call it with the table's watermark (or None) for the resource's records."""

    def __init__(self, hook: ClarkyHook, plan: ReadPlan, progress_interval: float = 30.0) -> None:
        self.hook, self.plan, self.progress_interval = hook, plan, progress_interval
        #: The read's filters, as the summary lists them, once called.
        self.filters: dict[str, Any] = {}
        #: The first record's ``workspace_id`` (the lineage namespace), once read.
        self.workspace_id: str | None = None

    def __call__(self, newest: datetime | None) -> Iterator[dict[str, Any]]:
        read = self.plan.read(newest)
        self.filters = read.filters
        return self._records(read)

    def _records(self, read: Read) -> Iterator[dict[str, Any]]:
        progress = ProgressLog(read.resource, self.hook.stats, self.progress_interval)
        records = self.hook.paginate(
            read.resource, on_page=progress.page, changed_since=read.changed_since, **read.params
        )
        for record in records:  # until a record names its workspace; then straight through
            self.workspace_id = record.get("workspace_id")
            yield record
            if self.workspace_id is not None:
                break
        yield from records
        progress.finish()
