"""Loads that survive their task being killed: the load's identity across tries, and its read
kept parent by parent in the warehouse (``sql/resume.py``) until the load lands.

A load's identity is its task instance (DAG, task, run, map index): Airflow's next try of the
same task instance resumes what the killed one read, a new run starts afresh. Plain-Python use
passes an explicit ``resume_key``. A unit is read whole and checked against its ``total``: a
parent with its list (child resources) or a created-time window (contacts; see
``hooks.listing.window_units``), never a page number, which means nothing in a list that
promises no order.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from clarky_provider.hooks.bill import plural
from clarky_provider.jsoncodec import dumps
from clarky_provider.operators.columns import RecordPolice
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


def read_fingerprint(read: Read, policy: str = "") -> str:
    """What makes two tries' reads the same read: the resource, its query and lower bound, and
    the column policy that the kept records passed (``RecordPolice.fingerprint``)."""
    what: dict[str, Any] = {"resource": read.resource, "params": read.params, "filters": read.filters}
    shape = dumps({**what, "policy": policy} if policy else what)  # the catalog's policy: as before
    return hashlib.sha256((shape or "").encode()).hexdigest()[:16]


class Progress(Protocol):
    """Where a resumable read keeps finished units until its load lands: the warehouse
    (``sql.resume.LoadProgress``) or the export's own prefix in object storage."""

    #: Records earlier tries kept (known after ``open``).
    earlier_records: int

    def open(self) -> set[str]:
        """The units earlier tries of this load finished (what cannot be resumed is dropped)."""

    def save(self, unit: str, records: list[dict[str, Any]]) -> None:
        """Keep a finished unit and its records durably before returning."""

    def close(self) -> None:
        """The read is over (finished or failed): keep what was saved, let go of connections."""

    def replay(self) -> Iterator[dict[str, Any]]:
        """Every record of every try, once per record key."""

    def discard(self) -> None:
        """Let go of local copies once the load is over."""


class ResumableRecords(ResourceRecords):
    """A resumable resource's records (``Resource.resumable``), read before the load
    (``prepare``) in units (a parent's whole list, a created-time window), each kept
    (``progress``) as it comes; units an earlier try kept are not read again, and the load
    replays them all."""

    def __init__(
        self,
        hook: ClarkyHook,
        plan: ReadPlan,
        *,
        progress: Callable[[str], Progress],
        newest: Callable[[], datetime | None] = lambda: None,
        progress_interval: float = 30.0,
        police: RecordPolice | None = None,
    ) -> None:
        """``progress(fingerprint)`` makes the store for the read with that fingerprint;
        ``newest()`` is the target's watermark, read before the load. Records are policed
        before they are kept: no try keeps what the policy removes or hashes."""
        super().__init__(hook, plan, progress_interval, police)
        self._make_progress, self._newest = progress, newest
        self.progress: Progress | None = None

    @property
    def finish(self) -> Callable[[Any], None] | None:  # type: ignore[override]
        """The warehouse's progress removes itself in the load's transaction."""
        return getattr(self.progress, "finish", None)

    def prepare(self) -> None:
        read = self.plan.read(self._newest())
        self.filters = read.filters
        self.progress = progress = self._make_progress(read_fingerprint(read, self.police.fingerprint))
        try:
            done = progress.open()
            self.earlier_records = progress.earlier_records
            if done:
                log.info(
                    "Resuming the read of Clarky %s: an earlier try kept %s (%s); reading only the rest",
                    read.resource,
                    plural(
                        len(done), "parent's list" if self.plan.resource.parent_key else "created-time window"
                    ),
                    plural(progress.earlier_records, "record"),
                )
            tracker = ProgressLog(read.resource, self.hook.stats, self.progress_interval)
            lists = self.hook.paginate_units(
                read.resource,
                skip=done,
                on_page=tracker.page,
                **read.hook_options,
                **read.params,
            )
            for parent_id, records in lists:
                progress.save(parent_id, list(map(self.police, records)))
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


def warehouse_progress(
    dialect: WarehouseDialect, load: LoadPlan, key: str, max_age_seconds: float
) -> tuple[Callable[[str], Progress], Callable[[], datetime | None]]:
    """A load's progress in its warehouse, and the target's watermark read on its own connection."""

    def progress(fingerprint: str) -> LoadProgress:
        return LoadProgress(
            dialect, load.schema, load.table, key, fingerprint, max_age_seconds, load.layout.record_key
        )

    def newest() -> datetime | None:
        connection = dialect.session.connect()
        try:
            return watermark(load, dialect, connection)
        finally:
            dialect.session.close(connection)

    return progress, newest
