"""The column policy: which fields of a record reach the warehouse, and which only as a keyed hash.

Compliance asks that some personal data never lands, or lands only hashed. So a load polices
each record once, as it is read and before anything keeps it (the progress of a resumable
load, the row maker, ``_raw``, the content hash, export files): what the policy removes or
hashes exists nowhere downstream. The names are checked against the catalog before any
request; the table's columns come from the same policy (``kept``), so lineage and DDL agree
with the rows. The recipe of a hash is ``hash_text``; docs/privacy.md gives it to analysts.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.jsoncodec import dumps
from clarky_provider.operators.arguments import check_choice
from clarky_provider.resources import Resource
from clarky_provider.tables import Field, FieldType

log = logging.getLogger(__name__)

#: What happens to a field the catalog does not know yet: kept in ``_raw`` only, or dropped.
ON_NEW_FIELD = ("raw", "drop")
#: The flag of a list entry (``{email, is_primary}``) that says which entry is primary: kept
#: unhashed inside a hashed field, so ``primary_email`` picks the same entry.
PRIMARY_FLAG = "is_primary"

Record = dict[str, Any]
Path = tuple[str, ...]


def check_on_new_field(value: str) -> None:
    """``raw`` or ``drop``; ``column`` is refused with the reason (docs/privacy.md)."""
    if value == "column":
        raise ClarkyConfigError(
            "on_new_field='column' is not supported: a load creates its table's columns before it reads "
            "a record, and adding one mid-load is DDL that commits the load's transaction on MySQL/MariaDB "
            "and Snowflake. Use 'raw' (kept in _raw) or 'drop'; a field added to the catalog gets its column."
        )
    check_choice("on_new_field", value, ON_NEW_FIELD)


def normalized_text(value: Any) -> str:
    """What is hashed for a scalar: a string trimmed and lower-cased (so ``Ann@X.com `` and
    ``ann@x.com`` join), anything else as its JSON text (``42``, ``1.5``, ``true``)."""
    return value.strip().lower() if isinstance(value, str) else dumps(value) or ""


def hash_text(key: bytes, value: Any) -> str:
    """HMAC-SHA-256 of ``normalized_text(value)`` (UTF-8) under ``key``, as lowercase hex."""
    return hmac.new(key, normalized_text(value).encode("utf-8"), hashlib.sha256).hexdigest()


class KeyedHash:
    """``hash_text`` under one key, which no repr, log line or exception shows."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "KeyedHash(<key hidden>)"

    def fingerprint(self) -> str:
        """Which key this is, without revealing it: a resumed load must hash with the same one."""
        return hmac.new(self._key, b"clarky-key-fingerprint", hashlib.sha256).hexdigest()[:16]

    def value(self, value: Any) -> Any:
        """A field's value hashed: arrays element by element, objects value by value (keys and
        ``is_primary`` kept), null and the empty string kept as they are."""
        if value is None or value == "":
            return value
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return {k: v if k == PRIMARY_FLAG else self.value(v) for k, v in value.items()}
        return hash_text(self._key, value)


def _names(option: str, value: Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not all(isinstance(name, str) and name for name in value):
        raise ClarkyConfigError(f"{option} must be a list of field names, e.g. ['emails'], got {value!r}.")
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True)
class ColumnPolicy:
    """A resource's policy, checked against the catalog: ``keep`` (``columns=``; None: every
    field), the paths to ``exclude`` and to ``hash``, and what to do with new fields."""

    resource: Resource
    keep: frozenset[str] | None = None
    exclude: tuple[Path, ...] = ()
    hash: tuple[Path, ...] = ()
    on_new_field: str = "raw"

    @classmethod
    def checked(
        cls,
        resource: Resource,
        *,
        columns: Sequence[str] | None = None,
        exclude_columns: Sequence[str] | None = None,
        hash_columns: Sequence[str] | None = None,
        on_new_field: str = "raw",
    ) -> ColumnPolicy:
        """The policy of the rendered options; ``ClarkyConfigError`` before any request on a
        name the catalog does not know (the message lists the known ones)."""
        check_on_new_field(on_new_field)
        fields = resource.field_index
        fixed = {*resource.primary_key, *filter(None, [resource.cursor_field])}

        def path(option: str, name: str, nested: bool) -> Path:
            parts = tuple(name.split("."))
            top = fields.get(parts[0])
            if top is None or "" in parts:
                raise ClarkyConfigError(
                    f"{option}: Clarky {resource.name} has no field {name!r}; its fields are: "
                    f"{', '.join(f.name for f in resource.fields)}."
                )
            if len(parts) > 1 and (not nested or top.type is not FieldType.OBJECT):
                where = "an object field" if nested else "a top-level field (no path)"
                raise ClarkyConfigError(f"{option}: {name!r} must name {where}.")
            if option != "columns" and parts[0] in fixed:
                raise ClarkyConfigError(
                    f"{option}: {parts[0]!r} is the key or the incremental cursor of Clarky {resource.name}; "
                    "a load needs it as it is."
                )
            return parts

        keep_names = _names("columns", columns)
        keep = (
            frozenset([*(path("columns", n, False)[0] for n in keep_names), *fixed])
            if columns is not None
            else None
        )
        exclude = tuple(path("exclude_columns", n, True) for n in _names("exclude_columns", exclude_columns))
        hashed = tuple(path("hash_columns", n, True) for n in _names("hash_columns", hash_columns))
        for p in hashed:
            if keep is not None and p[0] not in keep:
                raise ClarkyConfigError(f"hash_columns: {'.'.join(p)!r} is not among columns={sorted(keep)}.")
            if any(p[: len(e)] == e for e in exclude):
                raise ClarkyConfigError(
                    f"{'.'.join(p)!r} is both excluded and hashed; name it in one option."
                )
        return cls(resource, keep, exclude, hashed, on_new_field)

    def kept(self, fields: Iterable[Field]) -> tuple[Field, ...]:
        """The fields that have a column: named in ``columns``, and not excluded whole."""
        gone = {p[0] for p in self.exclude if len(p) == 1}
        return tuple(f for f in fields if (self.keep is None or f.name in self.keep) and f.name not in gone)

    def police(self, hasher: KeyedHash | None, *, warn: bool = True) -> RecordPolice:
        """The per-record function; ``hasher`` is required when fields are hashed; ``warn``:
        log each new field as it is first read (else the caller warns, see ``RecordPolice.warn``)."""
        if self.hash and hasher is None:
            raise ClarkyConfigError(
                "hash_columns needs hash_key_conn_id: the connection whose password is the key."
            )
        return RecordPolice(self, hasher, warn=warn)


class RecordPolice:
    """Applies a ``ColumnPolicy`` to each record (call it), and notes the fields the catalog
    does not know yet: each is listed in ``new_fields`` and, with ``warn``, logged once per load
    (the SQL operator warns instead when a field first appears in its table: ``sql/fields.py``)."""

    def __init__(self, policy: ColumnPolicy, hasher: KeyedHash | None, *, warn: bool = True) -> None:
        self.policy, self._hasher, self._warn = policy, hasher, warn
        self._known = frozenset(policy.resource.field_index)
        self._seen: set[str] = set(self._known)
        #: Fields the catalog does not know that this load's records held, in order of appearance.
        self.new_fields: list[str] = []
        keep = policy.keep
        drop_new = policy.on_new_field == "drop" or keep is not None
        self._allowed = keep if keep is not None else self._known
        self._drop_new = drop_new
        self._nested: tuple[tuple[Path, Callable[[Any], Any] | None], ...] = (
            *((p, None) for p in policy.exclude),
            *((p, hasher.value) for p in policy.hash if hasher is not None),
        )
        self._busy = drop_new or bool(self._nested)

    @property
    def fingerprint(self) -> str:
        """What a resumed load must police alike (records kept by an earlier try are policed);
        empty for the catalog's policy, which changes no record."""
        p = self.policy
        if not self._busy:
            return ""
        shape = [
            sorted(p.keep or ()),
            p.exclude,
            p.hash,
            p.on_new_field,
            self._hasher and self._hasher.fingerprint(),
        ]
        return hashlib.sha256((dumps(shape) or "").encode()).hexdigest()[:16]

    def __call__(self, record: Record) -> Record:
        if not self._seen.issuperset(record):
            self._note(record)
        if not self._busy:
            return record
        allowed = self._allowed
        if self._drop_new and not allowed.issuperset(record):
            record = {k: v for k, v in record.items() if k in allowed}
        else:
            record = dict(record)  # never change the caller's record
        for path, change in self._nested:
            _apply(record, path, change)
        return record

    def _note(self, record: Record) -> None:
        names = sorted(record.keys() - self._seen)
        self._seen.update(names)
        self.new_fields.extend(names)
        if self._warn:
            self.warn(names)

    def warn(self, names: Iterable[str], where: str = "") -> None:
        """Log that each new field in ``names`` was met (``where``: e.g. in which table first)."""
        fate = (
            "kept in the _raw column"
            if not self._drop_new
            else "dropped (not in columns=)"
            if self.policy.keep is not None
            else "dropped (on_new_field='drop')"
        )
        for name in names:
            log.warning(
                "Clarky %s has a field %r that the catalog does not know yet%s; it is %s.",
                self.policy.resource.name,
                name,
                where,
                fate,
            )


def _apply(record: Record, path: Path, change: Callable[[Any], Any] | None) -> None:
    """Remove (``change`` None) or replace the value at ``path`` in ``record``, copying each
    nested object on the way so the caller's objects stay as they were."""
    head, rest = path[0], path[1:]
    if head not in record:
        return
    if rest:
        inner = record[head]
        if isinstance(inner, dict):
            record[head] = inner = dict(inner)
            _apply(inner, rest, change)
    elif change is None:
        del record[head]
    else:
        record[head] = change(record[head])


class ColumnPolicyArguments:
    """The column-policy arguments of both operators (all templated but ``on_new_field``)."""

    COLUMN_POLICY_FIELDS = ("columns", "exclude_columns", "hash_columns", "hash_key_conn_id")

    columns: Sequence[str] | None
    exclude_columns: Sequence[str] | None
    hash_columns: Sequence[str] | None
    hash_key_conn_id: str | None
    on_new_field: str

    def set_column_policy(
        self,
        columns: Sequence[str] | None,
        exclude_columns: Sequence[str] | None,
        hash_columns: Sequence[str] | None,
        hash_key_conn_id: str | None,
        on_new_field: str,
    ) -> None:
        check_on_new_field(on_new_field)  # not templated: DAG parsing fails early
        self.columns, self.exclude_columns, self.hash_columns = columns, exclude_columns, hash_columns
        self.hash_key_conn_id, self.on_new_field = hash_key_conn_id, on_new_field

    def column_policy(self, resource: Resource) -> ColumnPolicy:
        """The rendered options checked against the catalog (no I/O)."""
        return ColumnPolicy.checked(
            resource,
            columns=self.columns,
            exclude_columns=self.exclude_columns,
            hash_columns=self.hash_columns,
            on_new_field=self.on_new_field,
        )

    def record_police(self, policy: ColumnPolicy, *, warn_new_fields: bool = True) -> RecordPolice:
        """The policy's record function, with the key read from its connection when it hashes:
        before any request, so a missing key fails first."""
        return policy.police(hash_key(self.hash_key_conn_id) if policy.hash else None, warn=warn_new_fields)


def hash_key(conn_id: str | None) -> KeyedHash:
    """The hashing key: the password of Airflow connection ``conn_id`` (never the DAG file)."""
    from clarky_provider.compat import BaseHook

    fix = (
        "set hash_key_conn_id to an Airflow connection whose password is a long random secret "
        '(e.g. AIRFLOW_CONN_CLARKY_HASH_KEY=\'{"conn_type": "generic", "password": "..."}\' or a '
        "secrets backend); keep it: another key gives other hashes."
    )
    if not conn_id:
        raise ClarkyConfigError(f"hash_columns needs a key: {fix}")
    try:
        connection = BaseHook.get_connection(conn_id)
    except Exception:
        raise ClarkyConfigError(f"hash_key_conn_id={conn_id!r}: no such Airflow connection; {fix}") from None
    if not connection.password:
        raise ClarkyConfigError(f"hash_key_conn_id={conn_id!r}: the connection has no password; {fix}")
    return KeyedHash(connection.password.encode("utf-8"))
