"""The metric registry, as Python reads it: each metric's one SQL definition.

The registry is `vars.botflow_metrics` in dbt/dbt_project.yml, so dbt's models and SQL functions
(macros/metrics.sql, `metric()`) and every Python reader use the same text: the report KPIs
(serve/reports/data.py), Superset's saved metrics (serve/superset/bundle.py) and the live tables
(serve/live/refresh.py). docs/metrics.md lists every metric and where it is read.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import yaml

from dagster_project.core.settings import DBT_PROJECT_DIR


@dataclass(frozen=True)
class Metric:
    name: str
    of: str  # the column it aggregates, by its name in the marts
    sql: str  # the aggregate, with {x} for the column
    description: str

    def over(self, column: str | None = None) -> str:
        """The aggregate over `column` (default: the mart column, e.g. `r.response_time_ms` for a join)."""
        return self.sql.replace("{x}", column or self.of)


@functools.cache
def registry() -> dict[str, Metric]:
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text(encoding="utf-8"))
    return {name: Metric(name=name, **spec) for name, spec in project["vars"]["botflow_metrics"].items()}


def metric_sql(name: str, column: str | None = None) -> str:
    """The SQL of metric `name` over `column`; an unknown name raises KeyError naming the registry."""
    try:
        return registry()[name].over(column)
    except KeyError:
        raise KeyError(f"metric {name!r} is not in vars.botflow_metrics (dbt/dbt_project.yml)") from None
