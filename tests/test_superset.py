"""Superset against a real Superset: sync twice, every chart's numbers, row-level security, the reader
role's limits, and every dashboard rendered in headless Chromium.

Superset runs from its own virtualenv (created on first use, cached under ~/.cache/botflow), with a
metadata database of its own on the test PostgreSQL, on a free port. Expected numbers are computed
with pandas over the marts, independently of the SQL of the saved metrics.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
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

from dagster_project.core.settings import Settings, scoped_environment
from dagster_project.dev.simulate import Trickle, simulate
from dagster_project.serve.superset import service
from dagster_project.serve.superset.api import SupersetApi, SupersetError
from dagster_project.serve.superset.bundle import load_spec, render_bundles, stable_uuid
from dagster_project.serve.superset.logins import ADMIN_LOGIN, user_login
from dagster_project.serve.superset.sync import READER_ROLE, apply_filters, grant, import_bundles, reader_uri, sync

ARTIFACTS = REPO / "test-artifacts" / "superset"
DAYS = 2


@pytest.fixture(scope="module")
def superset(dagster_instance, tmp_path_factory):
    with serving(dagster_instance, tmp_path_factory, "superset") as served:
        yield served


@contextmanager
def serving(dagster_instance, tmp_path_factory, name: str):
    """Two simulated days and a live feed built on this process's engine, Superset up and synced: (scenario,
    Superset's settings). test_spark_engine.py calls it with the Spark engine."""
    home = tmp_path_factory.mktemp("botflow_home")
    metadata_db = f"bf_test_{name}_meta_{RUN_TAG}"
    create_database(metadata_db)
    env = {"BOTFLOW_HOME": str(home), "BOTFLOW_SUPERSET_PORT": str(free_port()),
           "BOTFLOW_SUPERSET_METADATA_URL": database_url(metadata_db),
           "BOTFLOW_SUPERSET_CACHE_SECONDS": "600"}  # a real cache: one organization's result never serves another
    today = datetime.now(UTC).date()
    start = today - timedelta(days=DAYS)
    with scoped_environment(env), module_scenario(name) as (scenario,):
        with scenario.source() as conn:
            simulate(conn, "public", start, DAYS, seed=5, conversations_per_day=80)
            trickle = Trickle(conn, "public", seed=9)  # traffic in the last minutes, for the live dashboard
            for _ in range(40):
                trickle.step()
        build_window(dagster_instance, start, today)
        with scenario.warehouse() as conn:  # 2 days give no verdict: an anomaly per bot, as the mart holds them
            conn.execute("insert into marts.metric_anomalies select bot_id, organization_id, date, 'total_messages', "
                         "total_messages, total_messages / 10.0, 3, 'high' from marts.bot_performance_metrics "
                         "where date = %s", (today - timedelta(days=1),))
        from conftest import run_job

        from dagster_project.live_definitions import defs as live_defs
        run_job(dagster_instance, "live_job", defs=live_defs)
        settings = Settings.from_env()
        with recorded_subprocesses(LAUNCHED):
            s = service.up(settings, progress=lambda _line: None)
        try:
            sync(s, scenario.warehouse_url, progress=lambda _line: None,
                 other_databases=[os.environ["BOTFLOW_DAGSTER_STORAGE_URL"], scenario.source_url])
            yield scenario, s
        finally:
            service.stop(s)
            drop_database(metadata_db)


LAUNCHED: list[tuple[list[str], dict]] = []  # what the fixture's `superset up` started


@contextmanager
def recorded_subprocesses(launched: list[tuple[list[str], dict]]):
    """Every command line and environment the Superset service starts, for the secrets tests."""
    real_run = subprocess.run

    def run(args, *rest, **kwargs):
        launched.append(([str(a) for a in args], dict(kwargs.get("env") or os.environ)))
        return real_run(args, *rest, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service.subprocess, "run", run)
        yield launched


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
    "first_response_p50_ms": lambda g: percentile(g["first_response_time_ms"], 0.5),
    "first_response_p95_ms": lambda g: percentile(g["first_response_time_ms"], 0.95),
    "sla_met_rate": lambda g: rate(int((g["sla_first_response_met"] == True).sum()),  # noqa: E712
                                   int(g["sla_first_response_met"].notna().sum())),
    "replies_in_bucket": lambda g: int(g["replies"].sum()),
    "local_day_conversations": lambda g: int(g["total_conversations"].sum()),
    "local_day_messages": lambda g: int(g["total_messages"].sum()),
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
    keys = [*([chart["x_axis"]] if "x_axis" in chart else []), *chart.get("groupby", [])]
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
    if isinstance(value, pd.Timestamp | datetime | date):
        stamp = pd.Timestamp(value)
        return float((stamp if stamp.tzinfo else stamp.tz_localize("UTC")).timestamp() * 1000)
    if isinstance(value, Decimal | int | float) and not isinstance(value, bool):
        return round(float(value), 6)
    return value


def _sort_key(columns):
    return lambda row: tuple(str(row.get(c)) for c in columns)


def test_every_chart_shows_what_the_marts_hold(superset):
    charts_show_what_the_marts_hold(superset)


def charts_show_what_the_marts_hold(superset, fresh: bool = False) -> None:
    """`fresh`: past Superset's result cache (after the marts changed, a cached chart is up to
    BOTFLOW_SUPERSET_CACHE_SECONDS old)."""
    scenario, s = superset
    spec = load_spec()
    api = admin(s)
    charts = charts_by_uuid(api)
    frames = {name: dataset_frame(scenario.warehouse_url, d["sql"]) for name, d in spec["datasets"].items()}
    compared = 0
    for name, chart in spec["charts"].items():
        dataset = spec["datasets"][chart["dataset"]]
        chart_id = charts[stable_uuid("chart", name)]["id"]
        result = api.get(f"/api/v1/chart/{chart_id}/data/" + ("?force=true" if fresh else ""))["result"][0]
        assert result["status"] == "success" and not result.get("error"), (name, result.get("error"))
        got = result["data"]
        want = expected_rows(chart, dataset, frames[chart["dataset"]], result)
        time_column = dataset["time_column"]
        for row in got:
            if time_column in row and chart["viz"] in ("line", "bar"):
                row["_bucket"] = row.pop(time_column)
        key_columns = ("_bucket", *([chart["x_axis"]] if "x_axis" in chart else []), *chart.get("groupby", []),
                       *chart.get("columns", []))
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
    anomalies = chart_data(analyst, "anomalies_recent")
    assert anomalies and {r["organization_name"] for r in anomalies} == {org}
    assert {r["organization_name"] for r in chart_data(admin(s), "anomalies_recent")} == set(orgs)

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
    admin_url = psycopg.conninfo.make_conninfo(scenario.warehouse_url, user=ADMIN_LOGIN)
    with psycopg.connect(admin_url, autocommit=True) as conn:  # Superset's Admins: every organization
        assert conn.execute("select count(*) from marts.conversation_metrics").fetchone()[0] > 0
        assert conn.execute("select count(*) from live.organization_metrics").fetchone()[0] > 0
        with pytest.raises((psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege)):
            conn.execute("delete from marts.usage_analytics")
    with psycopg.connect(url, autocommit=True) as conn:  # the stored login: users with no organization
        assert conn.execute("select count(*) from marts.conversation_metrics").fetchone()[0] == 0
        assert conn.execute("select count(*) from live.organization_metrics").fetchone()[0] == 0
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
        # logged in once the browser leaves /login/ (not once the heavy welcome page has loaded: under load
        # that took over 60 s once, in a full `make test`)
        page.wait_for_url(lambda url: "/login" not in url, wait_until="commit", timeout=120_000)
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
    from dagster_project.core.settings import ConfigError

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


def test_processes_that_start_superset_together_install_its_virtualenv_once(tmp_path, monkeypatch):
    """Two pytest workers, or two `botflow superset up`, on a machine without Superset's virtualenv: one
    installs it while the other waits, then finds it installed (not two pips writing one folder)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    installs, inside, overlapped = [], threading.Semaphore(1), []

    def slow_install(venv: Path, progress) -> None:
        if not inside.acquire(blocking=False):
            overlapped.append(venv)
        installs.append(venv)
        time.sleep(1)
        venv.mkdir(parents=True, exist_ok=True)
        inside.release()

    monkeypatch.setattr(service, "_install", slow_install)
    venv = tmp_path / "cache" / "superset-venv"
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: service.install_venv(venv, progress=lambda _line: None), range(4))) == [venv] * 4
    assert (installs, overlapped) == ([venv], [])


def _settings_stub(home: Path) -> Settings:
    return Settings(source_url="postgresql://x@127.0.0.1/x", source_schema="public",
                    warehouse_url="postgresql://x@127.0.0.1/y", dagster_storage_url="postgresql://x@127.0.0.1/z",
                    dagster_home=home, botflow_home=home, phone_hash_key="k", partitions_start="2025-01-01",
                    embedded=False)


# -- a hostile analyst --------------------------------------------------------------------------------
def ensure_user_without_organization(s, username: str, password: str) -> SupersetApi:
    api = admin(s)
    if username not in {u["username"] for u in api.list_all("/api/v1/security/users/")}:
        roles = {r["name"]: r["id"] for r in api.list_all("/api/v1/security/roles/")}
        api.post("/api/v1/security/users/", {"username": username, "first_name": "No", "last_name": "Org",
                                             "email": f"{username}@botflow.local", "active": True,
                                             "password": password,
                                             "roles": [roles["Gamma"], roles["BotFlow Analyst"]]})
    return SupersetApi(s.url, username, password)


def user_of(s, warehouse_url: str, organization_id, username: str) -> SupersetApi:
    """`grant` a user one organization (by id), logged in."""
    with psycopg.connect(warehouse_url) as conn:
        name = conn.execute("select organization_name from marts.dim_organizations where organization_id = %s",
                            (organization_id,)).fetchone()[0]
    grant(s, warehouse_url, name, username, f"{username}-pw-1", progress=lambda _line: None)
    return SupersetApi(s.url, username, f"{username}-pw-1")


def dataset_ids(s) -> dict[str, int]:
    return {d["table_name"]: d["id"] for d in admin(s).list_all("/api/v1/dataset/", ["id", "table_name"])}


def identifiers(warehouse_url: str) -> dict:
    """organization_id -> every id and name of that organization's rows (what a leak would show)."""
    out: dict = {}
    with psycopg.connect(warehouse_url) as conn:
        for query in ("select organization_id, organization_id::text, organization_name from marts.dim_organizations",
                      "select organization_id, bot_id::text, bot_name from marts.dim_bots",
                      "select organization_id, conversation_id::text, null from marts.conversation_metrics",
                      "select organization_id, conversation_id::text, null from live.conversation_feed"):
            for org, ident, name in conn.execute(query):
                out.setdefault(org, set()).update(v for v in (ident, name) if v)
    return out


def _metric(expression: str) -> dict:
    return {"expressionType": "SQL", "sqlExpression": expression, "label": "m"}


def _metrics(expression: str) -> dict:
    return {"metrics": [_metric(expression)]}


def _column(expression: str) -> dict:
    return {"expressionType": "SQL", "sqlExpression": expression, "label": "c"}


ORG_IDS = "(select string_agg(distinct organization_id::text, ',') from marts.fct_bot_replies)"
XML = "query_to_xml('select organization_id, count(*) from marts.fct_bot_replies group by 1', true, false, '')"
# (name, dataset, query): each sent as an organization's user and as a user with no organization
FUZZ = [
    ("metric query_to_xml", "bot_replies", _metrics(f"max({XML}::text)")),
    ("metric query_to_xml, no aggregate", "bot_replies", _metrics(f"{XML}::text")),
    ("metric pg_catalog.query_to_xml", "bot_replies", _metrics(f"max(pg_catalog.{XML}::text)")),
    ("metric QUERY_TO_XML upper case", "bot_replies", _metrics(f"max({XML.upper()}::text)")),
    ("metric quoted \"query_to_xml\"", "bot_replies",
     _metrics(f"max(\"query_to_xml\"{XML[len('query_to_xml'):]}::text)")),
    ("metric table_to_xml conversation_metrics", "bot_replies",
     _metrics("max(table_to_xml('marts.conversation_metrics', true, false, '')::text)")),
    ("metric table_to_xml live.conversation_feed", "live_feed",
     _metrics("max(table_to_xml('live.conversation_feed', true, false, '')::text)")),
    ("metric schema_to_xml marts", "bot_replies", _metrics("max(schema_to_xml('marts', true, false, '')::text)")),
    ("metric schema_to_xml live", "live_feed", _metrics("max(schema_to_xml('live', true, false, '')::text)")),
    ("metric database_to_xml", "bot_replies", _metrics("max(database_to_xml(true, false, '')::text)")),
    ("metric query_to_xml_and_xmlschema", "bot_replies",
     _metrics("max(query_to_xml_and_xmlschema('select * from marts.dim_organizations', true, false, '')::text)")),
    ("column ts_stat", "bot_replies",
     {"columns": [_column("ts_stat('select to_tsvector(organization_id::text) from marts.fct_bot_replies')::text")],
      "metrics": [_metric("count(*)")]}),
    ("metric ts_rewrite", "bot_replies",
     {"metrics": [_metric("max(ts_rewrite('a'::tsquery, 'select ''a''::tsquery, organization_id::text::tsquery "
                          "from marts.fct_bot_replies')::text)")]}),
    ("metric subquery ids", "bot_replies", _metrics(f"max({ORG_IDS})")),
    ("metric subquery count", "bot_replies", _metrics("max((select count(*) from marts.fct_bot_replies))")),
    ("metric subquery dim_organizations", "bot_replies",
     _metrics("max((select string_agg(organization_name, ',') from marts.dim_organizations))")),
    ("metric subquery live feed", "live_feed",
     _metrics("max((select string_agg(conversation_id::text, ',') from live.conversation_feed))")),
    ("metric subquery usage", "usage",
     _metrics("max((select string_agg(organization_id::text, ',') from marts.usage_analytics))")),
    ("metric CTE in subquery", "bot_replies",
     {"metrics": [_metric("max((with x as (select organization_id from marts.conversation_metrics) "
                          "select string_agg(organization_id::text, ',') from x))")]}),
    ("metric UNION in subquery", "bot_replies",
     _metrics("max((select string_agg(o, ',') from (select organization_id::text o from marts.fct_bot_replies "
              "union select organization_id::text from live.organization_metrics) u))")),
    ("metric string_agg of own column", "bot_replies", _metrics("string_agg(distinct organization_id::text, ',')")),
    ("metric xmlagg", "conversations", _metrics("max(xmlagg(xmlelement(name o, conversation_id))::text)")),
    ("metric to_json of a dimension table", "bot_replies",
     _metrics("max((select json_agg(o)::text from marts.dim_bots o))")),
    ("metric cast error carries values", "bot_replies", _metrics(f"max(cast({ORG_IDS} as integer))")),
    ("metric set_config role to all organizations", "bot_replies",
     _metrics("max(set_config('role', 'botflow_all_organizations', false))")),
    ("metric set_config role to the scoped reader", "bot_replies",
     _metrics(f"max(set_config('role', 'botflow_scoped_reader', true) || {ORG_IDS})")),
    ("metric set_config organization setting", "bot_replies",
     _metrics(f"max(set_config('botflow.organization_id', '{{other}}', false) || {ORG_IDS})")),
    ("metric set_config read-only off", "bot_replies",
     _metrics("max(set_config('default_transaction_read_only', 'off', false))")),
    ("metric current_setting", "bot_replies", _metrics("max(current_setting('botflow.organization_id', true))")),
    ("metric security functions", "bot_replies",
     _metrics("max(security.visible_organizations()::text || security.sees_all_organizations()::text)")),
    ("metric tenant_access table", "bot_replies",
     _metrics("max((select string_agg(organization_id::text, ',') from security.tenant_access))")),
    ("metric pg_sleep", "bot_replies", _metrics("count(pg_sleep(0))")),
    ("metric pg_read_file", "bot_replies", _metrics("max(pg_read_file('/etc/passwd'))")),
    ("metric pg_ls_dir", "bot_replies", _metrics("max((select string_agg(f, ',') from pg_ls_dir('.') f))")),
    ("metric lo_import", "bot_replies", _metrics("max(lo_import('/etc/passwd'))")),
    ("metric dblink", "bot_replies",
     _metrics("max(dblink('dbname=postgres', 'select 1')::text)")),
    ("metric raw table", "bot_replies",
     _metrics("max((select string_agg(name, ',') from raw.organizations))")),
    ("metric staging view", "bot_replies",
     _metrics("max((select string_agg(organization_name, ',') from staging.stg_botflow__organizations))")),
    ("metric quarantine", "bot_replies", _metrics("max((select count(*) from raw.quarantine))")),
    ("metric mart function of another organization", "bot_replies",
     {"metrics": [_metric("max((select messages_sent from marts.get_organization_analytics_summary("
                          "'{other}', now() - interval '30 days', now())))")]}),
    ("metric pg_stat_activity", "bot_replies",
     _metrics("max((select string_agg(query, ';') from pg_stat_activity))")),
    ("metric comment and parenthesis escape", "bot_replies",
     _metrics("count(*)) from marts.fct_bot_replies union select count(*) from marts.conversation_metrics --")),
    ("metric two statements", "bot_replies", _metrics("count(*); select * from marts.dim_organizations")),
    ("metric block comment", "bot_replies", _metrics(f"max(/* x */ {ORG_IDS})")),
    ("column subquery ids", "bot_replies", {"columns": [_column(ORG_IDS)], "metrics": [_metric("count(*)")]}),
    ("column query_to_xml", "conversations", {"columns": [_column(f"{XML}::text")], "metrics": [_metric("count(*)")]}),
    ("column organization_id grouped", "bot_replies",
     {"columns": [_column("organization_id::text")], "metrics": [_metric("count(*)")]}),
    ("where 1=1 or true", "bot_replies",
     {"columns": ["organization_name"], "metrics": [_metric("count(*)")], "extras": {"where": "1 = 1 or true"}}),
    ("where another organization's id", "bot_replies",
     {"columns": ["organization_id"], "metrics": [_metric("count(*)")],
      "extras": {"where": "organization_id = '{other}'"}}),
    ("where breaking out of parentheses", "bot_replies",
     {"columns": ["organization_name"], "metrics": [_metric("count(*)")],
      "extras": {"where": "1 = 0) or (1 = 1"}}),
    ("where UNION", "bot_replies",
     {"columns": ["organization_name"], "metrics": [_metric("count(*)")],
      "extras": {"where": "true union select organization_name, 1 from marts.dim_organizations"}}),
    ("where query_to_xml", "bot_replies",
     {"columns": ["organization_name"], "metrics": [_metric("count(*)")],
      "extras": {"where": f"{XML}::text is not null"}}),
    ("having or true", "bot_replies",
     {"columns": ["organization_name"], "metrics": [_metric("count(*)")],
      "extras": {"having": "count(*) > 0 or true"}}),
    ("having subquery", "bot_replies",
     {"columns": ["organization_name"], "metrics": [_metric("count(*)")],
      "extras": {"having": f"{ORG_IDS} is not null"}}),
    ("simple filter IN another organization", "bot_replies",
     {"columns": ["organization_id"], "metrics": [_metric("count(*)")],
      "filters": [{"col": "organization_id", "op": "IN", "val": ["{other}"]}]}),
    ("order by query_to_xml", "bot_replies",
     {"columns": ["organization_name"], "metrics": [_metric("count(*)")],
      "orderby": [[_metric(f"max({XML}::text)"), False]]}),
    ("time grain injection", "bot_replies",
     {"columns": [{"timeGrain": "P1D') || query_to_xml('select 1', true, false, '')::text || ('",
                   "columnType": "BASE_AXIS", "sqlExpression": "created_at", "label": "created_at",
                   "expressionType": "SQL"}], "metrics": [_metric("count(*)")]}),
    ("time grain expression", "bot_replies",
     {"columns": [{"timeGrain": "P1D", "columnType": "BASE_AXIS", "label": "t", "expressionType": "SQL",
                   "sqlExpression": f"created_at + (length({ORG_IDS}) * interval '0 s')"}],
      "metrics": [_metric("count(*)")]}),
    ("samples", "bot_replies", {"result_type": "samples"}),
    ("drill detail", "conversations",
     {"result_type": "drill_detail", "columns": ["conversation_id", "organization_name"]}),
]


def _query_context(dataset_id: int, query: dict, other: str) -> dict:
    query = json.loads(json.dumps(query).replace("{other}", other))
    result_type = query.pop("result_type", "full")
    base = {"columns": [], "metrics": [], "filters": [], "extras": {"where": "", "having": ""}, "orderby": [],
            "row_limit": 1000, "series_limit": 0, "order_desc": True}
    return {"datasource": {"id": dataset_id, "type": "table"}, "force": True,
            "queries": [{**base, **query, "extras": {**base["extras"], **query.get("extras", {})}}],
            "result_format": "json", "result_type": result_type}


def _verdict(response, foreign: set[str]) -> tuple[str, set[str]]:
    """(refused by Superset | refused by PostgreSQL | own rows only | no rows, the foreign values shown)."""
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text}
    results = body.get("result") if isinstance(body, dict) else None
    if isinstance(results, list):
        for result in results:
            result.pop("query", None)  # Superset echoes the SQL sent, payload included
    text = json.dumps(body)
    leaked = {value for value in foreign if value in text}
    if response.status_code >= 400 or any(r.get("error") for r in results or [] if isinstance(r, dict)):
        postgres = any(word in text for word in ("psycopg2", "permission denied", "does not exist",
                                                 "PostgreSQL Error", "read-only transaction"))
        return ("refused by PostgreSQL" if postgres else "refused by Superset"), leaked
    values = [v for r in results or [] for row in r.get("data", []) for v in row.values()]
    # an aggregate over no rows is one row of nulls or zeros: no rows
    return ("own rows only" if any(v not in (None, 0, "") for v in values) else "no rows"), leaked


def test_hostile_chart_requests_never_return_another_organizations_rows(superset):
    scenario, s = superset
    by_org = identifiers(scenario.warehouse_url)
    orgs = sorted(by_org, key=str)
    mine, other = orgs[0], orgs[1]
    users = {"organization's user": (user_of(s, scenario.warehouse_url, mine, "fuzz_org"), {mine}),
             "user with no organization": (ensure_user_without_organization(s, "fuzz_nobody", "fuzz-nobody-pw-1"),
                                           set())}
    datasets = dataset_ids(s)
    verdicts, leaks = [], []
    for label, (api, own) in users.items():
        foreign = set().union(*(ids for org, ids in by_org.items() if org not in own))
        for name_, dataset, query in FUZZ:
            response = api.session.post(f"{api.url}/api/v1/chart/data", timeout=120,
                                        json=_query_context(datasets[dataset], query, str(other)))
            verdict, leaked = _verdict(response, foreign)
            verdicts.append(f"{label:26} {verdict:22} {name_}")
            if leaked:
                leaks.append(f"{label}: {name_}: {sorted(leaked)[:3]}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "fuzz-verdicts.txt").write_text("\n".join(verdicts) + "\n")
    print("\n".join(verdicts))
    assert len(FUZZ) >= 50
    assert not leaks, "\n".join(leaks)
    # the fuzz reached the data: the organization's own rows came back for the plain requests
    assert sum("own rows only" in v and v.startswith("organization's user") for v in verdicts) >= 8
    assert not any("own rows only" in v for v in verdicts if v.startswith("user with no organization"))


def test_the_reported_leaks_replayed_return_own_rows_only(superset):
    """The requests of the issue, verbatim: query_to_xml, table_to_xml, schema_to_xml, ts_stat."""
    scenario, s = superset
    by_org = identifiers(scenario.warehouse_url)
    mine = sorted(by_org, key=str)[0]
    api = user_of(s, scenario.warehouse_url, mine, "replay_org")
    dataset = dataset_ids(s)
    foreign = set().union(*(ids for org, ids in by_org.items() if org != mine))
    for expression in (
            "query_to_xml('select organization_id, count(*) from marts.fct_bot_replies group by 1', true, false, '')",
            "table_to_xml('marts.conversation_metrics', true, false, '')", "schema_to_xml('marts', true, false, '')",
            "table_to_xml('live.conversation_feed', true, false, '')"):
        response = api.session.post(f"{api.url}/api/v1/chart/data", timeout=120, json=_query_context(
            dataset["bot_replies"], _metrics(f"max({expression}::text)"), ""))
        verdict, leaked = _verdict(response, foreign)
        assert not leaked and verdict == "refused by PostgreSQL", (expression, verdict, response.text[:300])
    # and the warehouse answers the same SQL with own rows only, were the function allowed
    with psycopg.connect(scenario.warehouse_url) as conn:
        conn.execute("grant execute on function pg_catalog.query_to_xml(text, boolean, boolean, text) to public")
        conn.commit()
        try:
            response = api.session.post(f"{api.url}/api/v1/chart/data", timeout=120, json=_query_context(
                dataset["bot_replies"], {"metrics": [_metric(
                    "max(query_to_xml('select organization_id from marts.fct_bot_replies', true, false, '')::text)")]},
                ""))
            verdict, leaked = _verdict(response, foreign)
            assert verdict == "own rows only" and not leaked and str(mine) in response.text
        finally:
            conn.execute("revoke execute on function pg_catalog.query_to_xml(text, boolean, boolean, text) from public")
            conn.commit()


def test_a_dataset_added_later_is_invisible_until_sync_then_filtered(superset, monkeypatch):
    from dagster_project.serve.superset import sync as sync_module

    scenario, s = superset
    api = admin(s)
    by_org = identifiers(scenario.warehouse_url)
    mine = sorted(by_org, key=str)[0]
    analyst = user_of(s, scenario.warehouse_url, mine, "later_org")
    with psycopg.connect(scenario.warehouse_url) as conn:
        name = conn.execute("select organization_name from marts.dim_organizations where organization_id = %s",
                            (mine,)).fetchone()[0]
    spec = copy.deepcopy(load_spec())
    spec["datasets"]["replies_added_later"] = copy.deepcopy(spec["datasets"]["bot_replies"])
    with psycopg.connect(scenario.warehouse_url) as conn:
        bundles = render_bundles(conn, reader_uri(scenario.warehouse_url, None), spec)
    import_bundles(api, bundles, s.reader_password)  # imported by hand: no filters, no access yet
    added = next(d["id"] for d in api.list_all("/api/v1/dataset/", ["id", "table_name"])
                 if d["table_name"] == "replies_added_later")
    query = {"columns": ["organization_id"], "metrics": [_metric("count(*)")]}
    try:
        before = analyst.session.post(f"{analyst.url}/api/v1/chart/data", timeout=120,
                                      json=_query_context(added, query, ""))
        assert before.status_code in (403, 404), before.text[:300]
        monkeypatch.setattr(sync_module, "load_spec", lambda: spec)
        apply_filters(api)  # what sync does after every import
        rules = {r["name"]: r for r in api.list_all("/api/v1/rowlevelsecurity/")}
        for rule_name in (f"botflow: org:{name}", "botflow: no organization role, no rows"):
            rule = api.get(f"/api/v1/rowlevelsecurity/{rules[rule_name]['id']}")["result"]
            assert added in {t["id"] for t in rule["tables"]}, rule_name
        after = analyst.session.post(f"{analyst.url}/api/v1/chart/data", timeout=120,
                                     json=_query_context(added, query, ""))
        assert after.status_code == 200, after.text[:300]
        assert {row["organization_id"] for row in after.json()["result"][0]["data"]} == {str(mine)}
    finally:
        api.request("DELETE", f"/api/v1/dataset/{added}")
        monkeypatch.undo()
        apply_filters(api)


def test_a_cached_result_is_never_served_to_another_organization(superset):
    scenario, s = superset
    by_org = identifiers(scenario.warehouse_url)
    first, second = sorted(by_org, key=str)[:2]
    apis = {first: user_of(s, scenario.warehouse_url, first, "cache_a"),
            second: user_of(s, scenario.warehouse_url, second, "cache_b")}
    dataset = dataset_ids(s)
    context = _query_context(dataset["bot_replies"], {"columns": ["organization_id"],
                                                       "metrics": [_metric("count(*)")]}, "")
    context["force"] = False
    answers = {}
    for org in (first, first, second):
        response = apis[org].session.post(f"{apis[org].url}/api/v1/chart/data", timeout=120, json=context)
        result = response.json()["result"][0]
        answers.setdefault(org, []).append(bool(result["is_cached"]))
        assert {row["organization_id"] for row in result["data"]} == {str(org)}
    assert answers == {first: [False, True], second: [False]}  # the cache works, per user


def test_superset_holds_no_warehouse_owner_secret_and_no_password_on_a_command_line(superset):
    scenario, s = superset
    assert LAUNCHED, "the fixture records what `superset up` started"
    secrets = [s.admin_password, s.tenant_key, s.reader_password, scenario.warehouse_url,
               os.environ["BOTFLOW_WAREHOUSE_URL"]]
    for argv, env in LAUNCHED:
        line = " ".join(argv)
        assert not any(secret in line for secret in secrets), argv[:3]
        assert "BOTFLOW_WAREHOUSE_URL" not in env and "BOTFLOW_SOURCE_URL" not in env, argv[:3]
    # the running Superset: its processes' command lines and environments, read from /proc
    master = int(s.pid_file.read_text())
    pids = [master] + [int(p) for p in subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                                                       text=True).stdout.split()]
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
                       if "=" in item)
        assert not any(secret in cmdline for secret in secrets)
        assert not {"BOTFLOW_WAREHOUSE_URL", "BOTFLOW_SOURCE_URL", "BOTFLOW_DAGSTER_STORAGE_URL",
                    "BOTFLOW_PHONE_HASH_KEY", "BOTFLOW_SUPERSET_ADMIN_PASSWORD"} & set(environ), pid
        assert not any(scenario.warehouse_url in value for value in environ.values())


def test_warehouse_logins_reach_no_other_botflow_database(superset):
    scenario, s = superset
    logins = [READER_ROLE, ADMIN_LOGIN, user_login("reach_org")]
    user_of(s, scenario.warehouse_url, sorted(identifiers(scenario.warehouse_url), key=str)[0], "reach_org")
    others = [s.metadata_url, os.environ["BOTFLOW_DAGSTER_STORAGE_URL"].replace("postgresql+psycopg2://",
                                                                                "postgresql://"), scenario.source_url]
    for login in logins:
        psycopg.connect(psycopg.conninfo.make_conninfo(scenario.warehouse_url, user=login)).close()
        for url in others:
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(psycopg.conninfo.make_conninfo(url, user=login)).close()

