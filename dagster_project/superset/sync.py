"""`botflow superset sync` and `grant`: the warehouse reader role, the dashboards, and row-level security.

- The warehouse role `botflow_superset_reader` (read-only transactions, SELECT on marts and live only;
  no raw data, no quarantine, no phone numbers) is what Superset connects as.
- The dashboards of superset/dashboards.yaml are imported with overwrite (same uuids: updates, never
  duplicates).
- Row-level security, deny by default: a Base filter `1 = 0` on every BotFlow dataset applies to every
  role except Admin and the organization roles; each organization role `org:<name>` has a Regular
  filter `organization_id = '<id>'`. Analysts get Gamma + "BotFlow Analyst" (read access to the
  BotFlow datasets) + their organization's role.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import conninfo, sql

from ..live.refresh import ensure_live_schema
from .api import SupersetApi, SupersetError
from .bundle import DATABASE_NAME, IMPORT_ORDER, load_spec, render_bundles
from .service import SupersetSettings, _psycopg2_url

READER_ROLE = "botflow_superset_reader"
ANALYST_ROLE = "BotFlow Analyst"
ORG_ROLE_PREFIX = "org:"
BASE_FILTER = "botflow: no organization role, no rows"
READER_SCHEMAS = ("marts", "live")
MASKED = "XXXXXXXXXX"


def ensure_reader_role(conn: psycopg.Connection, password: str) -> None:
    """Create or update the read-only warehouse role (idempotent; run as the warehouse's owner)."""
    conn.execute("select pg_advisory_xact_lock(hashtext('botflow.superset.reader'))")
    role = sql.Identifier(READER_ROLE)
    if conn.execute("select 1 from pg_roles where rolname = %s", (READER_ROLE,)).fetchone() is None:
        conn.execute(sql.SQL("create role {} login").format(role))
    conn.execute(sql.SQL("alter role {} with login nosuperuser nocreatedb nocreaterole noinherit password {}")
                 .format(role, sql.Literal(password)))
    conn.execute(sql.SQL("alter role {} set default_transaction_read_only = on").format(role))
    database = conn.execute("select current_database()").fetchone()[0]
    conn.execute(sql.SQL("grant connect on database {} to {}").format(sql.Identifier(database), role))
    ensure_live_schema(conn)
    for schema in READER_SCHEMAS:
        s = sql.Identifier(schema)
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(s, role))
        conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(s, role))
        conn.execute(sql.SQL("alter default privileges in schema {} grant select on tables to {}").format(s, role))


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


def sync(s: SupersetSettings, warehouse_url: str, progress: Callable[[str], None] = print) -> SyncResult:
    spec = load_spec()
    with psycopg.connect(warehouse_url) as conn:
        ensure_reader_role(conn, s.reader_password)
        conn.commit()
        if conn.execute("select to_regclass('marts.dim_bots')").fetchone()[0] is None:
            raise SupersetError("marts.dim_bots is missing: build the warehouse first (botflow run / demo)")
        bundles = render_bundles(conn, reader_uri(warehouse_url, None), spec)
    api = SupersetApi(s.url, s.admin_user, s.admin_password)
    import_bundles(api, bundles, s.reader_password)
    progress(f"imported {len(spec['datasets'])} datasets, {len(spec['charts'])} charts, "
             f"{len(spec['dashboards'])} dashboards into {s.url}")
    ensure_analyst_role(api)
    ensure_base_filter(api)
    return SyncResult(len(spec["datasets"]), len(spec["charts"]), len(spec["dashboards"]))


def import_bundles(api: SupersetApi, bundles: dict[str, bytes], reader_password: str) -> None:
    for kind in IMPORT_ORDER:  # database, datasets, charts, dashboards: each overwritten by its own importer
        api.import_bundle(kind, bundles[kind], {"databases/BotFlow_warehouse.yaml": reader_password})


# -- roles, users and row-level security ---------------------------------------------------------
def _by_name(rows: list[dict], key: str = "name") -> dict[str, dict]:
    return {row[key]: row for row in rows}


def botflow_dataset_ids(api: SupersetApi) -> list[int]:
    names = set(load_spec()["datasets"])
    rows = api.list_all("/api/v1/dataset/", ["id", "table_name", "database.database_name"])
    return sorted(r["id"] for r in rows if r["table_name"] in names and r["database"]["database_name"] == DATABASE_NAME)


def ensure_role(api: SupersetApi, name: str) -> int:
    roles = _by_name(api.list_all("/api/v1/security/roles/"))
    if name in roles:
        return roles[name]["id"]
    return api.post("/api/v1/security/roles/", {"name": name})["id"]


def ensure_analyst_role(api: SupersetApi) -> int:
    """A role with read access to the BotFlow datasets (schema_access on the datasets' schema)."""
    role_id = ensure_role(api, ANALYST_ROLE)
    wanted = ("schema_access", f"[{DATABASE_NAME}].[marts]")
    ids = [pv["id"] for pv in api.list_all("/api/v1/security/permissions-resources/")
           if (pv["permission"]["name"], pv["view_menu"]["name"]) == wanted]
    if not ids:
        raise SupersetError(f"no schema_access permission for {wanted[1]}: import the dashboards first (sync)")
    api.post(f"/api/v1/security/roles/{role_id}/permissions", {"permission_view_menu_ids": ids})
    return role_id


def _upsert_rls(api: SupersetApi, name: str, payload: dict) -> None:
    existing = _by_name(api.list_all("/api/v1/rowlevelsecurity/"))
    body = {"name": name, **payload}
    if name in existing:
        api.put(f"/api/v1/rowlevelsecurity/{existing[name]['id']}", body)
    else:
        api.post("/api/v1/rowlevelsecurity/", body)


def ensure_base_filter(api: SupersetApi) -> None:
    """Deny by default: every role but Admin and the organization roles sees no BotFlow rows."""
    roles = api.list_all("/api/v1/security/roles/")
    exempt = [r["id"] for r in roles if r["name"] == "Admin" or r["name"].startswith(ORG_ROLE_PREFIX)]
    _upsert_rls(api, BASE_FILTER, {
        "filter_type": "Base", "tables": botflow_dataset_ids(api), "roles": exempt, "clause": "1 = 0",
        "description": "Users without an organization role see no BotFlow rows (botflow superset grant)."})


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
    api = SupersetApi(s.url, s.admin_user, s.admin_password)
    role_name = f"{ORG_ROLE_PREFIX}{org_name}"
    org_role = ensure_role(api, role_name)
    _upsert_rls(api, f"botflow: {role_name}", {
        "filter_type": "Regular", "tables": botflow_dataset_ids(api), "roles": [org_role],
        "clause": f"organization_id = '{org_id}'", "group_key": "organization",
        "description": f"Rows of {org_name} only."})
    ensure_base_filter(api)
    roles = _by_name(api.list_all("/api/v1/security/roles/"))
    role_ids = [roles["Gamma"]["id"], ensure_analyst_role(api), org_role]
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
