"""Superset as a local service: its own virtualenv, PostgreSQL metadata, gunicorn on 127.0.0.1:8088.

Superset's pins clash with dbt/Dagster, so it lives in a virtualenv of its own, created on first use
and shared by every checkout of the machine (BOTFLOW_SUPERSET_VENV, default
~/.cache/botflow/superset-6.1.0). Its metadata is a PostgreSQL database (never SQLite): by default
`botflow_superset` on the server that holds Dagster's storage. Secrets (Flask secret key, admin
password, the warehouse reader's password) come from the environment, else are generated once and
kept in $BOTFLOW_HOME/superset/secrets.json (mode 600, never committed).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from ..settings import REPO_ROOT, ConfigError, Settings, redact

SUPERSET_VERSION = "6.1.0"
REQUIREMENTS = [f"apache-superset=={SUPERSET_VERSION}", "psycopg2-binary", "rich", "cachetools",
                "flask-caching==2.3.1", "gunicorn"]
CONFIG_PATH = REPO_ROOT / "superset" / "superset_config.py"
METADATA_DATABASE = "botflow_superset"


@dataclass(frozen=True)
class SupersetSettings:
    venv: Path
    home: Path
    host: str
    port: int
    metadata_url: str
    admin_user: str
    admin_password: str
    secret_key: str
    reader_password: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "gunicorn.pid"

    @classmethod
    def from_env(cls, settings: Settings) -> SupersetSettings:
        env = os.environ
        home = settings.botflow_home / "superset"
        home.mkdir(parents=True, exist_ok=True)
        stored = _stored_secrets(home / "secrets.json")
        port_text = env.get("BOTFLOW_SUPERSET_PORT", "8088")
        if not port_text.isdigit():
            raise ConfigError(f"BOTFLOW_SUPERSET_PORT={port_text!r} is not a port number")
        metadata_url = env.get("BOTFLOW_SUPERSET_METADATA_URL") or _sibling_database(
            settings.dagster_storage_url, METADATA_DATABASE)
        cache = Path(env.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        return cls(
            venv=Path(env.get("BOTFLOW_SUPERSET_VENV", cache / "botflow" / f"superset-{SUPERSET_VERSION}")),
            home=home,
            host=env.get("BOTFLOW_SUPERSET_HOST", "127.0.0.1"),
            port=int(port_text),
            metadata_url=metadata_url,
            admin_user=env.get("BOTFLOW_SUPERSET_ADMIN_USER", "admin"),
            admin_password=env.get("BOTFLOW_SUPERSET_ADMIN_PASSWORD") or stored["admin_password"],
            secret_key=env.get("BOTFLOW_SUPERSET_SECRET_KEY") or stored["secret_key"],
            reader_password=env.get("BOTFLOW_SUPERSET_READER_PASSWORD") or stored["reader_password"],
        )

    def environment(self) -> dict[str, str]:
        """What Superset's processes need: the config file and the values it reads."""
        return {**os.environ, "SUPERSET_CONFIG_PATH": str(CONFIG_PATH), "FLASK_APP": "superset",
                "BOTFLOW_SUPERSET_METADATA_URL": _psycopg2_url(self.metadata_url),
                "BOTFLOW_SUPERSET_SECRET_KEY": self.secret_key, "SUPERSET_LOG_LEVEL": "warning"}


def _stored_secrets(path: Path) -> dict[str, str]:
    values = json.loads(path.read_text()) if path.exists() else {}
    missing = {k for k in ("secret_key", "admin_password", "reader_password") if k not in values}
    if missing:
        values.update({k: secrets.token_urlsafe(32 if k == "secret_key" else 18) for k in missing})
        path.write_text(json.dumps(values, indent=2))
        path.chmod(0o600)
    return values


def _sibling_database(url: str, name: str) -> str:
    params = conninfo.conninfo_to_dict(url.replace("postgresql+psycopg2://", "postgresql://"))
    params["dbname"] = name
    return conninfo.make_conninfo(**params)


def _psycopg2_url(url: str) -> str:
    """A SQLAlchemy URL for psycopg2 from a URL or a key=value conninfo."""
    if url.startswith("postgresql+psycopg2://"):
        return url
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    p = conninfo.conninfo_to_dict(url)
    auth = p.get("user", "")
    if p.get("password"):
        auth += f":{p['password']}"
    host = p.get("host", "")
    netloc = f"{auth}@" if auth else ""
    if host.startswith("/"):
        return f"postgresql+psycopg2://{netloc}/{p.get('dbname', '')}?host={host}&port={p.get('port', 5432)}"
    return f"postgresql+psycopg2://{netloc}{host}:{p.get('port', 5432)}/{p.get('dbname', '')}"


def ensure_venv(s: SupersetSettings, progress: Callable[[str], None] = print) -> Path:
    """Create Superset's virtualenv with the known-good pins if absent (about 2 minutes once)."""
    marker = s.venv / ".botflow-requirements"
    wanted = "\n".join(REQUIREMENTS)
    if marker.exists() and marker.read_text() == wanted:
        return s.venv
    progress(f"installing Superset {SUPERSET_VERSION} into {s.venv} (once; about 2 minutes) ...")
    subprocess.run([sys.executable, "-m", "venv", str(s.venv)], check=True)
    pip = [str(s.venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *REQUIREMENTS], check=True)
    marker.write_text(wanted)
    return s.venv


def ensure_metadata_database(s: SupersetSettings) -> None:
    params = conninfo.conninfo_to_dict(s.metadata_url.replace("postgresql+psycopg2://", "postgresql://"))
    name = params.pop("dbname")
    try:
        with psycopg.connect(conninfo.make_conninfo(**params, dbname="postgres"), autocommit=True) as conn:
            if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is None:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        raise ConfigError(f"BOTFLOW_SUPERSET_METADATA_URL={redact(s.metadata_url)}: cannot connect ({exc})") from exc


def _superset(s: SupersetSettings, *args: str, log) -> None:
    result = subprocess.run([str(s.venv / "bin" / "superset"), *args], env=s.environment(), stdout=log,
                            stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise ConfigError(f"`superset {' '.join(args[:2])}` failed (exit {result.returncode}); see {log.name}")


def initialize(s: SupersetSettings, progress: Callable[[str], None] = print) -> None:
    """Migrate the metadata database, create the admin, create roles and permissions (once per setup)."""
    stamp = s.home / "initialized"
    key = hashlib.sha256(f"{SUPERSET_VERSION}|{s.metadata_url}|{s.admin_user}".encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == key:
        return
    progress("initializing Superset's metadata database (db upgrade, admin, roles) ...")
    with (s.home / "init.log").open("w") as log:
        _superset(s, "db", "upgrade", log=log)
        _superset(s, "fab", "create-admin", "--username", s.admin_user, "--firstname", "BotFlow",
                  "--lastname", "Admin", "--email", f"{s.admin_user}@botflow.local", "--password",
                  s.admin_password, log=log)
        _superset(s, "fab", "reset-password", "--username", s.admin_user, "--password", s.admin_password, log=log)
        _superset(s, "init", log=log)
    stamp.write_text(key)


def is_running(s: SupersetSettings) -> bool:
    try:
        with urllib.request.urlopen(f"{s.url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start(s: SupersetSettings, progress: Callable[[str], None] = print, timeout: float = 90) -> None:
    if is_running(s):
        progress(f"Superset already answers on {s.url}")
        return
    log = s.home / "gunicorn.log"
    subprocess.run(
        [str(s.venv / "bin" / "gunicorn"), "--daemon", "--pid", str(s.pid_file), "--workers", "2",
         "--worker-class", "gthread", "--threads", "4", "--timeout", "120", "--bind", f"{s.host}:{s.port}",
         "--error-logfile", str(log), "--capture-output", "superset.app:create_app()"],
        env=s.environment(), check=True, cwd=s.home)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running(s):
            progress(f"Superset on {s.url} (log: {log})")
            return
        time.sleep(0.5)
    raise ConfigError(f"Superset did not answer on {s.url} within {timeout:.0f} s; see {log} "
                      "(BOTFLOW_SUPERSET_PORT may be taken)")


def stop(s: SupersetSettings, timeout: float = 20) -> bool:
    if not s.pid_file.exists():
        return False
    pid = int(s.pid_file.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        s.pid_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    s.pid_file.unlink(missing_ok=True)
    return True


def up(settings: Settings, progress: Callable[[str], None] = print) -> SupersetSettings:
    s = SupersetSettings.from_env(settings)
    ensure_venv(s, progress)
    ensure_metadata_database(s)
    initialize(s, progress)
    start(s, progress)
    return s
