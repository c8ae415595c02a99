"""Which warehouse login Superset uses for each of its users, and that login's password.

Read by both sides, so it imports nothing beyond the standard library: `botflow superset grant` creates
the logins; superset/superset_config.py loads this file by path into Superset's own virtualenv and
calls `mutate_connection` (Superset's DB_CONNECTION_MUTATOR) before every warehouse connection.

- A Superset Admin connects as `botflow_superset_admin` (every organization).
- A user with an organization role (`org:<name>`, given by grant) connects as its own login,
  `botflow_user_<hash of the username>`, which reads the organizations granted to it in
  security.tenant_access, whatever SQL it sends.
- Anyone else connects as `botflow_superset_reader`, the database's stored login: no organization.

Passwords are an HMAC of the login's name under BOTFLOW_SUPERSET_TENANT_KEY, so nothing but that key
is stored, and only Superset's process and the botflow CLI hold it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

READER_LOGIN = "botflow_superset_reader"
ADMIN_LOGIN = "botflow_superset_admin"
USER_LOGIN_PREFIX = "botflow_user_"
ORG_ROLE_PREFIX = "org:"
ADMIN_ROLE = "Admin"


def user_login(username: str) -> str:
    """The warehouse login of a Superset user (a hash: usernames may hold any character)."""
    return USER_LOGIN_PREFIX + hashlib.sha256(username.encode()).hexdigest()[:24]


def login_password(tenant_key: str, login: str) -> str:
    return hmac.new(tenant_key.encode(), f"botflow-login:{login}".encode(), hashlib.sha256).hexdigest()


def login_for(username: str | None, superset_roles: list[str]) -> str:
    if username and ADMIN_ROLE in superset_roles:
        return ADMIN_LOGIN
    if username and any(role.startswith(ORG_ROLE_PREFIX) for role in superset_roles):
        return user_login(username)
    return READER_LOGIN


def mutate_connection(url: Any, params: dict, username: str | None, security_manager: Any,
                      tenant_key: str) -> tuple[Any, dict]:
    """DB_CONNECTION_MUTATOR: the warehouse's connections get the login of the user they serve."""
    if url.username != READER_LOGIN:  # not the BotFlow warehouse
        return url, params
    user = security_manager.find_user(username=username) if username else None
    roles = [role.name for role in user.roles] if user is not None else []
    login = login_for(username, roles)
    return url.set(username=login, password=login_password(tenant_key, login)), params
