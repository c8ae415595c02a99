"""Tenant isolation in the warehouse, tried as an attacker would (docs/tenant-isolation.md).

A warehouse is built through Dagster, then read as a tenant login (what Superset uses for an
organization's user), as the reader and admin logins, and as the scoped role of one organization's
export and report. Expected rows are the owner's rows filtered by organization in pandas, not by the
policies under test. Superset itself is fuzzed in test_superset.py.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest
from conftest import build_window, lenient_quality_limits, module_scenario, run_job

from dagster_project.core import tenancy
from dagster_project.dev.simulate import Trickle, simulate
from dagster_project.serve.superset.logins import ADMIN_LOGIN, READER_LOGIN, login_password, user_login
from dagster_project.serve.superset.sync import ensure_superset_logins, ensure_user_login

DAYS = 2
KEY = "test-tenant-key"


@pytest.fixture(scope="module")
def warehouse(dagster_instance):
    today = datetime.now(UTC).date()
    start = today - timedelta(days=DAYS)
    with module_scenario("tenancy") as (scenario,):
        with scenario.source() as conn:
            simulate(conn, "public", start, DAYS, seed=21, conversations_per_day=60)
            trickle = Trickle(conn, "public", seed=4)  # recent traffic, for the live tables
            for _ in range(30):
                trickle.step()
        with lenient_quality_limits():
            build_window(dagster_instance, start, today)
        from dagster_project.live_definitions import defs as live_defs

        run_job(dagster_instance, "live_job", defs=live_defs)
        with scenario.warehouse() as conn:
            ensure_superset_logins(conn, KEY)
            orgs = conn.execute("select organization_id, organization_name from marts.dim_organizations "
                                "order by organization_name").fetchall()
            assert len(orgs) >= 3
            mine, other = orgs[0][0], orgs[1][0]
            ensure_user_login(conn, KEY, "alice", mine)  # one organization
            ensure_user_login(conn, KEY, "bob", mine)  # two organizations
            ensure_user_login(conn, KEY, "bob", other)
            conn.commit()
        yield scenario, [o[0] for o in orgs], start, today


def login_url(scenario, login: str) -> str:
    return psycopg.conninfo.make_conninfo(scenario.warehouse_url, user=login, password=login_password(KEY, login))


def frame(conn: psycopg.Connection, query: str) -> pd.DataFrame:
    cur = conn.execute(query)
    return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description], dtype=object)


def isolated_relations(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "select format('%I.%I', table_schema, table_name) from information_schema.columns "
        "where table_schema in ('marts', 'live') and column_name = 'organization_id' order by 1")]


def rows(df: pd.DataFrame) -> list[tuple]:
    return sorted(tuple(str(v) for v in row) for row in df.itertuples(index=False))


def foreign_identifiers(scenario, own: set) -> set[str]:
    """Every id and name that belongs to another organization than `own`."""
    with scenario.warehouse() as conn:
        found = set()
        for query in ("select organization_id, organization_id::text, organization_name from marts.dim_organizations",
                      "select organization_id, bot_id::text, bot_name from marts.dim_bots",
                      "select organization_id, conversation_id::text, null from marts.conversation_metrics"):
            for org, ident, name in conn.execute(query):
                if org not in own:
                    found.update(v for v in (ident, name) if v)
    return found


# -- what tenants can read --------------------------------------------------------------------------
def test_every_mart_and_live_relation_is_isolated_and_nothing_else_is_granted(warehouse):
    scenario, *_ = warehouse
    with scenario.warehouse() as conn:
        relations = isolated_relations(conn)
        assert {"marts.fct_bot_replies", "marts.conversation_metrics", "marts.usage_analytics",
                "marts.bot_performance_metrics", "marts.dim_bots", "marts.dim_organizations",
                "marts.bot_performance_metrics_local", "marts.metric_anomalies", "marts.response_time_histogram",
                "live.organization_metrics", "live.conversation_feed"} <= set(relations)
        for relation in relations:
            kind, rls, options = conn.execute("select relkind, relrowsecurity, reloptions from pg_class "
                                              "where oid = %s::regclass", (relation,)).fetchone()
            if kind == "v":
                assert "security_barrier=true" in (options or []), relation
                view = conn.execute("select pg_get_viewdef(%s::regclass)", (relation,)).fetchone()[0]
                assert re.search(tenancy.VIEW_FILTER, view, re.S), relation
            else:
                policies = conn.execute("select polname, pg_get_expr(polqual, polrelid) from pg_policy "
                                        "where polrelid = %s::regclass", (relation,)).fetchall()
                assert rls and [p[0] for p in policies] == ["tenant_isolation"], relation
                assert "visible_organizations()" in policies[0][1], relation
        # who may read what, in every schema of the warehouse: the tenant roles the isolated relations
        # only; the scoped role two columns of one staging view (the masked phone, for exports)
        owner = conn.execute("select current_user").fetchone()[0]
        grants = conn.execute("""
            select n.nspname, c.relname, coalesce(g.rolname, 'PUBLIC'), a.privilege_type
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
            cross join lateral aclexplode(c.relacl) a left join pg_roles g on g.oid = a.grantee
            where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
              and coalesce(g.rolname, 'PUBLIC') <> %s""", (owner,)).fetchall()
        tenants = {tenancy.TENANT_ROLE, tenancy.ALL_ORGANIZATIONS_ROLE}
        for schema, name, grantee, privilege in grants:
            where = f"{schema}.{name}: {privilege} to {grantee}"
            if f"{schema}.{name}" in relations or (schema, name) == ("security", "tenant_access"):
                assert grantee in tenants and privilege == "SELECT", where
            elif (schema, name) == ("reports", "quarantine_by_organization"):
                assert grantee == tenancy.SCOPED_ROLE and privilege == "SELECT", where
            else:
                pytest.fail(f"unexpected grant {where}")
        columns = conn.execute("""
            select table_schema || '.' || table_name, column_name, grantee from information_schema.column_privileges
            where grantee not in (%s, 'PUBLIC') and table_schema not in ('pg_catalog', 'information_schema')
              and (table_schema, table_name) not in (
                select table_schema, table_name from information_schema.table_privileges
                where grantee = column_privileges.grantee)""", (owner,)).fetchall()
        assert sorted(columns) == [("staging.stg_botflow__conversations", "conversation_id", tenancy.SCOPED_ROLE),
                                   ("staging.stg_botflow__conversations", "customer_phone_last4", tenancy.SCOPED_ROLE)]


@pytest.mark.parametrize(("login", "sees"), [("alice", "mine"), ("bob", "mine and other"),
                                             (READER_LOGIN, "nothing"), (ADMIN_LOGIN, "everything")])
def test_each_login_reads_exactly_its_organizations_rows(warehouse, login, sees):
    scenario, orgs, *_ = warehouse
    visible = {"mine": orgs[:1], "mine and other": orgs[:2], "nothing": [], "everything": orgs}[sees]
    db_login = login if login in (READER_LOGIN, ADMIN_LOGIN) else user_login(login)
    compared = 0
    with scenario.warehouse() as owner, psycopg.connect(login_url(scenario, db_login)) as conn:
        for relation in isolated_relations(owner):
            everything = frame(owner, f"select * from {relation}")
            expected = everything[everything["organization_id"].isin(visible)]
            got = frame(conn, f"select * from {relation}")
            assert rows(got) == rows(expected), relation
            compared += len(expected)
            if relation.startswith("marts.fct") and sees != "nothing":
                assert len(expected) > 0 and len(expected) < len(everything) or sees == "everything", relation
    assert (compared == 0) == (sees == "nothing")


# -- an attacker with a tenant login ----------------------------------------------------------------
HOSTILE_SQL = [
    "select * from marts.fct_bot_replies",
    "select organization_id::text from marts.conversation_metrics "
    "union select organization_id::text from live.conversation_feed",
    "select query_to_xml('select organization_id from marts.fct_bot_replies', true, false, '')",
    "select table_to_xml('marts.conversation_metrics', true, false, '')",
    "select schema_to_xml('marts', true, false, '')",
    "select database_to_xml(true, false, '')",
    "select * from ts_stat('select to_tsvector(organization_id::text) from marts.fct_bot_replies')",
    "select ts_rewrite('a'::tsquery, "
    "'select ''a''::tsquery, organization_id::text::tsquery from marts.fct_bot_replies')",
    "set role botflow_all_organizations",
    "select set_config('role', 'botflow_scoped_reader', false)",
    "select set_config('role', 'botflow_superset_admin', false)",
    "set role botflow_tenant; select * from marts.usage_analytics",
    "set session authorization botflow_superset_admin",
    "select set_config('botflow.organization_id', '{other}', false), * from marts.fct_bot_replies",
    "set botflow.organization_id = '{other}'; select * from marts.bot_performance_metrics",
    "select * from security.tenant_access",
    "select security.visible_organizations(), security.sees_all_organizations()",
    "select * from marts.dim_organizations where organization_id = '{other}'",
    "select * from marts.fct_bot_replies where organization_id = '{other}' or true",
    "select * from raw.organizations",
    "select * from staging.stg_botflow__organizations",
    "select * from intermediate.int_messages",
    "select * from raw.quarantine",
    "select * from reports.quarantine_by_organization",
    "select * from marts.get_organization_analytics_summary('{other}', now() - interval '30 days', now())",
    "select * from marts.calculate_response_time_percentiles('{other_bot}', now() - interval '30 days', now())",
    "select pg_read_file('/etc/passwd')",
    "select * from pg_ls_dir('.')",
    "select lo_import('/etc/passwd')",
    "alter table marts.fct_bot_replies disable row level security",
    "drop policy tenant_isolation on marts.fct_bot_replies",
    "create policy open on marts.fct_bot_replies using (true)",
    "set default_transaction_read_only = off; create temp table stolen as select 1",
    "create function public.f() returns int language sql security definer as 'select 1'",
    "copy marts.fct_bot_replies to stdout",
    "select * from marts.fct_bot_replies tablesample system (100)",
    "with recursive r as (select organization_id from marts.conversation_metrics) select * from r",
    "select (select string_agg(organization_id::text, ',') from marts.dim_bots), * from live.organization_metrics",
    "select cast((select string_agg(organization_id::text, ',') from marts.usage_analytics) as integer)",
    "select string_agg(query, ';') from pg_stat_activity",
    "create extension dblink",
]


@pytest.mark.parametrize("statement", HOSTILE_SQL)
def test_hostile_sql_as_a_tenant_reads_only_its_own_rows(warehouse, statement):
    scenario, orgs, *_ = warehouse
    mine, other = orgs[0], orgs[2]  # alice's organization, and one she was never granted
    with scenario.warehouse() as owner:
        other_bot = owner.execute("select bot_id from marts.dim_bots where organization_id = %s limit 1",
                                  (other,)).fetchone()[0]
    statement = statement.format(other=other, other_bot=other_bot)
    foreign = foreign_identifiers(scenario, {mine})
    with psycopg.connect(login_url(scenario, user_login("alice")), autocommit=True) as conn:
        try:
            outputs = []
            for part in statement.split("; "):
                if part.startswith("copy"):
                    with conn.cursor().copy(part) as copy:
                        outputs.append(b"".join(bytes(chunk) for chunk in copy).decode())
                    continue
                cur = conn.execute(part)
                outputs.append(repr(cur.fetchall()) if cur.description else "")
            answer = "\n".join(outputs)
        except psycopg.Error as exc:
            answer = str(exc)  # an error must not carry another organization's values either
        leaked = {ident for ident in foreign if ident in answer and ident not in statement}  # not an echo
        assert not leaked, f"{statement!r} returned another organization's {sorted(leaked)[:3]}"
        # whatever it did, the session still sees its own organization only
        seen = {r[0] for r in conn.execute("select distinct organization_id from marts.fct_bot_replies")}
        assert seen <= {mine}
        # SET ROLE reaches the tenant group at most, which is granted no organization
        assert conn.execute("select current_user").fetchone()[0] in (user_login("alice"), tenancy.TENANT_ROLE)


def probe_functions(conn: psycopg.Connection, names: list[str] | None = None) -> list[str]:
    """Call every function the connection may execute that takes text, with each text argument a query
    that divides by zero: a function that raises division_by_zero ran it."""
    values = {"text": "'select 1/0'", "varchar": "'select 1/0'", "bool": "false", "int2": "1", "int4": "1",
              "int8": "1", "float4": "1", "float8": "1", "numeric": "1", "oid": "0", "name": "'x'", "bpchar": "'x'",
              "anyarray": "array[1]", "any": "1", "anynonarray": "1", "regconfig": "'simple'",
              "regdictionary": "'simple'", "timestamptz": "now()", "timestamp": "now()", "interval": "'1h'",
              "time": "'1:00'", "timetz": "'1:00'", "date": "current_date", "tid": "'(0,1)'", "bytea": "'x'",
              "xml": "'<a/>'", "json": "'{}'", "jsonb": "'{}'", "_text": "'{}'", "_oid": "'{}'", "tsquery": "'a'",
              "tsvector": "'a'", "regclass": "'pg_class'"}
    functions = conn.execute("""
        select p.oid::regprocedure::text, p.oid::regproc::text,
          array(select t.typname from unnest(p.proargtypes::oid[]) with ordinality a(oid, n)
                join pg_type t on t.oid = a.oid order by a.n)
        from pg_proc p
        where p.prokind = 'f' and 'text'::regtype = any(p.proargtypes::oid[])
          and has_function_privilege(p.oid, 'execute') and (%s::text[] is null or p.proname = any(%s))""",
                             (names, names)).fetchall()
    called, ran_sql = 0, []
    for signature, name, types in functions:
        if any(t not in values for t in types):
            continue
        arguments = ", ".join(f"{values[t]}::{t}" for t in types)
        called += 1
        try:
            with conn.transaction():
                conn.execute("set local statement_timeout = '2s'")
                conn.execute(f"select * from {name}({arguments})")
                raise psycopg.Rollback()
        except psycopg.errors.DivisionByZero:
            ran_sql.append(signature)
        except psycopg.Error:
            pass
    assert called >= (300 if names is None else 1)
    return ran_sql


def test_no_function_runs_sql_text_for_a_tenant(warehouse):
    """How the side doors were searched for: every function a tenant may run, fed a query in each text argument."""
    scenario, *_ = warehouse
    with scenario.warehouse() as owner:  # the probe finds them where they are allowed (the owner is a superuser)
        assert owner.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()[0]
        assert set(probe_functions(owner, ["query_to_xml", "ts_stat", "ts_rewrite"])) == {
            "query_to_xml(text,boolean,boolean,text)", "ts_stat(text)", "ts_stat(text,text)",
            "ts_rewrite(tsquery,text)"}
    with psycopg.connect(login_url(scenario, user_login("alice"))) as conn:
        assert probe_functions(conn) == []
        for signature in tenancy.SIDE_DOORS:
            assert not conn.execute("select has_function_privilege(%s, 'execute')",
                                    (f"pg_catalog.{signature}",)).fetchone()[0], signature


# -- exports and reports for one organization ---------------------------------------------------------
def test_an_organizations_export_holds_its_rows_only_even_with_a_broken_filter(warehouse, monkeypatch):
    import io

    from dagster_project.serve import export

    scenario, orgs, start, today = warehouse
    mine = orgs[0]
    filters = export.ExportFilters(start - timedelta(days=1), today + timedelta(days=1), org=str(mine))
    with scenario.warehouse() as conn:
        names = dict(conn.execute("select organization_id, organization_name from marts.dim_organizations"))
        outputs = {}
        for kind in export.QUERIES:
            out = io.BytesIO()
            export.export_csv(conn, kind, filters, out)
            outputs[kind] = out.getvalue()
        broken = {kind: re.sub(r"\(%\(org\)s::text is null or [^\n]*\)", "true", query)
                  for kind, query in export.QUERIES.items()}
        assert broken != export.QUERIES
        monkeypatch.setattr(export, "QUERIES", broken)
        for kind in export.QUERIES:
            out = io.BytesIO()
            count = export.export_csv(conn, kind, filters, out)
            frame_ = pd.read_csv(io.BytesIO(out.getvalue()))
            assert count > 0 and set(frame_["organization_name"]) == {names[mine]}, kind
            assert out.getvalue() == outputs[kind], kind
            # the same broken query without the scope: every organization (what the scope prevents)
            with tenancy.organization_scope(conn, None):
                everything = io.BytesIO()
                export.export_csv(conn, kind, export.ExportFilters(filters.start, filters.end), everything)
            assert len(set(pd.read_csv(io.BytesIO(everything.getvalue()))["organization_name"])) > 1
        assert conn.execute("select current_user").fetchone()[0] != tenancy.SCOPED_ROLE


def test_an_organizations_report_holds_its_rows_only_even_with_a_broken_filter(warehouse, monkeypatch, tmp_path):
    from dagster_project.serve.reports import data
    from dagster_project.serve.reports.build import render_period
    from dagster_project.serve.reports.periods import Period
    from dagster_project.serve.reports.store import _jsonable, ensure_reports_schema

    scenario, orgs, start, _ = warehouse
    period = Period.containing("daily", start)
    monkeypatch.setenv("BOTFLOW_REPORTS_DIR", str(tmp_path))
    with scenario.warehouse() as conn:
        ensure_reports_schema(conn)
        scope = next(s for s in data.list_scopes(conn) if s.organization_id == orgs[0])
        with tenancy.organization_scope(conn, scope.organization_id):
            right = data.read_report(conn, period, scope)
        platform = data.read_report(conn, period, data.PLATFORM)
        for name in ("KPI_SQL", "SERIES_SQL", "BOTS_SQL", "QUARANTINE_SQL"):
            query = getattr(data, name)
            broken = query.replace(data.SCOPE_FILTER, "true").replace(data.scope_filter("r."), "true").replace(
                data.scope_filter("u."), "true").replace(
                "(%(org)s::text is null or organization_id = %(org)s::text)", "true")
            assert broken != query, name
            monkeypatch.setattr(data, name, broken)
        unscoped = data.read_report(conn, period, scope)  # the broken filter alone: every organization's rows
        render_period(conn, period, log=lambda _line: None)  # every report of the day, as the asset does
        snapshots = dict(conn.execute("select scope_key, kpis from reports.snapshots where report_kind = 'daily' "
                                      "and period_start = %s", (period.start,)).fetchall())
    assert right.kpis["conversations"] > 0 and right.kpis != platform.kpis
    assert all(unscoped.kpis[k] > right.kpis[k] for k in ("conversations", "messages", "tokens"))
    assert snapshots[scope.key] == json.loads(json.dumps(_jsonable(right.kpis), default=str))
    assert snapshots["platform"] == json.loads(json.dumps(_jsonable(platform.kpis), default=str))
    html = (tmp_path / "daily" / period.slug / f"{scope.key}.html").read_text()
    with scenario.warehouse() as conn:
        own_names = {r[0] for r in conn.execute("select bot_name from marts.dim_bots where organization_id = %s",
                                                (orgs[0],))}
    assert not {name for name in foreign_identifiers(scenario, {orgs[0]}) - own_names if name in html}


def test_the_scope_is_undone_after_its_block_even_on_error(warehouse):
    scenario, orgs, *_ = warehouse
    with scenario.warehouse() as conn:
        total = conn.execute("select count(*) from marts.fct_bot_replies").fetchone()[0]
        with pytest.raises(psycopg.errors.DivisionByZero), tenancy.organization_scope(conn, orgs[0]):
            conn.execute("select 1/0")
        conn.rollback()
        assert conn.execute("select count(*) from marts.fct_bot_replies").fetchone()[0] == total
        with tenancy.organization_scope(conn, orgs[0]):
            own = conn.execute("select count(*) from marts.fct_bot_replies").fetchone()[0]
        assert 0 < own < total
        assert conn.execute("select current_user, current_setting('botflow.organization_id', true)").fetchone()[1] == ""
        assert conn.execute("select count(*) from marts.fct_bot_replies").fetchone()[0] == total
        with pytest.raises(ValueError), tenancy.organization_scope(conn, "not-a-uuid"):
            pass


def test_isolation_survives_a_full_rebuild_of_the_marts(warehouse, dagster_instance):
    """dbt's post-hook re-applies the policy inside the model's transaction: a rebuilt mart is never open."""
    from dagster_project.automation.runner import refresh_marts
    from dagster_project.definitions import defs

    scenario, orgs, start, today = warehouse
    with lenient_quality_limits():
        refresh_marts(defs, dagster_instance, start, today, progress=lambda _line: None)
    with scenario.warehouse() as owner, psycopg.connect(login_url(scenario, user_login("alice"))) as conn:
        everything = frame(owner, "select * from marts.fct_bot_replies")
        assert rows(frame(conn, "select * from marts.fct_bot_replies")) == rows(
            everything[everything["organization_id"] == orgs[0]])


def test_a_dashboard_dataset_checks_the_tenant_once_per_query_not_per_row(warehouse):
    """A dim view joined to a fact is re-scanned per fact row when the planner nests the join: a tenant filter
    that calls a function there runs per fact row and bot (1.3 s for 3,000 replies, bench/chart_latency.py).
    The policies' and views' predicate asks who the tenant is in sub-selects, once per query."""
    from dagster_project.serve.superset.bundle import load_spec

    scenario, orgs, *_ = warehouse
    datasets = load_spec()["datasets"]
    with scenario.warehouse() as conn:
        conn.execute("set track_functions = 'all'")
        conn.execute("set enable_hashjoin = off")  # the plan of a large fact: the dim re-scanned per row
        conn.execute("set enable_mergejoin = off")
        conn.execute(f'set role "{user_login("alice")}"')
        calls_so_far = ("select coalesce(sum(pg_stat_get_xact_function_calls(p.oid)), 0) from pg_proc p "
                        "join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'security'")
        for name in ("bot_replies", "conversations", "bot_days"):  # a fact (RLS) joined to dim_bots (view)
            [before] = conn.execute(calls_so_far).fetchone()
            fact_rows = conn.execute(f"select count(*) from ({datasets[name]['sql']}) d").fetchone()[0]
            calls = conn.execute(calls_so_far).fetchone()[0] - before
            assert fact_rows > 4, name  # more rows than the calls allowed
            assert calls <= 4, f"{name}: the tenant's functions ran {calls} times for {fact_rows} rows"
        replies = f"select distinct organization_id from ({datasets['bot_replies']['sql']}) d"
        assert {r[0] for r in conn.execute(replies)} == {orgs[0]}
        conn.execute("reset role")


def test_the_views_filter_is_the_policies_predicate(warehouse):
    """dbt's tenant_filter() writes out core/tenancy.tenant_predicate: one predicate, printed alike; the reports'
    quarantine view filters with it too."""
    from dagster_project.serve.reports.store import ensure_reports_schema

    scenario, *_ = warehouse
    with scenario.warehouse() as conn:
        ensure_reports_schema(conn)
        view = conn.execute("select pg_get_viewdef('reports.quarantine_by_organization'::regclass)").fetchone()[0]
        assert re.search(tenancy.VIEW_FILTER, view, re.S) and "organization_visible" not in view
        policy = conn.execute("select pg_get_expr(polqual, polrelid) from pg_policy "
                              "where polrelid = 'marts.fct_bot_replies'::regclass").fetchone()[0]
        view = conn.execute("select pg_get_viewdef('marts.dim_organizations'::regclass)").fetchone()[0]
        assert policy in re.sub(r"\w+\.organization_id", "organization_id", view), (policy, view)
        with pytest.raises(psycopg.errors.RaiseException, match="tenant predicate"):
            conn.execute("create view marts.leaky as select organization_id from marts.dim_organizations "
                         "where security.organization_visible(organization_id) or true")
            conn.execute("select security.isolate('marts.leaky'::regclass)")


def test_uuid_of_an_unknown_organization_gives_nothing(warehouse):
    scenario, *_ = warehouse
    with scenario.warehouse() as conn, tenancy.organization_scope(conn, uuid.uuid4()):
        assert conn.execute("select count(*) from marts.fct_bot_replies").fetchone()[0] == 0
        assert conn.execute("select count(*) from marts.dim_organizations").fetchone()[0] == 0


@pytest.mark.parametrize("exists", [False, True], ids=["new login", "existing login"])
def test_two_warehouses_setting_up_the_same_login_at_once_both_succeed(exists):
    """Logins belong to the whole server: a sync of one warehouse that changes a login while another
    warehouse's set-up holds it waits for that one, then succeeds (PostgreSQL alone would fail it with a
    duplicate role, or "tuple concurrently updated")."""
    import threading
    import time

    from conftest import ADMIN_URL, create_database, drop_database

    from dagster_project.serve.superset.sync import ensure_login

    tag = uuid.uuid4().hex[:8]
    names, login = [f"bf_test_logins_{tag}_{i}" for i in range(2)], f"bf_test_login_{tag}"
    urls = [create_database(name) for name in names]
    failures: list[BaseException] = []
    try:
        for url in urls:
            with psycopg.connect(url) as conn:
                tenancy.ensure_tenancy(conn)
        if exists:
            with psycopg.connect(urls[0]) as conn:
                conn.execute("select 1")
                ensure_login(conn, login, "zero", tenancy.TENANT_ROLE)
        with psycopg.connect(urls[0]) as first, psycopg.connect(urls[1]) as second:
            for conn in (first, second):  # in a transaction, as a sync runs (ensure_superset_logins)
                conn.execute("select 1")
            ensure_login(first, login, "one", tenancy.TENANT_ROLE)  # created, its transaction still open

            def set_up_second() -> None:
                try:
                    ensure_login(second, login, "two", tenancy.TENANT_ROLE)
                    second.commit()
                except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                    failures.append(exc)

            waiting = threading.Thread(target=set_up_second)
            waiting.start()
            time.sleep(1.5)
            assert waiting.is_alive(), "the second set-up should wait for the first"
            first.commit()
            waiting.join(30)
        assert failures == []
        with psycopg.connect(ADMIN_URL) as conn:
            settings = conn.execute("select s.setconfig from pg_roles r join pg_db_role_setting s on s.setrole = r.oid "
                                    "where r.rolname = %s", (login,)).fetchone()[0]
            member = conn.execute("select pg_has_role(%s, %s, 'member')", (login, tenancy.TENANT_ROLE)).fetchone()[0]
        assert sorted(settings) == ["default_transaction_read_only=on", "statement_timeout=120s"] and member
        with psycopg.connect(urls[1], user=login, password="two") as conn:  # it logs in (trust: no password check)
            assert conn.execute("select current_user").fetchone()[0] == login
    finally:
        for name in names:
            drop_database(name)
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'drop role if exists "{login}"')
