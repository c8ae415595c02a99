"""Render superset/dashboards.yaml into Superset's own import bundle (a ZIP of YAML files).

Every object gets a uuid derived from its name (uuid5), so importing the bundle again with
`overwrite=true` updates the same database, datasets, charts and dashboards: never duplicates.
Dataset columns (names, types) are read from the warehouse; their descriptions from the dbt docs.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml

from dagster_project.core.metrics import metric_sql, registry
from dagster_project.core.settings import REPO_ROOT

SPEC_PATH = REPO_ROOT / "superset" / "dashboards.yaml"
NAMESPACE = uuid.UUID("6f1c1d4e-7a43-4b0e-9a55-0b0f10b07f10")
DATABASE_NAME = "BotFlow warehouse"
VIZ_TYPES = {"line": "echarts_timeseries_line", "bar": "echarts_timeseries_bar", "big_number": "big_number_total",
             "table": "table", "raw_table": "table", "category_bar": "echarts_timeseries_bar"}
TEMPORAL_TYPES = {"timestamp", "timestamptz", "date"}


def stable_uuid(kind: str, name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{name}"))


def load_spec(path: Path = SPEC_PATH) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dbt_column_docs() -> dict[str, dict[str, str]]:
    """model name -> column -> description, from the YAML files of models/."""
    docs: dict[str, dict[str, str]] = {}
    for path in (REPO_ROOT / "models").rglob("_*.yml"):
        for model in (yaml.safe_load(path.read_text()) or {}).get("models", []):
            docs[model["name"]] = {c["name"]: " ".join(str(c.get("description", "")).split())
                                   for c in model.get("columns", [])}
    return docs


@dataclass(frozen=True)
class Column:
    name: str
    type: str


def describe(conn: psycopg.Connection, sql: str) -> list[Column]:
    """The columns a dataset's SQL returns, with PostgreSQL type names."""
    cur = conn.execute(f"select * from ({sql}) as q limit 0")  # noqa: S608 - the spec's own SQL
    types = dict(conn.execute("select oid, typname from pg_type where oid = any(%s)",
                              ([d.type_code for d in cur.description],)).fetchall())
    return [Column(d.name, types[d.type_code]) for d in cur.description]


def _database(uri: str) -> dict:
    return {
        "database_name": DATABASE_NAME, "sqlalchemy_uri": uri, "cache_timeout": None, "expose_in_sqllab": True,
        "allow_run_async": False, "allow_ctas": False, "allow_cvas": False, "allow_dml": False,
        "allow_file_upload": False,
        # per_user_caching: cached chart results are keyed per user (each user has its own warehouse login)
        "extra": {"allows_virtual_table_explore": True, "per_user_caching": True},
        "uuid": stable_uuid("database", DATABASE_NAME), "version": "1.0.0",
    }


def _dataset(name: str, spec: dict, columns: list[Column], docs: dict[str, dict[str, str]]) -> dict:
    described = {**docs.get("dim_bots", {}), **docs.get(spec.get("docs", ""), {})}
    return {
        "table_name": name, "schema": "marts", "sql": spec["sql"].strip(), "main_dttm_col": spec["time_column"],
        "description": spec["description"], "default_endpoint": None, "offset": 0,
        "cache_timeout": spec.get("cache_timeout"),  # -1: never cached (live data)
        "filter_select_enabled": True, "fetch_values_predicate": None, "extra": None, "normalize_columns": False,
        "always_filter_main_dttm": False, "template_params": None, "params": None,
        "uuid": stable_uuid("dataset", name), "database_uuid": stable_uuid("database", DATABASE_NAME),
        "version": "1.0.0",
        "metrics": [{"metric_name": metric, "verbose_name": metric.replace("_", " "), "metric_type": None,
                     "expression": m.get("expression") or metric_sql(metric),
                     "description": m.get("description") or registry()[metric].description, "d3format": m.get("format"),
                     "warning_text": None, "extra": None, "currency": None}
                    for metric, m in spec["metrics"].items()],
        "columns": [{"column_name": c.name, "verbose_name": None, "is_dttm": c.type in TEMPORAL_TYPES,
                     "is_active": True, "type": c.type.upper(), "groupby": True, "filterable": True,
                     "expression": None, "description": described.get(c.name) or None,
                     "python_date_format": None, "extra": None, "advanced_data_type": None}
                    for c in columns],
    }


def _time_filter(column: str, time_range: str) -> list[dict]:
    return [{"clause": "WHERE", "subject": column, "operator": "TEMPORAL_RANGE", "comparator": time_range,
             "expressionType": "SIMPLE"}]


def chart_form_and_query(name: str, chart: dict, dataset: dict) -> tuple[dict, dict]:
    """The chart's params (what Explore shows) and its query context (what /api/v1/chart/<id>/data runs)."""
    time_column = dataset["time_column"]
    time_range = chart.get("time_range", "No filter")
    metrics = chart.get("metrics", [])
    groupby = chart.get("groupby", [])
    viz = chart["viz"]
    form: dict[str, Any] = {"viz_type": VIZ_TYPES[viz], "datasource": "0__table", "row_limit": 10000,
                            "adhoc_filters": _time_filter(time_column, time_range), "extra_form_data": {}}
    filters = [{"col": time_column, "op": "TEMPORAL_RANGE", "val": time_range}]
    query: dict[str, Any] = {"filters": filters, "extras": {"having": "", "where": ""}, "applied_time_extras": {},
                             "orderby": [], "annotation_layers": [], "row_limit": 10000, "series_limit": 0,
                             "order_desc": True, "url_params": {}, "custom_params": {}, "custom_form_data": {}}
    if viz in ("line", "bar"):
        form.update({"x_axis": time_column, "time_grain_sqla": chart["grain"], "metrics": metrics, "groupby": groupby,
                     "show_legend": True, "legendOrientation": "top", "rich_tooltip": True,
                     "x_axis_time_format": "smart_date", "y_axis_format": "SMART_NUMBER", "truncateXAxis": True,
                     "x_axis_sort_asc": True})
        if viz == "bar":
            form.update({"stack": "Stack" if chart.get("stack") else None, "show_value": True, "only_total": True,
                         "orientation": "vertical"})
        query.update({
            "columns": [{"timeGrain": chart["grain"], "columnType": "BASE_AXIS", "sqlExpression": time_column,
                         "label": time_column, "expressionType": "SQL"}, *groupby],
            "series_columns": groupby, "metrics": metrics, "orderby": [[metrics[0], False]],
            "extras": {"having": "", "where": "", "time_grain_sqla": chart["grain"]},
        })
    elif viz == "category_bar":  # bars over a column's values (a histogram's buckets), in their order
        x_axis = chart["x_axis"]
        form.update({"x_axis": x_axis, "xAxisForceCategorical": True, "x_axis_sort": x_axis, "x_axis_sort_asc": True,
                     "metrics": metrics, "groupby": groupby, "show_legend": bool(groupby), "show_value": True,
                     "legendOrientation": "top", "y_axis_format": "SMART_NUMBER", "orientation": "vertical",
                     "stack": "Stack" if chart.get("stack") else None})
        query.update({
            "columns": [{"columnType": "BASE_AXIS", "sqlExpression": x_axis, "label": x_axis, "expressionType": "SQL"},
                        *groupby],
            "series_columns": groupby, "metrics": metrics, "orderby": [[x_axis, True]],
        })
    elif viz == "big_number":
        form.update({"metric": metrics[0], "header_font_size": 0.4, "subheader_font_size": 0.15,
                     "y_axis_format": "SMART_NUMBER", "time_format": "smart_date"})
        query.update({"columns": [], "metrics": metrics})
    elif viz == "table":
        form.update({"query_mode": "aggregate", "groupby": groupby, "metrics": metrics, "all_columns": [],
                     "timeseries_limit_metric": chart.get("order_by", metrics[0]), "order_desc": True,
                     "table_timestamp_format": "smart_date", "show_cell_bars": True})
        query.update({"columns": groupby, "metrics": metrics, "orderby": [[chart.get("order_by", metrics[0]), False]]})
    else:  # raw_table
        order = [chart["order_by"], not chart.get("descending", False)]
        form.update({"query_mode": "raw", "all_columns": chart["columns"], "order_by_cols": [json.dumps(order)],
                     "row_limit": 1000, "table_timestamp_format": "%Y-%m-%d %H:%M:%S"})
        query.update({"columns": chart["columns"], "metrics": [], "orderby": [order], "row_limit": 1000})
    query_context = {"datasource": {"id": 0, "type": "table"}, "force": False, "queries": [query],
                     "form_data": form, "result_format": "json", "result_type": "full"}
    return form, query_context


def _chart(name: str, chart: dict, dataset: dict) -> dict:
    form, query_context = chart_form_and_query(name, chart, dataset)
    return {"slice_name": chart["title"], "description": chart.get("description"), "certified_by": None,
            "certification_details": None, "viz_type": form["viz_type"], "params": form,
            "query_context": json.dumps(query_context), "cache_timeout": None,
            "uuid": stable_uuid("chart", name), "dataset_uuid": stable_uuid("dataset", chart["dataset"]),
            "version": "1.0.0"}


def _dashboard(slug: str, spec: dict, charts: dict, chart_numbers: dict[str, int]) -> dict:
    position: dict[str, Any] = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"id": "HEADER_ID", "type": "HEADER", "meta": {"text": spec["title"]}},
    }
    for r, row in enumerate(spec["rows"]):
        row_id = f"ROW-{slug}-{r}"
        position["GRID_ID"]["children"].append(row_id)
        position[row_id] = {"type": "ROW", "id": row_id, "children": [], "parents": ["ROOT_ID", "GRID_ID"],
                            "meta": {"background": "BACKGROUND_TRANSPARENT"}}
        for name in row:
            chart_id = f"CHART-{name}"
            position[row_id]["children"].append(chart_id)
            big = charts[name]["viz"] == "big_number"
            position[chart_id] = {
                "type": "CHART", "id": chart_id, "children": [], "parents": ["ROOT_ID", "GRID_ID", row_id],
                "meta": {"chartId": chart_numbers[name], "uuid": stable_uuid("chart", name), "width": 12 // len(row),
                         "height": 25 if big else 60, "sliceName": charts[name]["title"]}}
    native_filters = []
    for f in spec.get("filters", []):
        filter_id = "NATIVE_FILTER-" + stable_uuid("filter", f"{slug}:{f['name']}")[:18]
        native = {"id": filter_id, "name": f["name"], "type": "NATIVE_FILTER", "description": "",
                  "cascadeParentIds": [], "scope": {"rootPath": ["ROOT_ID"], "excluded": []},
                  "defaultDataMask": {"extraFormData": {}, "filterState": {}, "ownState": {}},
                  "controlValues": {"enableEmptyFilter": False}}
        if f["type"] == "time":
            native.update({"filterType": "filter_time", "targets": [{}]})
        else:
            native.update({"filterType": "filter_select",
                           "targets": [{"column": {"name": f["column"]},
                                        "datasetUuid": stable_uuid("dataset", f["dataset"])}],
                           "controlValues": {"enableEmptyFilter": False, "multiSelect": True,
                                             "defaultToFirstItem": False, "inverseSelection": False,
                                             "searchAllOptions": False}})
        native_filters.append(native)
    metadata = {"native_filter_configuration": native_filters, "refresh_frequency": spec.get("refresh_seconds", 0),
                "timed_refresh_immune_slices": [], "expanded_slices": {}, "color_scheme": "supersetColors",
                "cross_filters_enabled": False, "shared_label_colors": [], "color_scheme_domain": []}
    return {"dashboard_title": spec["title"], "description": None, "css": "", "slug": slug, "published": True,
            "certified_by": None, "certification_details": None, "position": position, "metadata": metadata,
            "uuid": stable_uuid("dashboard", slug), "version": "1.0.0"}


# Superset's importers overwrite only their own kind (a dashboard import never updates its charts),
# so sync imports the same files four times, each as one kind, in dependency order.
IMPORT_ORDER = {"database": "Database", "dataset": "SqlaTable", "chart": "Slice", "dashboard": "Dashboard"}


def render_bundles(conn: psycopg.Connection, database_uri: str, spec: dict | None = None) -> dict[str, bytes]:
    """The import ZIP per kind, for POST /api/v1/<kind>/import/ (the database password masked, passed
    apart): the same files rendered once, each ZIP's metadata naming its kind."""
    spec = spec or load_spec()
    docs = dbt_column_docs()
    files: dict[str, dict] = {"databases/BotFlow_warehouse.yaml": _database(database_uri)}
    for name, dataset in spec["datasets"].items():
        files[f"datasets/BotFlow_warehouse/{name}.yaml"] = _dataset(name, dataset, describe(conn, dataset["sql"]), docs)
    chart_numbers = {name: i for i, name in enumerate(spec["charts"], 1)}  # remapped to real ids on import
    for name, chart in spec["charts"].items():
        files[f"charts/{name}.yaml"] = _chart(name, chart, spec["datasets"][chart["dataset"]])
    for slug, dashboard in spec["dashboards"].items():
        files[f"dashboards/{slug}.yaml"] = _dashboard(slug, dashboard, spec["charts"], chart_numbers)
    rendered = {path: yaml.safe_dump(content, sort_keys=False, allow_unicode=True) for path, content in files.items()}
    timestamp = datetime.now(UTC).isoformat(timespec="seconds")
    bundles = {}
    for kind, import_type in IMPORT_ORDER.items():
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as bundle:
            bundle.writestr("botflow/metadata.yaml", yaml.safe_dump(
                {"version": "1.0.0", "type": import_type, "timestamp": timestamp}, sort_keys=False))
            for path, text in rendered.items():
                bundle.writestr(f"botflow/{path}", text)
        bundles[kind] = buffer.getvalue()
    return bundles
