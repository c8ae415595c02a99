"""Tenant isolation in the warehouse itself: whatever SQL reaches it on an organization's behalf reads that
organization's rows only.

The model (docs/tenant-isolation.md):
- Every table of the `marts` and `live` schemas has row-level security with one policy,
  `tenant_isolation`, and is readable only by two group roles: `botflow_tenant` (rows of the
  organizations granted to the current role in `security.tenant_access`) and `botflow_all_organizations`
  (every row: the Superset admin connection). `security.isolate(table)` is the one way a table gets
  both; dbt calls it after each mart build and the live layer after creating its tables. A table it
  was not called on is readable by neither role: closed, not open.
- The views of `marts` (dim_bots, dim_organizations) filter with the policies' predicate, written out
  (dbt's `tenant_filter()`): `isolate()` refuses a view without it.
- Tenant logins (one per Superset user, made by `botflow superset grant`) are members of
  `botflow_tenant`; they cannot become another role, and `current_user` decides what they see, so no
  session setting they can change widens it.
- Jobs scoped to one organization (its export, its report) run as `botflow_scoped_reader`, a
  member of `botflow_tenant` that only the warehouse's owner can become (`SET LOCAL ROLE`), which sees
  the one organization named in the transaction-local setting `botflow.organization_id`.
- Functions that run SQL given as text or read whole tables or schemas by name (`query_to_xml`,
  `table_to_xml`, `ts_stat`, ... see SIDE_DOORS) are revoked from PUBLIC in the warehouse.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

TENANT_ROLE = "botflow_tenant"
ALL_ORGANIZATIONS_ROLE = "botflow_all_organizations"
SCOPED_ROLE = "botflow_scoped_reader"
SCOPE_SETTING = "botflow.organization_id"
ISOLATED_SCHEMAS = ("marts", "live")
TENANCY_VERSION = "botflow tenancy 2"  # the schema comment: DDL re-run only when this changes

# The predicate of every policy and view: scalar sub-selects so that both functions run once per query (an
# InitPlan), not once per row, and an index on organization_id still serves `= any(...)`. dbt's
# tenant_filter() macro writes the same text for the dim views (tests compare the two).
def tenant_predicate(column: str) -> str:
    return (f"((select security.sees_all_organizations()) "
            f"or {column} = any ((select security.visible_organizations())::uuid[]))")


# How isolate() recognises that predicate in a view, as pg_get_viewdef prints it.
VIEW_FILTER = (r"\(\s*SELECT security\.sees_all_organizations\(\).*"
               r"= ANY \(\(\s*SELECT security\.visible_organizations\(\)")

# Functions that run SQL given as text, or read a table, schema or database named in an argument, with
# the caller's rights. Found by tests/test_tenant_isolation.py::test_no_function_runs_sql_text_for_a_tenant,
# which calls every function a tenant may execute with a query that divides by zero in each text argument.
SIDE_DOORS = (
    "query_to_xml(text, boolean, boolean, text)",
    "query_to_xmlschema(text, boolean, boolean, text)",
    "query_to_xml_and_xmlschema(text, boolean, boolean, text)",
    "cursor_to_xml(refcursor, integer, boolean, boolean, text)",
    "cursor_to_xmlschema(refcursor, boolean, boolean, text)",
    "table_to_xml(regclass, boolean, boolean, text)",
    "table_to_xmlschema(regclass, boolean, boolean, text)",
    "table_to_xml_and_xmlschema(regclass, boolean, boolean, text)",
    "schema_to_xml(name, boolean, boolean, text)",
    "schema_to_xmlschema(name, boolean, boolean, text)",
    "schema_to_xml_and_xmlschema(name, boolean, boolean, text)",
    "database_to_xml(boolean, boolean, text)",
    "database_to_xmlschema(boolean, boolean, text)",
    "database_to_xml_and_xmlschema(boolean, boolean, text)",
    "ts_stat(text)",
    "ts_stat(text, text)",
    "ts_rewrite(tsquery, text)",
)

TENANCY_DDL = f"""
do $$
begin
  create role {TENANT_ROLE} nologin;
exception when duplicate_object or unique_violation then null;  -- unique: created at the same time
end $$;
do $$
begin
  create role {ALL_ORGANIZATIONS_ROLE} nologin;
exception when duplicate_object or unique_violation then null;  -- unique: created at the same time
end $$;
do $$
begin
  create role {SCOPED_ROLE} nologin in role {TENANT_ROLE};
exception when duplicate_object or unique_violation then null;  -- unique: created at the same time
end $$;

create schema if not exists security;

create table if not exists security.tenant_access (
  db_role name not null,
  organization_id uuid not null,
  granted_at timestamptz not null default now(),
  primary key (db_role, organization_id));
comment on table security.tenant_access is
  'The organizations each tenant login may read (botflow superset grant). A role reads its own rows here only.';
alter table security.tenant_access enable row level security;
drop policy if exists own_grants on security.tenant_access;
create policy own_grants on security.tenant_access for select using (db_role = current_user);

-- Fail closed: only the warehouse's owner and direct members of {ALL_ORGANIZATIONS_ROLE} see every
-- organization; any other role, a superuser included, sees what tenant_access (or the scope) grants it.
create or replace function security.sees_all_organizations() returns boolean
language sql stable parallel safe as $fn$
  select current_user = (select nspowner::regrole::name from pg_namespace where nspname = 'security')
    or exists (select 1 from pg_auth_members m
               where m.roleid = '{ALL_ORGANIZATIONS_ROLE}'::regrole and m.member = to_regrole(current_user))
$fn$;

create or replace function security.visible_organizations() returns uuid[]
language sql stable parallel safe as $fn$
  select case
    when current_user = '{SCOPED_ROLE}'
      then array[nullif(current_setting('{SCOPE_SETTING}', true), '')::uuid]
    else array(select organization_id from security.tenant_access where db_role = current_user)
  end
$fn$;

-- Views built before tenancy 2 called this per row (a function with sub-selects is never inlined, so a
-- dim view joined to a fact was re-filtered for every fact row); views now write the predicate out.
create or replace function security.organization_visible(p_organization_id uuid) returns boolean
language sql stable parallel safe as $fn$
  select {tenant_predicate("p_organization_id")}
$fn$;
comment on function security.organization_visible(uuid) is
  'Kept for views built before tenancy 2; views filter with the predicate written out (VIEW_FILTER).';

create or replace function security.isolate(p_table regclass) returns void
language plpgsql as $fn$
begin
  if (select relkind from pg_class where oid = p_table) = 'v' then
    if pg_get_viewdef(p_table) !~ '{VIEW_FILTER}' then
      raise exception 'view % does not filter with the tenant predicate (dbt: tenant_filter())', p_table;
    end if;
    execute format('alter view %s set (security_barrier = true)', p_table);
    execute format('grant select on %s to {TENANT_ROLE}, {ALL_ORGANIZATIONS_ROLE}', p_table);
    return;
  end if;
  if not (select relrowsecurity from pg_class where oid = p_table) then
    execute format('alter table %s enable row level security', p_table);
  end if;
  if not exists (select 1 from pg_policy where polrelid = p_table and polname = 'tenant_isolation') then
    execute format('create policy tenant_isolation on %s for select using ({tenant_predicate("organization_id")})',
                   p_table);
  end if;
  if not has_table_privilege('{TENANT_ROLE}', p_table, 'select')
     or not has_table_privilege('{ALL_ORGANIZATIONS_ROLE}', p_table, 'select') then
    execute format('grant select on %s to {TENANT_ROLE}, {ALL_ORGANIZATIONS_ROLE}', p_table);
  end if;
end $fn$;
comment on function security.isolate(regclass) is
  'Row-level security with the tenant_isolation policy, and SELECT for the tenant roles: the one way a '
  'table becomes readable by them. A view must filter with the tenant predicate (dbt: tenant_filter()).';

grant usage on schema security to {TENANT_ROLE}, {ALL_ORGANIZATIONS_ROLE};
grant select on security.tenant_access to {TENANT_ROLE}, {ALL_ORGANIZATIONS_ROLE};
"""


def ensure_tenancy(conn: psycopg.Connection) -> list[str]:
    """Create the roles, the `security` schema and its functions (idempotent; as the warehouse's owner).

    Returns the side doors that could not be closed (revoking them needs a superuser).
    """
    if _installed(conn):
        return []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('botflow.security.ddl'))")
        conn.execute(TENANCY_DDL)
        conn.execute(sql.SQL("comment on schema security is {}").format(sql.Literal(TENANCY_VERSION)))
        owner = conn.execute("select current_user").fetchone()[0]
        superuser = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()[0]
        if not superuser:  # the owner switches to the scoped role for per-organization jobs
            conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(SCOPED_ROLE), sql.Identifier(owner)))
        for schema in ISOLATED_SCHEMAS:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("grant usage on schema {} to {}, {}").format(
                sql.Identifier(schema), sql.Identifier(TENANT_ROLE), sql.Identifier(ALL_ORGANIZATIONS_ROLE)))
    database = sql.Identifier(conn.info.dbname)
    try:  # needs the database's owner: without it tenants keep PUBLIC's CONNECT and TEMPORARY
        with conn.transaction():
            conn.execute(sql.SQL("revoke temporary on database {} from public").format(database))
            conn.execute(sql.SQL("grant connect on database {} to {}, {}").format(
                database, sql.Identifier(TENANT_ROLE), sql.Identifier(ALL_ORGANIZATIONS_ROLE)))
    except psycopg.errors.InsufficientPrivilege:
        pass
    return close_side_doors(conn)


def _installed(conn: psycopg.Connection) -> bool:
    with conn.transaction():
        return conn.execute("select obj_description(oid, 'pg_namespace') = %s from pg_namespace "
                            "where nspname = 'security'", (TENANCY_VERSION,)).fetchone() == (True,)


def close_side_doors(conn: psycopg.Connection) -> list[str]:
    """Revoke SIDE_DOORS from PUBLIC; returns those still executable by a tenant."""
    still_open = []
    for signature in SIDE_DOORS:
        function = f"pg_catalog.{signature}"
        if not conn.execute("select has_function_privilege(%s, %s, 'execute')", (TENANT_ROLE, function)).fetchone()[0]:
            continue
        try:
            with conn.transaction():
                conn.execute(sql.SQL("revoke execute on function {} from public").format(sql.SQL(function)))
        except psycopg.errors.InsufficientPrivilege:
            still_open.append(signature)
    return still_open


def isolate(conn: psycopg.Connection, table: str) -> None:
    """Make a table of the marts or live schema readable by tenants, through its policy only."""
    conn.execute("select security.isolate(%s::regclass)", (table,))


def isolate_schemas(conn: psycopg.Connection) -> list[str]:
    """isolate() every table of the marts and live schemas (tables built before isolation existed)."""
    tables = [row[0] for row in conn.execute(
        "select quote_ident(n.nspname) || '.' || quote_ident(c.relname) from pg_class c "
        "join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = any(%s) and c.relkind in ('r', 'p') order by 1", (list(ISOLATED_SCHEMAS),))]
    for table in tables:
        isolate(conn, table)
    return tables


@contextmanager
def organization_scope(conn: psycopg.Connection, organization_id: uuid.UUID | str | None) -> Iterator[None]:
    """Within this block the connection reads one organization's rows only, whatever the SQL says.

    A transaction (or savepoint) as `botflow_scoped_reader` with `botflow.organization_id` set locally;
    both are undone when it ends, by its rollback or, within an outer transaction, explicitly. With
    organization_id None (the whole platform) nothing changes.
    """
    if organization_id is None:
        yield
        return
    with conn.transaction():
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(SCOPED_ROLE)))
        conn.execute("select set_config(%s, %s, true)", (SCOPE_SETTING, str(uuid.UUID(str(organization_id)))))
        yield
        conn.execute("reset role")
        conn.execute("select set_config(%s, '', true)", (SCOPE_SETTING,))
