"""Superset as a local service: its own virtualenv, PostgreSQL metadata, gunicorn on 127.0.0.1:8088.

Superset's pins clash with dbt/Dagster, so it lives in a virtualenv of its own, created on first use
and shared by every checkout of the machine (BOTFLOW_SUPERSET_VENV, default
~/.cache/botflow/superset-6.1.0). Its metadata is a PostgreSQL database (never SQLite): by default
`botflow_superset` on the server that holds Dagster's storage. Secrets (Flask secret key, admin
password, the tenant key from which the warehouse logins' passwords derive) come from the environment,
else are generated once and kept in $BOTFLOW_HOME/superset/secrets.json (mode 600, never committed).
Superset's processes get only what they need in their environment (never the warehouse owner's URL),
and no password travels on a command line.
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

from dagster_project.core.file_lock import exclusive
from dagster_project.core.settings import REPO_ROOT, ConfigError, Settings, process_environment, redact, scrub, setting
from dagster_project.serve.superset.logins import READER_LOGIN, login_password

SUPERSET_VERSION = "6.1.0"
REQUIREMENTS = [f"apache-superset=={SUPERSET_VERSION}", "psycopg2-binary", "rich", "cachetools",
                "flask-caching==2.3.1", "gunicorn"]
CONFIG_PATH = REPO_ROOT / "superset" / "superset_config.py"
METADATA_DATABASE = "botflow_superset"
# what Superset's processes inherit from the caller's environment; the rest is set explicitly
INHERITED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "XDG_CACHE_HOME")


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
    tenant_key: str
    cache_seconds: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def reader_password(self) -> str:
        """The password of the database login Superset stores (it sees no organization)."""
        return login_password(self.tenant_key, READER_LOGIN)

    @property
    def pid_file(self) -> Path:
        return self.home / "gunicorn.pid"

    @classmethod
    def from_env(cls, settings: Settings) -> SupersetSettings:
        home = settings.botflow_home / "superset"
        home.mkdir(parents=True, exist_ok=True)
        stored = _stored_secrets(home / "secrets.json")
        port_text = setting("BOTFLOW_SUPERSET_PORT")
        if not port_text.isdigit():
            raise ConfigError(f"BOTFLOW_SUPERSET_PORT={port_text!r} is not a port number")
        cache_text = setting("BOTFLOW_SUPERSET_CACHE_SECONDS")
        if not cache_text.isdigit():
            raise ConfigError(f"BOTFLOW_SUPERSET_CACHE_SECONDS={cache_text!r} is not a whole number of seconds")
        metadata_url = setting("BOTFLOW_SUPERSET_METADATA_URL") or _sibling_database(
            settings.dagster_storage_url, METADATA_DATABASE)
        cache = Path(setting("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cls(
            venv=Path(setting("BOTFLOW_SUPERSET_VENV") or cache / "botflow" / f"superset-{SUPERSET_VERSION}"),
            home=home,
            host=setting("BOTFLOW_SUPERSET_HOST"),
            port=int(port_text),
            metadata_url=metadata_url,
            admin_user=setting("BOTFLOW_SUPERSET_ADMIN_USER"),
            admin_password=setting("BOTFLOW_SUPERSET_ADMIN_PASSWORD") or stored["admin_password"],
            secret_key=setting("BOTFLOW_SUPERSET_SECRET_KEY") or stored["secret_key"],
            tenant_key=setting("BOTFLOW_SUPERSET_TENANT_KEY") or stored["tenant_key"],
            cache_seconds=int(cache_text),
        )

    def environment(self) -> dict[str, str]:
        """What Superset's processes need, and nothing else: the config file and the values it reads.

        Not the caller's environment: that holds the warehouse owner's URL and password.
        """
        inherited = {k: v for k, v in process_environment().items() if k in INHERITED_VARIABLES}
        return {**inherited, "SUPERSET_CONFIG_PATH": str(CONFIG_PATH), "FLASK_APP": "superset",
                "BOTFLOW_SUPERSET_METADATA_URL": _psycopg2_url(self.metadata_url),
                "BOTFLOW_SUPERSET_SECRET_KEY": self.secret_key, "BOTFLOW_SUPERSET_TENANT_KEY": self.tenant_key,
                "BOTFLOW_SUPERSET_CACHE_SECONDS": str(self.cache_seconds),
                "BOTFLOW_SUPERSET_CACHE_DIR": str(self.home / "cache"), "SUPERSET_LOG_LEVEL": "warning"}


def _stored_secrets(path: Path) -> dict[str, str]:
    values = json.loads(path.read_text()) if path.exists() else {}
    missing = {k for k in ("secret_key", "admin_password", "tenant_key") if k not in values}
    if missing:
        values.update({k: secrets.token_urlsafe(18 if k == "admin_password" else 32) for k in missing})
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
    return install_venv(s.venv, progress)


def install_venv(venv: Path, progress: Callable[[str], None] = print) -> Path:
    """Superset's virtualenv at `venv` with REQUIREMENTS, unless it holds them already (the image build
    calls this too: docker/superset.Dockerfile)."""
    marker = venv / ".botflow-requirements"
    wanted = "\n".join(REQUIREMENTS)

    def installed() -> bool:
        return marker.exists() and marker.read_text() == wanted

    if not installed():
        with exclusive(venv.parent / f".{venv.name}.lock"):  # processes that start together take turns
            if not installed():  # else installed while this one waited
                _install(venv, progress)
                marker.write_text(wanted)
    return venv


def _install(venv: Path, progress: Callable[[str], None]) -> None:
    progress(f"installing Superset {SUPERSET_VERSION} into {venv} (once; about 2 minutes) ...")
    # pip's own settings (index, proxy, certificates) and no BotFlow secret: not the caller's environment
    env = {k: v for k, v in process_environment().items()
           if k in INHERITED_VARIABLES or k.startswith(("PIP_", "SSL_", "REQUESTS_CA", "CURL_CA"))
           or k.lower() in ("http_proxy", "https_proxy", "no_proxy")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, env=env)
    subprocess.run([*pip, *REQUIREMENTS], check=True, env=env)


def ensure_metadata_database(s: SupersetSettings) -> None:
    params = conninfo.conninfo_to_dict(s.metadata_url.replace("postgresql+psycopg2://", "postgresql://"))
    name = params.pop("dbname")
    try:
        with psycopg.connect(conninfo.make_conninfo(**params, dbname="postgres"), autocommit=True) as conn:
            if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is None:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        raise ConfigError(f"BOTFLOW_SUPERSET_METADATA_URL={redact(s.metadata_url)}: cannot connect "
                          f"({scrub(str(exc), s.metadata_url)})") from None


def _superset(s: SupersetSettings, *args: str, log) -> None:
    result = subprocess.run([str(s.venv / "bin" / "superset"), *args], env=s.environment(), stdout=log,
                            stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise ConfigError(f"`superset {' '.join(args[:2])}` failed (exit {result.returncode}); see {log.name}")


# Creates the admin, or resets its password, with the password read from standard input (a command
# line is visible to every user of the machine in `ps`).
_ADMIN_SCRIPT = """
import json, sys
from superset.app import create_app
app = create_app()
with app.app_context():
    from superset.extensions import security_manager as sm
    admin = json.loads(sys.stdin.read())
    user = sm.find_user(username=admin["username"])
    if user is None:
        created = sm.add_user(admin["username"], "BotFlow", "Admin", admin["email"], sm.find_role("Admin"),
                              password=admin["password"])
        sys.exit(0 if created else "could not create the admin user")
    sm.reset_password(user.id, admin["password"])
"""


def ensure_admin(s: SupersetSettings, log) -> None:
    admin = {"username": s.admin_user, "email": f"{s.admin_user}@botflow.local", "password": s.admin_password}
    result = subprocess.run([str(s.venv / "bin" / "python"), "-c", _ADMIN_SCRIPT], input=json.dumps(admin),
                            text=True, env=s.environment(), stdout=log, stderr=subprocess.STDOUT, cwd=s.home)
    if result.returncode != 0:
        raise ConfigError(f"creating Superset's admin {s.admin_user!r} failed (exit {result.returncode}); "
                          f"see {log.name}")


def initialize(s: SupersetSettings, progress: Callable[[str], None] = print) -> None:
    """Migrate the metadata database, create the admin, create roles and permissions (once per setup)."""
    stamp = s.home / "initialized"
    key = hashlib.sha256(f"{SUPERSET_VERSION}|{s.metadata_url}|{s.admin_user}".encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == key:
        return
    progress("initializing Superset's metadata database (db upgrade, admin, roles) ...")
    with (s.home / "init.log").open("w") as log:
        _superset(s, "db", "upgrade", log=log)
        _superset(s, "init", log=log)
        ensure_admin(s, log)
    stamp.write_text(key)


def is_running(s: SupersetSettings) -> bool:
    try:
        with urllib.request.urlopen(f"{s.url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def gunicorn_command(s: SupersetSettings, *, daemon: bool) -> list[str]:
    """Superset under gunicorn on s.host:s.port; as a daemon (`up`) or in the foreground (`serve`)."""
    detach = ["--daemon", "--pid", str(s.pid_file), "--error-logfile", str(s.home / "gunicorn.log"),
              "--capture-output"] if daemon else ["--access-logfile", "-"]
    return [str(s.venv / "bin" / "gunicorn"), *detach, "--workers", "2", "--worker-class", "gthread",
            "--threads", "4", "--timeout", "120", "--bind", f"{s.host}:{s.port}", "superset.app:create_app()"]


def start(s: SupersetSettings, progress: Callable[[str], None] = print, timeout: float = 90) -> None:
    if is_running(s):
        progress(f"Superset already answers on {s.url}")
        return
    log = s.home / "gunicorn.log"
    subprocess.run(gunicorn_command(s, daemon=True), env=s.environment(), check=True, cwd=s.home)
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


def prepare(settings: Settings, progress: Callable[[str], None] = print) -> SupersetSettings:
    """What `up` and `serve` do before starting gunicorn: the venv, the metadata database, its setup."""
    s = SupersetSettings.from_env(settings)
    ensure_venv(s, progress)
    ensure_metadata_database(s)
    initialize(s, progress)
    return s


def serve(settings: Settings, progress: Callable[[str], None] = print) -> None:
    """`up` for a container: initialize, then become gunicorn in the foreground (its logs on stdout)."""
    s = prepare(settings, progress)
    command = gunicorn_command(s, daemon=False)
    os.chdir(s.home)
    os.execve(command[0], command, s.environment())


def up(settings: Settings, progress: Callable[[str], None] = print) -> SupersetSettings:
    s = prepare(settings, progress)
    start(s, progress)
    return s
