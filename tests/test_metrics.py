"""Each metric is defined once: the registry (vars.botflow_metrics in dbt/dbt_project.yml).

dbt reads it with metric() (macros/metrics.sql), Python with dagster_project/core/metrics.py. The
numbers each reader computes are checked against the pandas oracle elsewhere (marts, reports,
Superset, live); here: no reader carries a definition of its own, and both readers render the same SQL.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dagster_project.core.metrics import metric_sql, registry

ROOT = Path(__file__).resolve().parent.parent
READERS = [*ROOT.glob("dagster_project/**/*.py"), *ROOT.glob("models/**/*.sql"), *ROOT.glob("dbt/macros/*.sql"),
           ROOT / "superset" / "dashboards.yaml"]
# the aggregates the registry defines, as another reader would write them again
DEFINITIONS = re.compile(r"percentile_cont\s*\(|nullif\(count\((?:\w+\.)?(?:outcome|knowledge_base_hit)\)"
                         r"|avg\((?:\w+\.)?response_time_ms\)|avg\((?:\w+\.)?customer_satisfaction\)\s*,\s*2"
                         r"|filter \(where (?:\w+\.)?handoff_triggered\)\)?(?:::numeric)?\s*/")


def test_no_reader_defines_a_registry_metric_again():
    found = []
    for path in READERS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if DEFINITIONS.search(line) and not line.lstrip().startswith(("#", "--", "{#")):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == [], "define these in vars.botflow_metrics (dbt/dbt_project.yml) and read them:\n" + "\n".join(found)


def test_the_registry_names_its_column_in_every_metric():
    for metric in registry().values():
        assert "{x}" in metric.sql, metric.name
        assert metric.over("r.col").count("r.col") == metric.sql.count("{x}")
        assert metric.description


def test_an_unknown_metric_is_named_with_the_registry():
    with pytest.raises(KeyError, match="'p97_response_time_ms' is not in vars.botflow_metrics"):
        metric_sql("p97_response_time_ms")


def test_dbt_renders_the_registry_text(tmp_path):
    """The dbt macro metric() renders exactly what Python reads (compiled by dbt itself)."""
    import json
    import os
    import subprocess
    import sys

    dbt = Path(sys.executable).with_name("dbt")
    project = ROOT / "dbt"
    names = sorted(registry())
    macro_calls = " || '|' || ".join(f"$${{{{ metric('{name}') }}}}$$" for name in names)
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "BOTFLOW_DBT_HOST": "127.0.0.1",
           "BOTFLOW_DBT_PORT": "5432", "BOTFLOW_DBT_USER": "postgres", "BOTFLOW_DBT_DBNAME": "postgres"}
    out = subprocess.run([str(dbt), "compile", "--project-dir", str(project), "--profiles-dir", str(project),
                          "--target-path", str(tmp_path), "--log-format", "json", "--no-partial-parse",
                          "--inline", f"select {macro_calls}"],
                         capture_output=True, text=True, env=env, check=True).stdout
    compiled = next(json.loads(line)["data"]["compiled"] for line in out.splitlines()
                    if '"compiled"' in line and json.loads(line).get("data", {}).get("compiled"))
    rendered = re.findall(r"\$\$(.*?)\$\$", compiled, re.S)
    assert [r.strip() for r in rendered] == [metric_sql(name) for name in names]

