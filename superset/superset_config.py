"""Superset configuration for the BotFlow warehouse; every value comes from the environment.

`botflow superset up` sets these variables (see dagster_project/superset/service.py):
- BOTFLOW_SUPERSET_METADATA_URL: Superset's own metadata database (PostgreSQL, postgresql+psycopg2://)
- BOTFLOW_SUPERSET_SECRET_KEY: signs sessions; generated once per $BOTFLOW_HOME when unset
"""

import os

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
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}  # never serve stale numbers
