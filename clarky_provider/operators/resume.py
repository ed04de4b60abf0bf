"""Loads that survive their task being killed: the load's identity across tries, and its read
kept parent by parent in the warehouse (``sql/resume.py``) until the load lands.

A load's identity is its task instance (DAG, task, run, map index): Airflow's next try of the
same task instance resumes what the killed one read, a new run starts afresh. Plain-Python use
passes an explicit ``resume_key``. The read is a child resource's, whose unit is a parent with
its whole list (checked against the list's ``total``): never a page number, which means
nothing in a list that promises no order.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from clarky_provider.hooks.bill import plural
from clarky_provider.jsoncodec import dumps
from clarky_provider.operators.plan import Read, ReadPlan
from clarky_provider.operators.progress import ProgressLog
from clarky_provider.operators.records import ResourceRecords
from clarky_provider.sql.dialects import WarehouseDialect
from clarky_provider.sql.load import LoadPlan, watermark
from clarky_provider.sql.resume import LoadProgress

if TYPE_CHECKING:
    from clarky_provider.hooks.clarky import ClarkyHook

log = logging.getLogger(__name__)


def load_key(context: Mapping[str, Any], explicit: str | None) -> str | None:
    """The load's identity across tries: ``explicit``, else the task instance in ``context``;
    None (not resumable) outside Airflow without one. Hashed: a fixed width, nothing to escape."""
    if explicit:
        identity = f"key\x1f{explicit}"
    else:
        ti = context.get("ti")
        if ti is None:
            return None
        identity = "\x1f".join(
            str(part) for part in ("ti", ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1))
        )
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def read_fingerprint(read: Read) -> str:
    """What makes two tries' reads the same read: the resource, its query and lower bound."""
    shape = dumps({"resource": read.resource, "params": read.params, "filters": read.filters})
    return hashlib.sha256((shape or "").encode()).hexdigest()[:16]


class ResumableRecords(ResourceRecords):
    """A child resource's records, read before the load's transaction (``prepare``): each
    parent's finished list is kept in the warehouse as it comes, parents an earlier try kept
    are not read again, and the load replays them all. ``finish`` removes the progress in the
    load's transaction."""

    def __init__(
        self,
        hook: ClarkyHook,
        plan: ReadPlan,
        progress_interval: float,
        *,
        dialect: WarehouseDialect,
        load: LoadPlan,
        key: str,
        max_age_seconds: float,
    ) -> None:
        super().__init__(hook, plan, progress_interval)
        self.dialect, self.load, self.key, self.max_age_seconds = dialect, load, key, max_age_seconds
        self.progress: LoadProgress | None = None

    def prepare(self) -> None:
        read = self.plan.read(self._watermark())
        self.filters = read.filters
        self.progress = progress = LoadProgress(
            self.dialect,
            self.load.schema,
            self.load.table,
            self.key,
            read_fingerprint(read),
            self.max_age_seconds,
            self.load.layout.record_key,
        )
        self.finish = progress.finish
        try:
            done = progress.open()
            self.earlier_records = progress.earlier_records
            if done:
                log.info(
                    "Resuming the load of Clarky %s into %s: an earlier try kept the lists of %s "
                    "(%s); reading only the rest",
                    read.resource,
                    self.load.table,
                    plural(len(done), "parent"),
                    plural(progress.earlier_records, "record"),
                )
            tracker = ProgressLog(read.resource, self.hook.stats, self.progress_interval)
            lists = self.hook.paginate_by_parent(
                read.resource,
                skip=done,
                on_page=tracker.page,
                changed_since=read.changed_since,
                **read.params,
            )
            for parent_id, records in lists:
                progress.save(parent_id, records)
            tracker.finish()
        finally:
            progress.close()  # keeps what finished, even when the read failed

    def __call__(self, newest: Any) -> Iterator[dict[str, Any]]:
        """The records of every try, whatever the watermark is now: the read was planned from
        the one ``prepare`` found (another load may have landed since; a merge takes both)."""
        assert self.progress is not None, "prepare() reads the records first"
        return self.noting_workspace(self.progress.replay())

    def close(self) -> None:
        if self.progress is not None:
            self.progress.discard()

    def _watermark(self) -> Any:
        session = self.dialect.session
        connection = session.connect()
        try:
            return watermark(self.load, self.dialect, connection)
        finally:
            session.close(connection)
