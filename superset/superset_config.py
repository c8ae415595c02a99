"""Superset configuration for the BotFlow warehouse; every value comes from the environment.

`botflow superset up` sets these variables (see dagster_project/serve/superset/service.py):
- BOTFLOW_SUPERSET_METADATA_URL: Superset's own metadata database (PostgreSQL, postgresql+psycopg2://)
- BOTFLOW_SUPERSET_SECRET_KEY: signs sessions; generated once per $BOTFLOW_HOME when unset
- BOTFLOW_SUPERSET_TENANT_KEY: the warehouse logins' passwords derive from it (see below)
- BOTFLOW_SUPERSET_CACHE_SECONDS: how long chart results are cached (0, the default: never), in
  BOTFLOW_SUPERSET_CACHE_DIR

Tenant isolation is enforced by the warehouse (docs/tenant-isolation.md): every warehouse connection is
made as the login of the user it serves (DB_CONNECTION_MUTATOR below), and that login reads its own
organizations' rows only, whatever SQL a chart sends. Superset's row-level security filters stay as a
second layer; cached results are keyed per user.
"""

import importlib.util
import os
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "botflow_logins", Path(__file__).resolve().parent.parent / "dagster_project" / "serve" / "superset" / "logins.py")
_logins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_logins)
_TENANT_KEY = os.environ["BOTFLOW_SUPERSET_TENANT_KEY"]


def DB_CONNECTION_MUTATOR(uri, params, username, security_manager, source):  # noqa: N802 - Superset's name
    return _logins.mutate_connection(uri, params, username, security_manager, _TENANT_KEY)


SQLALCHEMY_DATABASE_URI = os.environ["BOTFLOW_SUPERSET_METADATA_URL"]
SECRET_KEY = os.environ["BOTFLOW_SUPERSET_SECRET_KEY"]

FEATURE_FLAGS = {
    "DASHBOARD_RBAC": True,  # dashboards list the roles that may open them
    "ENABLE_TEMPLATE_PROCESSING": False,
    "DASHBOARD_NATIVE_FILTERS": True,
}
FAB_ADD_SECURITY_API = True  # /api/v1/security/roles and /users, used by `botflow superset grant`
ROW_LEVEL_SECURITY = True

# served on 127.0.0.1 over http: no HTTPS redirects, cookies without the Secure flag
TALISMAN_ENABLED = False
SESSION_COOKIE_SECURE = False
WTF_CSRF_ENABLED = True
WTF_CSRF_EXEMPT_LIST = ["superset.views.core.log", "superset.views.core.explore_json"]
PREVENT_UNSAFE_DB_CONNECTIONS = False  # the warehouse may be an embedded PostgreSQL on a unix socket

SUPERSET_WEBSERVER_TIMEOUT = 120
ROW_LIMIT = 50000
# the live dashboard refreshes every 10 s: let it
SUPERSET_DASHBOARD_PERIODICAL_REFRESH_LIMIT = 0
# Off by default (never stale numbers). When on, results live in files under $BOTFLOW_HOME/superset and
# their keys include the user (the database's extra per_user_caching), so one organization's cached
# result is never served to another.
_CACHE_SECONDS = int(os.environ.get("BOTFLOW_SUPERSET_CACHE_SECONDS", "0"))
DATA_CACHE_CONFIG = (
    {"CACHE_TYPE": "FileSystemCache", "CACHE_DIR": os.environ["BOTFLOW_SUPERSET_CACHE_DIR"],
     "CACHE_DEFAULT_TIMEOUT": _CACHE_SECONDS, "CACHE_KEY_PREFIX": "botflow_data_", "CACHE_THRESHOLD": 5000}
    if _CACHE_SECONDS > 0 else {"CACHE_TYPE": "NullCache"})
