"""A small client of Superset's REST API (JWT login + CSRF token), with errors that name the endpoint.

superset-client 1.0.0 needs OAUTHLIB_INSECURE_TRANSPORT over http and trips on Superset 6's import and
security endpoints, which are most of what sync needs; so the project talks to the REST API directly,
one way for everything.
"""

from __future__ import annotations

import json
from typing import Any

import requests


class SupersetError(Exception):
    """A Superset API call failed; the message names the call, the status and Superset's answer."""


class SupersetApi:
    def __init__(self, url: str, username: str, password: str, timeout: float = 120):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._credentials = (username, password)
        self._login()

    def _login(self) -> None:
        username, password = self._credentials
        self.session = requests.Session()
        try:
            login = self.session.post(f"{self.url}/api/v1/security/login", timeout=self.timeout, json={
                "username": username, "password": password, "provider": "db", "refresh": True})
        except requests.ConnectionError as exc:
            raise SupersetError(f"Superset does not answer on {self.url}: run `botflow superset up`") from exc
        if login.status_code != 200:
            raise SupersetError(f"login as {username!r} on {self.url} failed ({login.status_code}): "
                                "check BOTFLOW_SUPERSET_ADMIN_USER / _PASSWORD")
        self.session.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        csrf = self.get("/api/v1/security/csrf_token/")["result"]
        self.session.headers.update({"X-CSRFToken": csrf, "Referer": self.url})

    def request(self, method: str, path: str, **kwargs) -> dict[str, Any]:
        response = self.session.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
        if response.status_code == 401 and "expired" in response.text:  # access tokens last 15 minutes
            self._login()
            response = self.session.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            raise SupersetError(f"{method} {path} -> {response.status_code}: {response.text[:600]}")
        return response.json() if response.content else {}

    def get(self, path: str, **params) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, payload: dict) -> dict[str, Any]:
        return self.request("POST", path, json=payload)

    def put(self, path: str, payload: dict) -> dict[str, Any]:
        return self.request("PUT", path, json=payload)

    def list_all(self, resource: str, columns: list[str] | None = None) -> list[dict]:
        """Every row of a list endpoint (e.g. /api/v1/chart/), page by page."""
        rows: list[dict] = []
        page = 0
        while True:
            q = f"(page:{page},page_size:100" + (f",columns:!({','.join(columns)})" if columns else "") + ")"
            result = self.get(f"{resource}", q=q)
            rows.extend(result["result"])
            if len(result["result"]) < 100:
                return rows
            page += 1

    def import_bundle(self, kind: str, bundle: bytes, passwords: dict[str, str]) -> None:
        """POST /api/v1/<kind>/import/ with overwrite: creates or updates the bundle's <kind> objects by uuid."""
        self.request("POST", f"/api/v1/{kind}/import/",
                     files={"formData": ("botflow.zip", bundle, "application/zip")},
                     data={"overwrite": "true", "passwords": json.dumps(passwords)})
