"""``parent_table``: a child load that takes its changed parents from the warehouse.

The incremental read of a child resource lists every parent to find those whose change signal
moved (``hooks/changes.py``): every page of contacts for activities, every day. A DAG that
loads the parents in full just before (``clarky_full_sync``: contacts, then activities) has
those pages in the parents' table already, so the child load asks the warehouse instead
(``sql/parents.py``): the parents whose signal is newer than their newest child. Their lists
are read whole, by id, and merged as a snapshot of just their rows (``Scope``, as a re-sync
by ``record_ids``): a child deleted upstream under a changed parent goes too. The rotation
(``recheck_fraction``) adds its slice of the other parents.

When the tables cannot tell (no child table yet, a workspace whose parents carry no signal)
or more parents changed than a by-id read suits, the load reads through the parents' list as
without a parents' table, and says why.
"""

from __future__ import annotations

import dataclasses
import logging

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.hooks.changes import Rotation, check_fraction, day_number
from clarky_provider.hooks.stats import RequestStats
from clarky_provider.operators.plan import Plan
from clarky_provider.operators.resync import MAX_RECORD_IDS, resync_delete_mode
from clarky_provider.resources import RESOURCES, Resource
from clarky_provider.sql.dialects import WarehouseDialect
from clarky_provider.sql.load import Scope
from clarky_provider.sql.parents import ParentLink, parent_signals
from clarky_provider.sql.schema import TableLayout, check_identifier

log = logging.getLogger(__name__)


def check_parent_table(
    resource: Resource, parent_table: str, layout: TableLayout, write_mode: str, set_too: list[str]
) -> str:
    """The parents' table's name, after checking that the load can take its parents from it:
    a child resource with a change signal, its parent's key kept in the table (``layout``), a
    comparing write mode, nothing else choosing what to read (``set_too`` names the arguments
    set besides ``parent_table``)."""
    if resource.change_signal is None:
        can = sorted(r.name for r in RESOURCES.values() if r.change_signal is not None)
        raise ClarkyConfigError(
            f"parent_table needs a child resource whose parents carry a change signal ({', '.join(can)}); "
            f"{resource.name!r} has none. Leave parent_table unset."
        )
    if resource.parent_key not in layout.names:
        raise ClarkyConfigError(
            f"parent_table matches {resource.name} to their parents on {resource.parent_key!r}, which the "
            "column policy removes from the table; keep it (columns / exclude_columns)."
        )
    if write_mode not in ("merge", "history"):
        raise ClarkyConfigError(
            f"parent_table re-reads the changed parents' lists in place: use write_mode='merge' or "
            f"'history', not {write_mode!r}."
        )
    if set_too:
        raise ClarkyConfigError(
            f"parent_table chooses which parents to read; drop {', '.join(set_too)} from this task "
            "(or parent_table)."
        )
    return check_identifier(parent_table, "parent_table")


def parent_link(resource: Resource, parent_table: str, child_table: str) -> ParentLink:
    """The catalog's facts about a child and its parents, as the columns of their tables."""
    assert resource.change_signal and resource.parent and resource.parent_key and resource.cursor_field
    return ParentLink(
        parents=resource.parent,
        parent_table=parent_table,
        parent_id=RESOURCES[resource.parent].primary_key[0],
        signals=resource.change_signal.moved_by,
        child_table=child_table,
        parent_key=resource.parent_key,
        child_time=resource.cursor_field,
    )


def parents_from_table(
    plan: Plan,
    dialect: WarehouseDialect,
    parent_table: str,
    delete_mode: str | None,
    stats: RequestStats,
) -> Plan:
    """``plan`` narrowed to the parents the warehouse says changed (plus the rotation's slice),
    or ``plan`` itself when it must read through the parents' list."""
    resource, load = plan.read.resource, plan.load
    link = parent_link(resource, parent_table, load.table)
    connection = dialect.session.connect()
    try:
        signals = parent_signals(dialect, connection, load.schema, link)
    finally:
        dialect.session.close(connection)
    if signals is None:
        log.info(
            "%s cannot tell which %s changed (no %s table yet, or no parent carries %s): reading "
            "through the list of %s",
            parent_table,
            resource.parent,
            load.table,
            " or ".join(link.signals),
            resource.parent,
        )
        return plan
    rotation = Rotation(check_fraction(plan.read.recheck_fraction), day_number(plan.read.recheck_day))
    rechecked = tuple(p for p in signals.unchanged if rotation.holds(p))
    ids = signals.changed + rechecked
    if len(ids) > MAX_RECORD_IDS:
        log.info(
            "%d %s changed since %s last saw them (more than the %d a by-id read takes): reading "
            "through the list of %s",
            len(ids),
            resource.parent,
            load.table,
            MAX_RECORD_IDS,
            resource.parent,
        )
        return plan
    log.info(
        "%s: %d of %d %s changed since %s last saw them%s: reading their lists, and no list of %s",
        parent_table,
        len(signals.changed),
        len(signals.changed) + len(signals.unchanged),
        resource.parent,
        load.table,
        f", and the rotation re-reads {len(rechecked)} more" if rechecked else "",
        resource.parent,
    )
    stats.add(parents_rechecked=len(rechecked))
    narrowed = dataclasses.replace(
        load,
        scope=Scope(link.parent_key, ids),  # the plan checked the key is kept (check_parent_table)
        full_snapshot=True,
        incremental=False,
        delete_mode=resync_delete_mode(delete_mode, load.write_mode),
    )
    return plan._replace(load=narrowed)
