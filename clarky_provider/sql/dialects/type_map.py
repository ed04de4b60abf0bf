"""An engine's column types for the logical field types (as dlt's ``type_mapping``): the only
place a dialect's ``CREATE TABLE`` and ``ADD COLUMN`` take a type name from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from clarky_provider.sql.schema import Column
from clarky_provider.tables import FieldType


@dataclass(frozen=True)
class TypeMap:
    """Every field type's column type, and the exceptions some engines need."""

    types: Mapping[FieldType, str]
    #: Types of the staging table's columns, where they differ (Snowflake stages JSON as text).
    staging: Mapping[FieldType, str] = field(default_factory=dict)
    #: The type of string key columns, where the string type cannot be a key (MySQL's TEXT).
    string_key: str | None = None

    def __getitem__(self, ftype: FieldType) -> str:
        """The column type of ``ftype`` in the target table."""
        return self.types[ftype]

    def column(self, column: Column, *, staging: bool = False) -> str:
        """The type of ``column``, in the staging table when ``staging``."""
        if staging and column.type in self.staging:
            return self.staging[column.type]
        if column.primary_key and column.type is FieldType.STRING and self.string_key:
            return self.string_key
        return self.types[column.type]
