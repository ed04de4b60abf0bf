"""A load planned from the catalog: the table a resource makes, and how to read it.

The operators turn the user's arguments into a ``ReadPlan`` (filters checked and encoded
once, before any request) and a ``TableSpec``; ``sql/`` gets only the spec and, once it knows
the table's watermark, asks for records with it: ``ReadPlan.read`` turns that watermark into
the hook's read. So the SQL layer never sees an API filter, and the hook never sees a table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any, NamedTuple

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.hooks.changes import check_fraction, day_number
from clarky_provider.normalize import minus_one_millisecond, primary_email, primary_phone, require_timestamp
from clarky_provider.operators.columns import ColumnPolicy
from clarky_provider.resources import Resource, encode_filters
from clarky_provider.sql.load import LoadPlan
from clarky_provider.tables import DerivedField, FieldType, TableSpec

log = logging.getLogger(__name__)

#: Convenience columns of the resources whose records hold these list fields: their primary entry.
_DERIVED = (
    ("emails", DerivedField("primary_email", FieldType.STRING, primary_email)),
    ("phone_numbers", DerivedField("primary_phone", FieldType.STRING, primary_phone)),
)


def table_spec(resource: Resource, policy: ColumnPolicy | None = None) -> TableSpec:
    """The table of a catalog resource: its typed fields, key, convenience columns and cursor;
    with a column policy, only the fields it keeps, and the derived columns of those."""
    fields = policy.kept(resource.fields) if policy is not None else resource.fields
    names = {f.name for f in fields}
    return TableSpec(
        source=f"Clarky {resource.name}",
        fields=fields,
        primary_key=resource.primary_key,
        derived=tuple(column for name, column in _DERIVED if name in names),
        cursor=resource.cursor_field,
    )


def window_filters(
    resource: Resource, window_start: str | datetime | None, window_end: str | datetime | None
) -> dict[str, Any]:
    """A backfill window as the resource's partition filters: start inclusive, end exclusive."""
    if window_start is None and window_end is None:
        return {}
    if resource.partition_filters is None:
        raise ClarkyConfigError(
            f"Backfill windows need a resource with created_after/created_before filters; {resource.name!r} has none."
        )
    after, before = resource.partition_filters
    window: dict[str, Any] = {}
    start = require_timestamp(window_start, "window_start") if window_start else None
    end = require_timestamp(window_end, "window_end") if window_end else None
    if start and end and start >= end:
        raise ClarkyConfigError(
            f"window_start ({start.isoformat()}) must be before window_end ({end.isoformat()})."
        )
    if start:
        window[after] = start
    if end:
        window[before] = minus_one_millisecond(end)  # the API's bound is inclusive; ours is exclusive
    return window


@dataclass(frozen=True)
class Read:
    """One read of a resource, as the hook's ``paginate`` takes it."""

    resource: str
    #: The API filters, encoded as query parameters.
    params: dict[str, str]
    #: The lower bound of a child resource's incremental read.
    changed_since: datetime | None
    #: The filters as the run's summary lists them (timestamps in ISO 8601).
    filters: dict[str, Any]
    #: The share of parents a child resource's incremental read re-reads whole (0: none), and
    #: the run's day, which picks the slice (``hooks.changes.Rotation``).
    recheck_fraction: float = 0.0
    recheck_day: int = 0

    @property
    def hook_options(self) -> dict[str, Any]:
        """What ``ClarkyHook.paginate``/``paginate_units`` take besides the filters: the
        incremental bound and the rotation."""
        return {
            "changed_since": self.changed_since,
            "recheck_fraction": self.recheck_fraction,
            "recheck_day": self.recheck_day,
        }


@dataclass(frozen=True)
class ReadPlan:
    """How a load reads its resource: the user's filters and backfill window, and the lower
    bound of an incremental read (``updated_after``, else the table's watermark less
    ``watermark_overlap``), and the rotation of a child resource's incremental read:
    ``recheck_fraction`` of its parents re-read whole per run (1/7: each once a week; 0: off),
    the slice chosen by ``recheck_day`` (the run's date; default today, UTC). The filters and
    the fraction are checked here, before any request."""

    resource: Resource
    filters: dict[str, Any]
    updated_after: datetime | None = None
    watermark_overlap: timedelta = timedelta(0)
    recheck_fraction: float | str = 0.0
    recheck_day: date | datetime | str | None = None
    params: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", encode_filters(self.resource, self.filters))
        check_fraction(self.recheck_fraction)
        day_number(self.recheck_day)

    def read(self, newest: datetime | None) -> Read:
        """The read given the table's newest cursor value (None: an empty table, or a load
        that does not start from it): the lower bound goes in the resource's incremental
        filter, or in ``changed_since`` for a child whose parents signal changes."""
        resource = self.resource
        lower = self.updated_after
        if lower is None and newest is not None:
            lower = newest - self.watermark_overlap
            log.info(
                "Incremental load of %s: %s from %s",
                resource.name,
                resource.incremental_filter or "parents changed",
                lower.isoformat(),
            )
        filters, params = dict(self.filters), dict(self.params)
        if lower is not None and resource.incremental_filter:
            filters[resource.incremental_filter] = lower
            params.update(encode_filters(resource, {resource.incremental_filter: lower}))
        changed_since = lower if lower is not None and resource.change_signal else None
        fraction = check_fraction(self.recheck_fraction) if changed_since is not None else Fraction(0)
        if changed_since is not None:
            filters["changed_since"] = changed_since
        if fraction:
            filters["recheck_fraction"] = str(fraction)
        shown = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in filters.items()}
        return Read(
            resource.name, params, changed_since, shown, float(fraction), day_number(self.recheck_day)
        )


class Plan(NamedTuple):
    """A load, complete and validated before the first request or write."""

    read: ReadPlan
    load: LoadPlan
    #: The column policy, checked against the catalog; the load's table is made from it.
    columns: ColumnPolicy
    #: Where a child load finds its changed parents instead of their list (``parent_table``).
    parent_table: str | None = None
