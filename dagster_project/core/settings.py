"""Configuration from the environment, with an embedded PostgreSQL as the default.

Every setting has an environment variable; `Settings.from_env()` reads them once. When the database
URLs are unset, an embedded PostgreSQL (PyPI `pgserver`) under `$BOTFLOW_HOME/pgdata` serves the
source demo database, the warehouse and Dagster's storage.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from urllib.parse import unquote

import psycopg
from psycopg import conninfo

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "dbt"
DAGSTER_YAML = REPO_ROOT / "dagster_home" / "dagster.yaml"

EMBEDDED_DATABASES = {
    "source": "botflow_source",
    "warehouse": "botflow_warehouse",
    "dagster": "botflow_dagster",
}
DEV_PHONE_HASH_KEY = "botflow-dev-key-not-secret"
DEFAULT_PARTITIONS_START = "2025-01-01"
DEMO_START_FILE = "partitions_start"  # under $BOTFLOW_HOME: the first day `botflow demo` simulated


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the setting to fix."""


@dataclass(frozen=True)
class Settings:
    source_url: str
    source_schema: str
    warehouse_url: str
    dagster_storage_url: str
    dagster_home: Path
    botflow_home: Path
    phone_hash_key: str
    partitions_start: str
    embedded: bool

    @classmethod
    def from_env(cls, *, start_embedded: bool = True) -> Settings:
        env = os.environ
        home = Path(env.get("BOTFLOW_HOME", REPO_ROOT / ".botflow")).resolve()
        source_url = env.get("BOTFLOW_SOURCE_URL", "")
        warehouse_url = env.get("BOTFLOW_WAREHOUSE_URL", "")
        storage_url = env.get("BOTFLOW_DAGSTER_STORAGE_URL", "")
        embedded = not (source_url and warehouse_url)
        if embedded and start_embedded:
            urls = embedded_urls(home)
            source_url = source_url or urls["source"]
            warehouse_url = warehouse_url or urls["warehouse"]
            storage_url = storage_url or urls["dagster"]
        if not storage_url and warehouse_url:
            storage_url = warehouse_url
        for name, url in (("BOTFLOW_SOURCE_URL", source_url), ("BOTFLOW_WAREHOUSE_URL", warehouse_url)):
            validate_url(name, url)
        schema = env.get("BOTFLOW_SOURCE_SCHEMA", "public")
        if not schema.replace("_", "").isalnum():
            raise ConfigError(f"BOTFLOW_SOURCE_SCHEMA={schema!r} is not a plain schema name")
        return cls(
            source_url=source_url,
            source_schema=schema,
            warehouse_url=warehouse_url,
            dagster_storage_url=storage_url,
            dagster_home=Path(env.get("DAGSTER_HOME", home / "dagster_home")).resolve(),
            botflow_home=home,
            phone_hash_key=env.get("BOTFLOW_PHONE_HASH_KEY", DEV_PHONE_HASH_KEY),
            partitions_start=env.get("BOTFLOW_PARTITIONS_START") or _demo_start(home, embedded)
            or DEFAULT_PARTITIONS_START,
            embedded=embedded,
        )

    def export(self) -> None:
        """Publish the settings as environment variables for Dagster, dbt and child processes."""
        os.environ["BOTFLOW_SOURCE_URL"] = self.source_url
        os.environ["BOTFLOW_SOURCE_SCHEMA"] = self.source_schema
        os.environ["BOTFLOW_WAREHOUSE_URL"] = self.warehouse_url
        os.environ["BOTFLOW_DAGSTER_STORAGE_URL"] = sqlalchemy_url(self.dagster_storage_url)
        os.environ["DAGSTER_HOME"] = str(self.dagster_home)
        os.environ["BOTFLOW_PHONE_HASH_KEY"] = self.phone_hash_key
        os.environ["BOTFLOW_PARTITIONS_START"] = self.partitions_start
        os.environ.update(dbt_env(self.warehouse_url))
        os.environ["PGTZ"] = "UTC"
        # A range run records one materialization per (asset, partition). Batched, they are written
        # a thousand per statement: a 3-day hourly range ran in 11 s instead of 23 s (README, Performance).
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")

    def starting_partitions_at(self, first_day: date) -> Settings:
        """The demo's settings: on the embedded PostgreSQL, partitions start at the first simulated day.

        The day is kept under $BOTFLOW_HOME, so `botflow ui` shows the demo's days as the partitions
        (not 2025-01-01 onwards, nearly all empty). A BOTFLOW_PARTITIONS_START set in the environment,
        or configured databases, keep their start.
        """
        if os.environ.get("BOTFLOW_PARTITIONS_START") or not self.embedded:
            return self
        recorded = _demo_start(self.botflow_home, self.embedded)
        start = min(first_day.isoformat(), recorded) if recorded else first_day.isoformat()
        (self.botflow_home / DEMO_START_FILE).write_text(start + "\n")
        return replace(self, partitions_start=start)

    def prepare_dagster_home(self) -> Path:
        """Create $DAGSTER_HOME with the repo's dagster.yaml (PostgreSQL storage, queued runs)."""
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        target = self.dagster_home / "dagster.yaml"
        if not target.exists() or target.read_bytes() != DAGSTER_YAML.read_bytes():
            shutil.copyfile(DAGSTER_YAML, target)
        return self.dagster_home


def _demo_start(home: Path, embedded: bool) -> str | None:
    path = home / DEMO_START_FILE
    return path.read_text().strip() if embedded and path.exists() else None


def validate_url(name: str, url: str) -> None:
    if not url:
        raise ConfigError(f"{name} is not set (a postgresql:// URL)")
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{name} must be a postgresql:// URL, got {redact(url)!r}")
    try:
        conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"{name} is not a valid PostgreSQL URL: {scrub(str(exc), url).strip()} "
                          "(%-encode special characters of the password)") from None


_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def _split_password(url: str) -> tuple[str, str]:
    """(the URL or key=value conninfo with its password replaced, the password as written).

    In a URL the password ends at the last '@', so one with an unescaped '@' or a broken %-escape is
    hidden whole (what follows a '@' in the query string is hidden too: more than needed, never less).
    """
    password = ""
    if "://" in url:
        scheme, rest = url.split("://", 1)
        userinfo, at, host = rest.rpartition("@")
        if at and ":" in userinfo:
            user, password = userinfo.split(":", 1)
            url = f"{scheme}://{user}:***@{host}"
    match = _CONNINFO_PASSWORD.search(url)
    if match and not password:
        password = match.group(2).strip("'")
    return _CONNINFO_PASSWORD.sub(r"\1***", url), password


def redact(url: str) -> str:
    """The URL (or key=value conninfo) with its password replaced, for messages and logs."""
    return _split_password(url)[0]


def scrub(text: str, url: str) -> str:
    """An error message about `url` without its password, as written or %-decoded (drivers echo both)."""
    redacted, password = _split_password(url)
    text = text.replace(url, redacted)
    # as written, %-decoded, and the pieces between '@'s (a driver may read the tail as the host)
    forms = {password, unquote(password), *password.split("@")}
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= 3:  # a shorter one would blank out unrelated characters
            text = text.replace(form, "***")
    return text


def dbt_env(warehouse_url: str) -> dict[str, str]:
    """The BOTFLOW_DBT_* variables that dbt/profiles.yml reads, taken from the warehouse URL."""
    parts = conninfo.conninfo_to_dict(warehouse_url)
    return {
        "BOTFLOW_DBT_HOST": str(parts.get("host") or "127.0.0.1"),
        "BOTFLOW_DBT_PORT": str(parts.get("port") or "5432"),
        "BOTFLOW_DBT_USER": str(parts.get("user") or "postgres"),
        "BOTFLOW_DBT_PASSWORD": str(parts.get("password") or ""),
        "BOTFLOW_DBT_DBNAME": str(parts.get("dbname") or "postgres"),
    }


def sqlalchemy_url(url: str) -> str:
    """dagster-postgres needs the psycopg2 driver named explicitly under SQLAlchemy 2.1."""
    for prefix in ("postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def with_database(url: str, dbname: str) -> str:
    parts = conninfo.conninfo_to_dict(url)
    parts["dbname"] = dbname
    host = parts.pop("host", None)
    port = parts.pop("port", None)
    user = parts.pop("user", "postgres")
    password = parts.pop("password", "")
    auth = f"{user}:{password}@" if password else f"{user}@"
    if host and str(host).startswith("/"):
        return f"postgresql://{auth}/{dbname}?host={host}" + (f"&port={port}" if port else "")
    return f"postgresql://{auth}{host or '127.0.0.1'}:{port or 5432}/{dbname}"


def embedded_urls(home: Path) -> dict[str, str]:
    """Start (or reuse) the embedded PostgreSQL and make sure its databases exist."""
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pgserver  # imported lazily: only needed without configured URLs

    home.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(home / "pgdata", cleanup_mode=None)
    base = server.get_uri()
    ensure_databases(base, EMBEDDED_DATABASES.values())
    return {role: with_database(base, db) for role, db in EMBEDDED_DATABASES.items()}


def ensure_databases(admin_url: str, names) -> None:
    """Create the databases that do not exist yet (another process may create one at the same time)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        existing = {r[0] for r in conn.execute("select datname from pg_database")}
        for name in names:
            if name not in existing:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                    conn.execute(f'create database "{name}"')
            conn.execute(f"alter database \"{name}\" set timezone to 'UTC'")


@contextmanager
def scoped_environment(values: Mapping[str, str], unset: Iterable[str] = ()) -> Iterator[None]:
    """Set `values` (and unset the names in `unset`) for the block, then restore the environment."""
    names = set(values) | set(unset)
    before = {name: os.environ.pop(name, None) for name in names}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
