"""`botflow superset sync` and `grant`: the warehouse logins, the dashboards, and both layers of isolation.

Enforcement lives in the warehouse (dagster_project/core/tenancy.py, docs/tenant-isolation.md). Superset
connects to it as the login of the user it serves (superset_config.py's DB_CONNECTION_MUTATOR, by
dagster_project/serve/superset/logins.py):
- `botflow_superset_reader`, the login Superset stores: users with no organization role; no rows.
- `botflow_superset_admin`: Superset's Admins; every organization.
- `botflow_user_<hash>`: one per user given an organization by `grant`; that organization's rows only
  (security.tenant_access), whatever SQL a chart, filter or expression sends.
Every login is read-only, with a statement timeout, and reaches no other database of BotFlow's.

Superset's own row-level security stays as a second layer, failing closed: a Base filter `1 = 0` on
every BotFlow dataset for every role except Admin and the organization roles; each organization role
`org:<name>` has a Regular filter `organization_id = '<id>'` on every BotFlow dataset, re-applied by each
sync (datasets added later included). Analysts reach a dataset through `datasource_access` granted by
sync after its filters exist, so a dataset without them is invisible.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg
from psycopg import conninfo, sql

from dagster_project.core.settings import redact, scrub
from dagster_project.core.tenancy import (
    ALL_ORGANIZATIONS_ROLE,
    ISOLATED_SCHEMAS,
    TENANT_ROLE,
    close_side_doors,
    ensure_tenancy,
    isolate_schemas,
)
from dagster_project.serve.superset.api import SupersetApi, SupersetError
from dagster_project.serve.superset.bundle import DATABASE_NAME, IMPORT_ORDER, load_spec, render_bundles
from dagster_project.serve.superset.logins import ADMIN_LOGIN, ORG_ROLE_PREFIX, READER_LOGIN, login_password, user_login
from dagster_project.serve.superset.service import SupersetSettings, _psycopg2_url

READER_ROLE = READER_LOGIN
ANALYST_ROLE = "BotFlow Analyst"
BASE_FILTER = "botflow: no organization role, no rows"
ORG_FILTER_PREFIX = f"botflow: {ORG_ROLE_PREFIX}"
MASKED = "XXXXXXXXXX"
LOGIN_STATEMENT_TIMEOUT = "120s"  # a chart that runs longer is stopped by the warehouse


def _on_role(conn: psycopg.Connection, statement: sql.Composable, attempts: int = 20) -> None:
    """A statement that changes a role. Roles belong to the whole server, not to one warehouse: when two
    warehouses' set-ups (or two syncs) change the same role at once, the later waits for the earlier to
    commit, then PostgreSQL fails it ("tuple concurrently updated", a duplicate, or a deadlock when two
    change two roles in turns). It is retried, in a savepoint, on the committed role."""
    for attempt in range(attempts):
        try:
            with conn.transaction():
                conn.execute(statement)
            return
        except (psycopg.errors.InternalError_, psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected) as exc:
            if isinstance(exc, psycopg.errors.InternalError_) and "concurrently" not in str(exc):
                raise
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def ensure_login(conn: psycopg.Connection, login: str, password: str, group: str) -> None:
    """A read-only login of `group` (tenant or all organizations), created or updated; nothing else."""
    role = sql.Identifier(login)
    _on_role(conn, sql.SQL("""do $$ begin create role {} login; exception when duplicate_object then null; end $$""")
             .format(role))
    _on_role(conn, sql.SQL("alter role {} with login nosuperuser nocreatedb nocreaterole nobypassrls inherit "
                           "noreplication password {}").format(role, sql.Literal(password)))
    _on_role(conn, sql.SQL("alter role {} set default_transaction_read_only = on").format(role))
    _on_role(conn, sql.SQL("alter role {} set statement_timeout = {}").format(
        role, sql.Literal(LOGIN_STATEMENT_TIMEOUT)))
    for other in {TENANT_ROLE, ALL_ORGANIZATIONS_ROLE} - {group}:
        _on_role(conn, sql.SQL("revoke {} from {}").format(sql.Identifier(other), role))
    _on_role(conn, sql.SQL("grant {} to {}").format(sql.Identifier(group), role))


def ensure_superset_logins(conn: psycopg.Connection, tenant_key: str) -> list[str]:
    """The warehouse side of Superset (idempotent; as the warehouse's owner). Returns side doors left open."""
    ensure_tenancy(conn)
    conn.execute("select pg_advisory_xact_lock(hashtext('botflow.superset.logins'))")
    isolate_schemas(conn)  # marts built before tenancy existed get their policy now
    ensure_login(conn, READER_LOGIN, login_password(tenant_key, READER_LOGIN), TENANT_ROLE)
    ensure_login(conn, ADMIN_LOGIN, login_password(tenant_key, ADMIN_LOGIN), ALL_ORGANIZATIONS_ROLE)
    reader = sql.Identifier(READER_LOGIN)
    for schema in ISOLATED_SCHEMAS:  # the grants of earlier versions: SELECT on whole schemas
        s = sql.Identifier(schema)
        conn.execute(sql.SQL("revoke select on all tables in schema {} from {}").format(s, reader))
        conn.execute(sql.SQL("alter default privileges in schema {} revoke select on tables from {}").format(s, reader))
    return close_side_doors(conn)


def ensure_user_login(conn: psycopg.Connection, tenant_key: str, username: str, organization_id: uuid.UUID) -> str:
    """The warehouse login of a Superset user, granted one more organization."""
    login = user_login(username)
    conn.execute("select pg_advisory_xact_lock(hashtext('botflow.superset.logins'))")
    ensure_login(conn, login, login_password(tenant_key, login), TENANT_ROLE)
    conn.execute("insert into security.tenant_access (db_role, organization_id) values (%s, %s) "
                 "on conflict do nothing", (login, organization_id))
    return login


def close_other_databases(urls: Iterable[str], progress: Callable[[str], None]) -> None:
    """Tenant logins connect to the warehouse only: PUBLIC loses CONNECT on BotFlow's other databases.

    The connecting user keeps CONNECT explicitly. A database this user may not change is named, not
    fixed (pg_hba.conf can close it: docs/tenant-isolation.md).
    """
    for url in urls:
        try:
            with psycopg.connect(url.replace("postgresql+psycopg2://", "postgresql://"), autocommit=True) as conn:
                database = sql.Identifier(conn.info.dbname)
                conn.execute(sql.SQL("grant connect on database {} to {}").format(
                    database, sql.Identifier(conn.info.user)))
                conn.execute(sql.SQL("revoke connect on database {} from public").format(database))
        except psycopg.Error as exc:
            progress(f"warning: tenant logins may still connect to {redact(url)}: {scrub(str(exc).strip(), url)}")


def reader_uri(warehouse_url: str, password: str | None) -> str:
    """The warehouse URL as Superset's reader (SQLAlchemy + psycopg2)."""
    params = conninfo.conninfo_to_dict(warehouse_url)
    params["user"] = READER_ROLE
    params["password"] = password or MASKED
    return _psycopg2_url(conninfo.make_conninfo(**params))


@dataclass(frozen=True)
class SyncResult:
    datasets: int
    charts: int
    dashboards: int


def sync(s: SupersetSettings, warehouse_url: str, progress: Callable[[str], None] = print,
         other_databases: Iterable[str] = ()) -> SyncResult:
    spec = load_spec()
    with psycopg.connect(warehouse_url) as conn:
        if conn.execute("select to_regclass('marts.dim_bots')").fetchone()[0] is None:
            raise SupersetError("marts.dim_bots is missing: build the warehouse first (botflow run / demo)")
        still_open = ensure_superset_logins(conn, s.tenant_key)
        conn.commit()
        bundles = render_bundles(conn, reader_uri(warehouse_url, None), spec)
    if still_open:
        progress(f"warning: {len(still_open)} functions that run SQL text stay executable by tenants "
                 f"(revoking them needs a superuser): {', '.join(still_open)}")
    close_other_databases([s.metadata_url, *other_databases], progress)
    api = SupersetApi(s.url, s.admin_user, s.admin_password)
    import_bundles(api, bundles, s.reader_password)
    progress(f"imported {len(spec['datasets'])} datasets, {len(spec['charts'])} charts, "
             f"{len(spec['dashboards'])} dashboards into {s.url}")
    apply_filters(api)
    return SyncResult(len(spec["datasets"]), len(spec["charts"]), len(spec["dashboards"]))


def import_bundles(api: SupersetApi, bundles: dict[str, bytes], reader_password: str) -> None:
    for kind in IMPORT_ORDER:  # database, datasets, charts, dashboards: each overwritten by its own importer
        api.import_bundle(kind, bundles[kind], {"databases/BotFlow_warehouse.yaml": reader_password})


# -- roles, users and row-level security ---------------------------------------------------------
def _by_name(rows: list[dict], key: str = "name") -> dict[str, dict]:
    return {row[key]: row for row in rows}


def botflow_datasets(api: SupersetApi) -> dict[str, int]:
    """The spec's datasets in Superset: name -> id."""
    names = set(load_spec()["datasets"])
    rows = api.list_all("/api/v1/dataset/", ["id", "table_name", "database.database_name"])
    return {r["table_name"]: r["id"] for r in rows
            if r["table_name"] in names and r["database"]["database_name"] == DATABASE_NAME}


def ensure_role(api: SupersetApi, name: str) -> int:
    roles = _by_name(api.list_all("/api/v1/security/roles/"))
    if name in roles:
        return roles[name]["id"]
    return api.post("/api/v1/security/roles/", {"name": name})["id"]


def ensure_analyst_role(api: SupersetApi, datasets: dict[str, int]) -> int:
    """Read access to exactly the BotFlow datasets (datasource_access each; the role's permissions are replaced)."""
    role_id = ensure_role(api, ANALYST_ROLE)
    wanted = {f"[{DATABASE_NAME}].[{name}](id:{dataset_id})" for name, dataset_id in datasets.items()}
    ids = [pv["id"] for pv in api.list_all("/api/v1/security/permissions-resources/")
           if pv["permission"]["name"] == "datasource_access" and pv["view_menu"]["name"] in wanted]
    if len(ids) != len(wanted):
        raise SupersetError(f"{len(wanted) - len(ids)} BotFlow datasets have no datasource_access permission yet: "
                            "run `botflow superset sync` again")
    api.post(f"/api/v1/security/roles/{role_id}/permissions", {"permission_view_menu_ids": ids})
    return role_id


def _upsert_rls(api: SupersetApi, name: str, payload: dict) -> None:
    existing = _by_name(api.list_all("/api/v1/rowlevelsecurity/"))
    body = {"name": name, **payload}
    if name in existing:
        api.put(f"/api/v1/rowlevelsecurity/{existing[name]['id']}", body)
    else:
        api.post("/api/v1/rowlevelsecurity/", body)


def ensure_base_filter(api: SupersetApi, dataset_ids: list[int]) -> None:
    """Deny by default: every role but Admin and the organization roles sees no BotFlow rows."""
    roles = api.list_all("/api/v1/security/roles/")
    exempt = [r["id"] for r in roles if r["name"] == "Admin" or r["name"].startswith(ORG_ROLE_PREFIX)]
    _upsert_rls(api, BASE_FILTER, {
        "filter_type": "Base", "tables": dataset_ids, "roles": exempt, "clause": "1 = 0",
        "description": "Users without an organization role see no BotFlow rows (botflow superset grant)."})


def apply_filters(api: SupersetApi) -> None:
    """Every organization filter and the base filter on every BotFlow dataset, then the analysts' access.

    In that order, so that no dataset is readable by analysts before its filters exist.
    """
    datasets = botflow_datasets(api)
    dataset_ids = sorted(datasets.values())
    for rule in api.list_all("/api/v1/rowlevelsecurity/"):
        if rule["name"].startswith(ORG_FILTER_PREFIX):
            current = api.get(f"/api/v1/rowlevelsecurity/{rule['id']}")["result"]
            api.put(f"/api/v1/rowlevelsecurity/{rule['id']}", {
                "name": current["name"], "filter_type": "Regular", "tables": dataset_ids,
                "roles": [r["id"] for r in current["roles"]], "clause": current["clause"],
                "group_key": current.get("group_key"), "description": current.get("description")})
    ensure_base_filter(api, dataset_ids)
    ensure_analyst_role(api, datasets)


def grant(s: SupersetSettings, warehouse_url: str, organization: str, username: str, password: str | None,
          progress: Callable[[str], None] = print) -> None:
    """Give `username` read access to the dashboards, restricted to `organization` (name or id)."""
    with psycopg.connect(warehouse_url) as conn:
        row = conn.execute("select organization_id, organization_name from marts.dim_organizations "
                           "where organization_name = %s or organization_id::text = %s", (organization, organization)
                           ).fetchone()
        if row is None:
            raise SupersetError(f"--org {organization!r} matches no organization (give its name or id)")
        org_id, org_name = row
        ensure_tenancy(conn)
        ensure_user_login(conn, s.tenant_key, username, org_id)
    api = SupersetApi(s.url, s.admin_user, s.admin_password)
    role_name = f"{ORG_ROLE_PREFIX}{org_name}"
    org_role = ensure_role(api, role_name)
    _upsert_rls(api, f"botflow: {role_name}", {
        "filter_type": "Regular", "tables": sorted(botflow_datasets(api).values()), "roles": [org_role],
        "clause": f"organization_id = '{org_id}'", "group_key": "organization",
        "description": f"Rows of {org_name} only."})
    apply_filters(api)
    roles = _by_name(api.list_all("/api/v1/security/roles/"))
    role_ids = [roles["Gamma"]["id"], roles[ANALYST_ROLE]["id"], org_role]
    users = _by_name(api.list_all("/api/v1/security/users/"), "username")
    if username in users:
        user = api.get(f"/api/v1/security/users/{users[username]['id']}")["result"]
        current = [r["id"] for r in user.get("roles", [])]
        payload: dict = {"roles": sorted(set(current) | set(role_ids))}
        if password:
            payload["password"] = password
        api.put(f"/api/v1/security/users/{users[username]['id']}", payload)
    else:
        if not password:
            raise SupersetError(f"user {username!r} is new: give a password (BOTFLOW_SUPERSET_USER_PASSWORD)")
        api.post("/api/v1/security/users/", {
            "username": username, "first_name": username, "last_name": org_name[:60], "active": True,
            "email": f"{username}@botflow.local", "password": password, "roles": role_ids})
    progress(f"{username} can open the BotFlow dashboards and sees {org_name}'s rows only")
