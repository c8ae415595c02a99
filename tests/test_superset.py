"""Superset against a real Superset: sync twice, every chart's numbers, row-level security, the reader
role's limits, and every dashboard rendered in headless Chromium.

Superset runs from its own virtualenv (created on first use, cached under ~/.cache/botflow), with a
metadata database of its own on the test PostgreSQL, on a free port. Expected numbers are computed
with pandas over the marts, independently of the SQL of the saved metrics.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import oracle
import pandas as pd
import psycopg
import pytest
from conftest import (
    REPO,
    RUN_TAG,
    build_window,
    create_database,
    database_url,
    drop_database,
    free_port,
    module_scenario,
)

from dagster_project.settings import Settings
from dagster_project.simulate import Trickle, simulate
from dagster_project.superset import service
from dagster_project.superset.api import SupersetApi, SupersetError
from dagster_project.superset.bundle import load_spec, render_bundles, stable_uuid
from dagster_project.superset.sync import READER_ROLE, grant, import_bundles, reader_uri, sync

ARTIFACTS = REPO / "test-artifacts" / "superset"
DAYS = 2


@pytest.fixture(scope="module")
def superset(dagster_instance, tmp_path_factory):
    home = tmp_path_factory.mktemp("botflow_home")
    metadata_db = f"bf_test_superset_meta_{RUN_TAG}"
    create_database(metadata_db)
    env = {"BOTFLOW_HOME": str(home), "BOTFLOW_SUPERSET_PORT": str(free_port()),
           "BOTFLOW_SUPERSET_METADATA_URL": database_url(metadata_db)}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    today = datetime.now(UTC).date()
    start = today - timedelta(days=DAYS)
    with module_scenario("superset") as (scenario,):
        with scenario.source() as conn:
            simulate(conn, "public", start, DAYS, seed=5, conversations_per_day=80)
            trickle = Trickle(conn, "public", seed=9)  # traffic in the last minutes, for the live dashboard
            for _ in range(40):
                trickle.step()
        build_window(dagster_instance, start, today)
        from conftest import run_job

        from dagster_project.live_definitions import defs as live_defs
        run_job(dagster_instance, "live_job", defs=live_defs)
        settings = Settings.from_env()
        s = service.up(settings, progress=lambda _line: None)
        try:
            sync(s, scenario.warehouse_url, progress=lambda _line: None)
            yield scenario, s
        finally:
            service.stop(s)
            drop_database(metadata_db)
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def admin(s) -> SupersetApi:
    return SupersetApi(s.url, s.admin_user, s.admin_password)


def charts_by_uuid(api: SupersetApi) -> dict[str, dict]:
    """Superset's charts keyed by the uuid the bundle gave them (read back from each chart)."""
    out = {}
    for row in api.list_all("/api/v1/chart/", ["id", "slice_name", "uuid"]):
        out[str(row["uuid"])] = row
    return out


# -- sync ------------------------------------------------------------------------------------------
def test_sync_twice_updates_and_never_duplicates(superset):
    scenario, s = superset
    spec = load_spec()
    sync(s, scenario.warehouse_url, progress=lambda _line: None)  # the second sync
    api = admin(s)
    charts = charts_by_uuid(api)
    assert sorted(charts) == sorted(stable_uuid("chart", name) for name in spec["charts"])
    datasets = api.list_all("/api/v1/dataset/", ["id", "table_name"])
    assert sorted(d["table_name"] for d in datasets) == sorted(spec["datasets"])
    dashboards = api.list_all("/api/v1/dashboard/", ["id", "slug"])
    assert sorted(d["slug"] for d in dashboards) == sorted(spec["dashboards"])
    assert len(api.list_all("/api/v1/database/", ["id"])) == 1

    # an edited spec updates the same chart in place
    edited = copy.deepcopy(spec)
    edited["charts"]["kpi_csat"]["title"] = "CSAT (edited)"
    with psycopg.connect(scenario.warehouse_url) as conn:
        bundles = render_bundles(conn, reader_uri(scenario.warehouse_url, None), edited)
    import_bundles(api, bundles, s.reader_password)
    after = charts_by_uuid(api)
    assert len(after) == len(charts)
    assert after[stable_uuid("chart", "kpi_csat")]["slice_name"] == "CSAT (edited)"
    sync(s, scenario.warehouse_url, progress=lambda _line: None)
    assert charts_by_uuid(api)[stable_uuid("chart", "kpi_csat")]["slice_name"] == "CSAT (1-5)"


def test_datasets_carry_dbt_descriptions_and_exact_metrics(superset):
    _, s = superset
    api = admin(s)
    by_name = {d["table_name"]: d for d in api.list_all("/api/v1/dataset/", ["id", "table_name"])}
    replies = api.get(f"/api/v1/dataset/{by_name['bot_replies']['id']}")["result"]
    columns = {c["column_name"]: c for c in replies["columns"]}
    assert "percentile_cont" not in (columns["response_time_ms"]["description"] or "")
    assert columns["response_time_ms"]["description"]  # from models/marts/_marts.yml
    assert columns["bot_name"]["description"] == "The bot's display name."
    metrics = {m["metric_name"]: m["expression"] for m in replies["metrics"]}
    assert "percentile_cont(0.95)" in metrics["p95_response_time_ms"]
    assert "count(outcome)" in metrics["success_rate"]  # a rate of sums, not an average of rates


# -- chart numbers ---------------------------------------------------------------------------------
def half_up(value, places: int = 0) -> float:
    exact = value if isinstance(value, Fraction) else Fraction(Decimal(str(value)))
    return float(oracle.half_up(exact, places))


def percentile(values: pd.Series, p: float) -> float | None:
    values = [int(v) for v in values.dropna()]
    return None if not values else float(oracle.percentile_ms(values, p))


def rate(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else float(oracle.rate(numerator, denominator))


def avg(values: pd.Series, places: int = 0) -> float | None:
    values = values.dropna()
    return None if values.empty else half_up(Fraction(int(values.astype("int64").sum()), len(values)), places)


METRICS = {
    "replies": len,
    "avg_response_time_ms": lambda g: avg(g["response_time_ms"]),
    "p50_response_time_ms": lambda g: percentile(g["response_time_ms"], 0.5),
    "p95_response_time_ms": lambda g: percentile(g["response_time_ms"], 0.95),
    "p99_response_time_ms": lambda g: percentile(g["response_time_ms"], 0.99),
    "success_rate": lambda g: rate(int((g["outcome"] == "success").sum()), int(g["outcome"].notna().sum())),
    "knowledge_base_hit_rate": lambda g: rate(int((g["knowledge_base_hit"] == True).sum()),  # noqa: E712
                                              int(g["knowledge_base_hit"].notna().sum())),
    "tokens": lambda g: int(g["tokens"].sum()) if "tokens" in g else int(g["tokens_used"].sum()),
    "cost_usd": lambda g: half_up(sum(Decimal(str(v)) for v in (g["cost_usd"] if "cost_usd" in g
                                                                else g["estimated_cost_usd"])), 2),
    "conversations": len,
    "csat": lambda g: avg(g["customer_satisfaction"], 2),
    "handoff_rate": lambda g: rate(int(g["handoff_triggered"].sum()), len(g)),
    "messages_sent": lambda g: int(g["messages_sent"].sum()),
    "messages_received": lambda g: int(g["messages_received"].sum()),
    "active_users": lambda g: int(g["active_users"].sum()),
    "api_calls": lambda g: int(g["api_calls_made"].sum()),
    "webhook_calls": lambda g: int(g["webhook_calls_received"].sum()),
    "active_conversations": lambda g: int(g["active_conversations"].sum()),
    "messages_last_hour": lambda g: int(g["messages_last_hour"].sum()),
}
GRAINS = {"PT1H": "h", "P1D": "D"}


def dataset_frame(warehouse_url: str, sql: str) -> pd.DataFrame:
    with psycopg.connect(warehouse_url, options="-c timezone=UTC") as conn:
        cur = conn.execute(sql)
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description], dtype=object)


def expected_rows(chart: dict, dataset: dict, frame: pd.DataFrame, result: dict) -> list[dict]:
    if "time_range" in chart:
        lo = pd.Timestamp(result["from_dttm"], unit="ms", tz="UTC")
        hi = pd.Timestamp(result["to_dttm"], unit="ms", tz="UTC")
        times = pd.to_datetime(frame[dataset["time_column"]], utc=True)
        frame = frame[(times >= lo) & (times < hi)]
    metrics = chart.get("metrics", [])
    if chart["viz"] == "raw_table":
        return frame[chart["columns"]].to_dict("records")
    keys = list(chart.get("groupby", []))
    if chart["viz"] in ("line", "bar"):
        frame = frame.assign(_bucket=pd.to_datetime(frame[dataset["time_column"]], utc=True)
                             .dt.floor(GRAINS[chart["grain"]]))
        keys = ["_bucket", *keys]
    if not keys:
        return [{m: METRICS[m](frame) if len(frame) else None for m in metrics}]
    rows = []
    for key, group in frame.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key, strict=True)), **{m: METRICS[m](group) for m in metrics}})
    return rows


def normalize(value):
    """Superset's JSON: temporal values as epoch milliseconds, numbers as floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        stamp = pd.Timestamp(value)
        return float((stamp if stamp.tzinfo else stamp.tz_localize("UTC")).timestamp() * 1000)
    if isinstance(value, Decimal | int | float) and not isinstance(value, bool):
        return round(float(value), 6)
    return value


def _sort_key(columns):
    return lambda row: tuple(str(row.get(c)) for c in columns)


def test_every_chart_shows_what_the_marts_hold(superset):
    scenario, s = superset
    spec = load_spec()
    api = admin(s)
    charts = charts_by_uuid(api)
    frames = {name: dataset_frame(scenario.warehouse_url, d["sql"]) for name, d in spec["datasets"].items()}
    compared = 0
    for name, chart in spec["charts"].items():
        dataset = spec["datasets"][chart["dataset"]]
        result = api.get(f"/api/v1/chart/{charts[stable_uuid('chart', name)]['id']}/data/")["result"][0]
        assert result["status"] == "success" and not result.get("error"), (name, result.get("error"))
        got = result["data"]
        want = expected_rows(chart, dataset, frames[chart["dataset"]], result)
        time_column = dataset["time_column"]
        for row in got:
            if time_column in row and chart["viz"] in ("line", "bar"):
                row["_bucket"] = row.pop(time_column)
        key_columns = ("_bucket", *chart.get("groupby", []), *chart.get("columns", []))
        got_rows = sorted(({k: normalize(v) for k, v in r.items()} for r in got), key=_sort_key(key_columns))
        want_rows = sorted(({k: normalize(v) for k, v in r.items()} for r in want), key=_sort_key(key_columns))
        if chart["viz"] == "raw_table":
            got_rows = [{c: r[c] for c in chart["columns"]} for r in got_rows]
        assert got_rows == want_rows, name
        compared += len(want_rows)
    assert compared > 200  # hourly series, per-bot tables, live tables: real numbers, not empty charts
    live = frames["live_metrics"]
    assert len(live) >= 1 and live["messages_last_hour"].sum() > 0


# -- access ----------------------------------------------------------------------------------------
def chart_result(api: SupersetApi, name: str) -> dict:
    chart_id = charts_by_uuid(api)[stable_uuid("chart", name)]["id"]
    return api.get(f"/api/v1/chart/{chart_id}/data/")["result"][0]


def chart_data(api: SupersetApi, name: str) -> list[dict]:
    return chart_result(api, name)["data"]


def test_an_organization_user_sees_only_its_organization(superset):
    scenario, s = superset
    with psycopg.connect(scenario.warehouse_url) as conn:
        orgs = dict(conn.execute("select organization_name, organization_id from marts.dim_organizations").fetchall())
    org = sorted(orgs)[0]
    grant(s, scenario.warehouse_url, org, "org_analyst", "analyst-pw-1", progress=lambda _line: None)
    grant(s, scenario.warehouse_url, org, "org_analyst", None, progress=lambda _line: None)  # idempotent
    analyst = SupersetApi(s.url, "org_analyst", "analyst-pw-1")
    table = chart_data(analyst, "bot_comparison")
    assert table and {r["organization_name"] for r in table} == {org}
    assert {r["organization_name"] for r in chart_data(admin(s), "bot_comparison")} == set(orgs)
    kpi = chart_result(analyst, "kpi_conversations")
    with psycopg.connect(scenario.warehouse_url) as conn:
        own = conn.execute(
            "select count(*) from marts.conversation_metrics where organization_id = %s "
            "and started_at >= to_timestamp(%s / 1000.0) and started_at < to_timestamp(%s / 1000.0)",
            (orgs[org], kpi["from_dttm"], kpi["to_dttm"])).fetchone()[0]
    assert kpi["data"][0]["conversations"] == own > 0
    assert {r["organization_name"] for r in chart_data(analyst, "live_org_metrics")} <= {org}
    assert {r["organization_name"] for r in chart_data(analyst, "live_conversation_feed")} <= {org}

    # deny by default: an analyst without an organization role sees no rows at all
    api = admin(s)
    roles = {r["name"]: r["id"] for r in api.list_all("/api/v1/security/roles/")}
    api.post("/api/v1/security/users/", {"username": "no_org", "first_name": "No", "last_name": "Org",
                                         "email": "no_org@botflow.local", "active": True, "password": "no-org-pw-1",
                                         "roles": [roles["Gamma"], roles["BotFlow Analyst"]]})
    nobody = SupersetApi(s.url, "no_org", "no-org-pw-1")
    assert chart_data(nobody, "bot_comparison") == []
    assert chart_data(nobody, "kpi_conversations")[0]["conversations"] == 0

    with pytest.raises(SupersetError, match="matches no organization"):
        grant(s, scenario.warehouse_url, "No Such Org", "x", "pw", progress=lambda _line: None)


def test_the_reader_role_reads_marts_and_live_only_and_cannot_write(superset):
    scenario, _ = superset
    url = psycopg.conninfo.make_conninfo(scenario.warehouse_url, user=READER_ROLE)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select count(*) from marts.conversation_metrics").fetchone()[0] > 0
        assert conn.execute("select count(*) from live.organization_metrics").fetchone()[0] > 0
        for table in ("raw.messages", "raw.conversations", "raw.quarantine", "staging.stg_botflow__conversations",
                      "reports.snapshots"):
            with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable)):
                conn.execute(f"select * from {table} limit 1")
        with pytest.raises((psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege)):
            conn.execute("delete from marts.usage_analytics")
        with pytest.raises((psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege)):
            conn.execute("create table marts.scratch (x int)")
        columns = {r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_schema in ('marts', 'live')")}
        assert "customer_phone" not in columns and "customer_phone_hash" not in columns


# -- the dashboards in a browser ----------------------------------------------------------------------
def test_every_dashboard_renders_in_chromium_without_chart_errors(superset):
    from playwright.sync_api import sync_playwright

    _, s = superset
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (apt-get install chromium); .ci/run installs it"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    spec = load_spec()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{s.url}/login/")
        page.fill("#username", s.admin_user)
        page.fill("#password", s.admin_password)
        page.keyboard.press("Enter")
        page.wait_for_url("**/superset/welcome/**", timeout=60_000)
        for slug, dashboard in spec["dashboards"].items():
            page.goto(f"{s.url}/superset/dashboard/{slug}/?standalone=1")
            page.wait_for_selector(".dashboard-component-chart-holder", timeout=90_000)
            page.wait_for_load_state("networkidle", timeout=90_000)
            page.wait_for_timeout(1500)
            expected = sum(len(row) for row in dashboard["rows"])
            assert page.locator(".dashboard-component-chart-holder").count() == expected, slug
            loading = page.locator(".dashboard-component-chart-holder .loading").count()
            errors = page.locator(".dashboard-component-chart-holder .ant-alert-error, "
                                  "[data-test='chart-error']").count()
            page.screenshot(path=str(ARTIFACTS / f"{slug}.png"), full_page=True)
            assert (errors, loading) == (0, 0), f"{slug}: {errors} chart errors, {loading} still loading"
            assert dashboard["title"] in page.content()
        browser.close()


def test_superset_settings_errors_name_the_setting(monkeypatch, tmp_path):
    from dagster_project.settings import ConfigError

    monkeypatch.setenv("BOTFLOW_HOME", str(tmp_path))
    for name in ("BOTFLOW_SUPERSET_METADATA_URL", "BOTFLOW_SUPERSET_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOTFLOW_SUPERSET_PORT", "80a")
    with pytest.raises(ConfigError, match="BOTFLOW_SUPERSET_PORT"):
        service.SupersetSettings.from_env(_settings_stub(tmp_path))
    monkeypatch.setenv("BOTFLOW_SUPERSET_PORT", "8089")
    first = service.SupersetSettings.from_env(_settings_stub(tmp_path))
    secrets_file = Path(tmp_path) / "superset" / "secrets.json"
    assert oct(secrets_file.stat().st_mode)[-3:] == "600"  # generated once, private, never committed
    assert service.SupersetSettings.from_env(_settings_stub(tmp_path)).admin_password == first.admin_password
    assert first.metadata_url.endswith("/botflow_superset") or "dbname=botflow_superset" in first.metadata_url


def _settings_stub(home: Path) -> Settings:
    return Settings(source_url="postgresql://x@127.0.0.1/x", source_schema="public",
                    warehouse_url="postgresql://x@127.0.0.1/y", dagster_storage_url="postgresql://x@127.0.0.1/z",
                    dagster_home=home, botflow_home=home, phone_hash_key="k", partitions_start="2025-01-01",
                    embedded=False)
