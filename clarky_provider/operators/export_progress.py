"""What a resumable export has read, kept in object storage until the export is published.

An export of a child resource reads one list per parent, for hours at real size, and its task
can be killed at any moment; Airflow's next try is a new process, often on another host, so
what the killed try read survives only where the export goes. An ``ExportProgress`` keeps each
finished unit (a parent whose whole list was read and checked against its ``total``) as one
object under ``<destination>/.clarky-progress-<load key>/`` as soon as it finishes, so a killed
try loses only what was in flight; the next try of the same load skips those units.

An object is one write: a header line (the read's fingerprint, the unit, its record count)
then one record per line. Object stores write an object whole or not at all; a local file
killed mid-write is short of its count or its last newline, and is ignored (its unit is read
again). The object's name starts with its save time, so whether a load is still saving is
known from a listing alone. The export replays the records from the objects (never from
memory: they may not fit), and removes the load's progress only once its parts are published;
progress of loads that never came back goes with the next successful export to the
destination, or with any export to it once older than the age the user sets.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from clarky_provider.compat import ObjectStoragePath
from clarky_provider.exceptions import ClarkyError
from clarky_provider.jsoncodec import dumps_utf8, loads

log = logging.getLogger(__name__)

#: The name of a load's progress prefix under the destination, before its load key.
PROGRESS_PREFIX = ".clarky-progress-"
#: A unit's object: ``<save time in ms>-<unit hash>.progress`` (not a data file's extension,
#: so a loader matching ``*.jsonl`` or ``*.parquet`` never takes it for one).
SUFFIX = ".progress"


def progress_prefix(destination: ObjectStoragePath, key: str) -> ObjectStoragePath:
    """Where the load ``key`` keeps its progress: a hidden prefix of the export's destination."""
    return destination / f"{PROGRESS_PREFIX}{key}"


class ExportProgress:
    """The saved progress of one export (``key``) to ``destination``, read as ``fingerprint``
    says: the ``Progress`` of ``operators.resume.ResumableRecords`` in object storage.

    :meth:`open`, :meth:`save` each finished unit, :meth:`close`; then :meth:`replay` into the
    parts; after publishing, :func:`remove_progress` removes it.
    """

    def __init__(
        self,
        destination: ObjectStoragePath,
        key: str,
        fingerprint: str,
        max_age_seconds: float,
        record_key: Callable[[dict[str, Any]], Any],
    ) -> None:
        self.destination, self.fingerprint, self.max_age_seconds = destination, fingerprint, max_age_seconds
        self.prefix = progress_prefix(destination, key)
        #: ``record_key(record)``: the key a replayed record is kept once by (several parents'
        #: lists may hold the same record).
        self.record_key = record_key
        #: Records earlier tries saved (known after ``open``).
        self.earlier_records = 0
        #: Every unit saved, by earlier tries and this one: what the replay must find.
        self.units: set[str] = set()

    def open(self) -> set[str]:
        """Drop what cannot be resumed (progress of another read of this load; other loads'
        progress past its age) and return the units earlier tries finished."""
        _remove_other_loads(
            self.destination,
            keep=self.prefix.name,
            saved_before=time.time() - self.max_age_seconds,
            why="older than the resume age",
        )
        counts: dict[str, int] = {}
        for header, _ in self._objects(any_read=True):
            if header["fingerprint"] != self.fingerprint:
                log.warning(
                    "Progress of an earlier try of this export was saved for another read (the "
                    "task's arguments changed); starting afresh"
                )
                self.prefix.rmdir(recursive=True)
                return set()
            counts.setdefault(header["unit"], header["records"])
        self.units = set(counts)
        self.earlier_records = sum(counts.values())
        return set(self.units)

    def save(self, unit: str, records: list[dict[str, Any]]) -> None:
        """Write a finished unit and its records as one object before returning (a couple of
        units a second at most: the API budget, not the store, sets the pace)."""
        header = {"fingerprint": self.fingerprint, "unit": unit, "records": len(records)}
        body = b"".join(dumps_utf8(line) + b"\n" for line in (header, *records))
        name = f"{time.time_ns() // 1_000_000:013d}-{hashlib.sha256(unit.encode()).hexdigest()[:16]}{SUFFIX}"
        target = self.prefix / name
        try:
            target.write_bytes(body)
        except FileNotFoundError:  # a local store's first unit: its directory (S3/GCS have none)
            self.prefix.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
        self.units.add(unit)

    def close(self) -> None:
        """Nothing to let go of: every unit was written whole by ``save``."""

    def replay(self) -> Iterator[dict[str, Any]]:
        """Every record of every try, once per ``record_key``, read back from the store. Fails
        if a saved unit is gone (another export removed this one's progress as abandoned)."""
        seen: set[int] = set()
        found: set[str] = set()
        for header, records in self._objects(any_read=False):
            found.add(header["unit"])
            for record in records:
                marker = hash(self.record_key(record))
                if marker not in seen:
                    seen.add(marker)
                    yield record
        if missing := self.units - found:
            raise ClarkyError(
                f"{len(missing)} parents' lists this export had read are gone from {self.prefix} "
                "(another export to the same destination removed its progress as abandoned?); "
                "nothing was published, and the next try reads them again."
            )

    def discard(self) -> None:
        """Nothing kept locally; the progress itself goes with :func:`remove_progress`."""

    def _objects(self, *, any_read: bool) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """This load's whole objects, in save order, as (header, records): those of this read
        only, unless ``any_read``. Half-written objects are skipped."""
        for path in _unit_objects(self.prefix):
            kept = _read_unit(path)
            if kept is None:
                log.info("Ignoring %s: written only in part (its try was killed while writing)", path)
            elif any_read or kept[0]["fingerprint"] == self.fingerprint:
                yield kept


def remove_progress(destination: ObjectStoragePath, key: str | None, started: float) -> None:
    """After publishing: remove the load's own progress, and that of other loads to the
    destination that saved nothing since this export ``started`` (epoch seconds): they are not
    running (abandoned, or their retry will start afresh). A failure is only logged: the
    export is published, and what is left goes with the next one."""
    try:
        if key is not None and (own := progress_prefix(destination, key)).exists():
            own.rmdir(recursive=True)
        _remove_other_loads(
            destination, keep=None, saved_before=started, why="nothing saved since this export started"
        )
    except Exception:
        log.warning(
            "Removing export progress under %s failed; the next export retries", destination, exc_info=True
        )


def _remove_other_loads(
    destination: ObjectStoragePath, *, keep: str | None, saved_before: float, why: str
) -> None:
    """Remove the progress prefixes under ``destination`` (but ``keep``) last saved before
    ``saved_before`` (epoch seconds)."""
    if not destination.exists():
        return
    for prefix in destination.iterdir():
        another_load = prefix.name.startswith(PROGRESS_PREFIX) and prefix.name != keep
        if another_load and _last_saved(prefix) < saved_before:
            log.info("Removing progress of an abandoned export (%s): %s", why, prefix)
            prefix.rmdir(recursive=True)


def _unit_objects(prefix: ObjectStoragePath) -> list[ObjectStoragePath]:
    """The unit objects under ``prefix``, oldest first (none when it does not exist)."""
    if not prefix.exists():
        return []
    return sorted((p for p in prefix.iterdir() if p.name.endswith(SUFFIX)), key=lambda p: p.name)


def _last_saved(prefix: ObjectStoragePath) -> float:
    """When the load under ``prefix`` last saved a unit (epoch seconds; 0 when never)."""
    times = [int(p.name.split("-", 1)[0]) for p in _unit_objects(prefix) if p.name.split("-", 1)[0].isdigit()]
    return max(times, default=0) / 1000


def _read_unit(path: ObjectStoragePath) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """An object's header and records, or None when it is not whole (short of its header's
    count, of its last newline, or not JSON)."""
    lines = path.read_bytes().split(b"\n")
    try:
        header = loads(lines[0])
        records = [loads(line) for line in lines[1:-1]]
    except ValueError:
        return None
    whole = (
        lines[-1] == b""
        and isinstance(header, dict)
        and {"fingerprint", "unit", "records"} <= header.keys()
        and len(records) == header["records"]
    )
    return (header, records) if whole else None
