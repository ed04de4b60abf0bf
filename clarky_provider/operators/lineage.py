"""OpenLineage for Clarky loads: the Clarky resource in, the warehouse table out.

Imported only when an OpenLineage listener asks, so the provider works without the
openlineage provider installed. Lineage must never fail a task: errors are logged, and no
lineage is returned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadLineage:
    """What a finished load knows about its input and output, recorded during execute."""

    api_base_url: str
    workspace_id: str | None
    resource: str
    sql_conn_id: str
    schema: str | None
    table: str
    columns: tuple[tuple[str, str], ...]
    rows: int


def input_namespace(api_base_url: str, workspace_id: str | None) -> str:
    """``clarky://<host>[/<workspace>]``: one namespace per Clarky workspace."""
    host = urlsplit(api_base_url).netloc
    return f"clarky://{host}/{workspace_id}" if workspace_id else f"clarky://{host}"


def _output_dataset_id(lineage: LoadLineage) -> tuple[str, str]:
    """(namespace, name) of the warehouse table, following OpenLineage's naming for the database."""
    from clarky_provider.compat import BaseHook

    connection = BaseHook.get_connection(lineage.sql_conn_id)
    hook = connection.get_hook()
    info = hook.get_openlineage_database_info(connection)
    if info is not None:
        schema = lineage.schema or hook.get_openlineage_default_schema()
        parts = [p for p in (info.database, schema, lineage.table) if p]
        return f"{info.scheme}://{info.authority}", ".".join(parts)
    location = connection.host or connection.schema or ""
    parts = [p for p in (lineage.schema, lineage.table) if p]
    return f"{connection.conn_type}://{location}", ".".join(parts)


def build_lineage(lineage: LoadLineage) -> OperatorLineage | None:
    try:
        from airflow.providers.common.compat.openlineage.facet import (
            Dataset,
            DocumentationDatasetFacet,
            OutputDataset,
            OutputStatisticsOutputDatasetFacet,
            SchemaDatasetFacet,
            SchemaDatasetFacetFields,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage

        namespace, name = _output_dataset_id(lineage)
        schema_facet = SchemaDatasetFacet(
            fields=[SchemaDatasetFacetFields(name=column, type=ctype) for column, ctype in lineage.columns]
        )
        source = Dataset(
            namespace=input_namespace(lineage.api_base_url, lineage.workspace_id),
            name=lineage.resource,
            facets={
                "documentation": DocumentationDatasetFacet(
                    description=f"Clarky API resource {lineage.resource}"
                )
            },
        )
        target = OutputDataset(
            namespace=namespace,
            name=name,
            facets={"schema": schema_facet},
            outputFacets={"outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=lineage.rows)},
        )
        return OperatorLineage(inputs=[source], outputs=[target])
    except Exception:
        log.warning("Could not build OpenLineage facets for Clarky %s", lineage.resource, exc_info=True)
        return None


def column_types(dialect: Any, layout: Any) -> tuple[tuple[str, str], ...]:
    return tuple((c.name, dialect.types[c.type]) for c in layout.columns)
