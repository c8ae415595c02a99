"""Configuration from the environment, with an embedded PostgreSQL as the default.

This module is the one reader of the environment. Every variable is registered in VARIABLES with
its default and meaning (docs/configuration.md lists the same; tests/test_settings.py checks both,
and that no other module reads os.environ). `Settings.from_env()` reads the databases, the homes,
the phone-hash key and the first partition once; the tunables of each stage are read, when they are
used, through `setting()`, `setting_number()` and `botflow_home()`. An empty variable counts as unset.

When the database URLs are unset, an embedded PostgreSQL (PyPI `pgserver`) under
`$BOTFLOW_HOME/pgdata` serves the source demo database, the warehouse and Dagster's storage.
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
class Variable:
    name: str
    default: str  # "" when unset means off, or a default computed elsewhere (meaning says which)
    meaning: str


VARIABLES: dict[str, Variable] = {v.name: v for v in (
    Variable("BOTFLOW_HOME", "", "the folder of the embedded PostgreSQL, logs, GX, Superset and reports "
             "(default: .botflow at the repository root, wherever botflow runs from)"),
    Variable("BOTFLOW_SOURCE_URL", "", "the app database (postgresql://), read only; unset: embedded"),
    Variable("BOTFLOW_SOURCE_SCHEMA", "public", "schema of the source tables"),
    Variable("BOTFLOW_WAREHOUSE_URL", "", "the warehouse (postgresql://); unset: embedded"),
    Variable("BOTFLOW_DAGSTER_STORAGE_URL", "", "Dagster's storage; unset: embedded, else the warehouse"),
    Variable("DAGSTER_HOME", "", "Dagster's instance folder (default: $BOTFLOW_HOME/dagster_home)"),
    Variable("BOTFLOW_PHONE_HASH_KEY", DEV_PHONE_HASH_KEY, "secret key of the customer phone hash"),
    Variable("BOTFLOW_PARTITIONS_START", "", "the first partition, a UTC date (default: the demo's first day "
             f"on the embedded database, else {DEFAULT_PARTITIONS_START})"),
    Variable("BOTFLOW_LIVE_INTERVAL_SECONDS", "5", "how often the live sensor polls the source"),
    Variable("BOTFLOW_MAX_REJECTED_SHARE", "0.10", "largest share of an hour's messages one rule may quarantine"),
    Variable("BOTFLOW_MAX_REPAIRED_SHARE", "0.10", "largest share of an hour's messages one rule may repair"),
    Variable("BOTFLOW_MIN_FLAGGED_ROWS", "10", "below this many rows a rule's share never fails"),
    Variable("BOTFLOW_REPORTS_DIR", "", "where reports are saved (default: $BOTFLOW_HOME/reports)"),
    Variable("BOTFLOW_REPORT_WAIT_MINUTES", "30", "how long a report waits for its marts"),
    Variable("BOTFLOW_REPORT_RECIPIENTS", "", "who receives which report "
             "(default: $BOTFLOW_HOME/report_recipients.toml)"),
    Variable("BOTFLOW_REPORT_SENDER", "reports@botflow.local", "the From: address of reports and alerts"),
    Variable("BOTFLOW_SMTP_HOST", "", "the mail server; unset: nothing is e-mailed"),
    Variable("BOTFLOW_SMTP_PORT", "587", "its TCP port"),
    Variable("BOTFLOW_SMTP_SECURITY", "starttls", "starttls, ssl or none"),
    Variable("BOTFLOW_SMTP_USER", "", "the mail login, if the server asks for one"),
    Variable("BOTFLOW_SMTP_PASSWORD", "", "its password"),
    Variable("BOTFLOW_DELIVERY_RETRY_SECONDS", "30", "first wait of the e-mail delivery retries (then doubled)"),
    Variable("BOTFLOW_SUPERSET_VENV", "", "Superset's virtualenv (default: ~/.cache/botflow/superset-<version>)"),
    Variable("BOTFLOW_SUPERSET_HOST", "127.0.0.1", "where Superset listens"),
    Variable("BOTFLOW_SUPERSET_PORT", "8088", "its port"),
    Variable("BOTFLOW_SUPERSET_METADATA_URL", "", "Superset's metadata database "
             "(default: botflow_superset beside Dagster's storage)"),
    Variable("BOTFLOW_SUPERSET_ADMIN_USER", "admin", "the Superset admin"),
    Variable("BOTFLOW_SUPERSET_ADMIN_PASSWORD", "", "its password (default: generated, kept under $BOTFLOW_HOME)"),
    Variable("BOTFLOW_SUPERSET_SECRET_KEY", "", "Flask's secret key (default: generated)"),
    Variable("BOTFLOW_SUPERSET_TENANT_KEY", "", "the key the warehouse logins' passwords derive from "
             "(default: generated)"),
    Variable("BOTFLOW_SUPERSET_CACHE_SECONDS", "0", "how long Superset caches chart results (0: off)"),
    Variable("BOTFLOW_SUPERSET_USER_PASSWORD", "", "password of a user made by `botflow superset grant`"),
    Variable("BOTFLOW_CHANGE_CAPTURE_OVERLAP_MINUTES", "10", "how far behind its high-water mark change "
             "capture re-reads the source"),
    Variable("BOTFLOW_RECONCILE_DAYS", "30", "how many days back reconciliation compares source and loads"),
    Variable("BOTFLOW_RECONCILE_CRON", "40 * * * *", "when reconciliation runs (UTC)"),
    Variable("BOTFLOW_ALERT_EMAILS", "", "who gets alerts, comma-separated (default: the reports' platform "
             "recipients)"),
    Variable("BOTFLOW_ALERT_WEBHOOK_URL", "", "a Slack-compatible webhook for alerts"),
    Variable("BOTFLOW_DAGSTER_URL", "http://127.0.0.1:3000", "the Dagster UI's address, for links in alerts"),
    Variable("BOTFLOW_WARM_RUNS", "1", "1: runs the daemon launches fork from a warm worker that loaded the code "
             "location once; 0: a new process per run, as Dagster starts them"),
    Variable("BOTFLOW_ENGINE", "postgres", "where the partitioned marts are computed: postgres (dbt in the warehouse) "
             "or spark (the cluster of `botflow spark up`, published into the warehouse; docs/spark.md)"),
    Variable("BOTFLOW_SPARK_DIR", "", "the Spark engine's folder: settings, logs, Parquet files "
             "(default: $BOTFLOW_HOME/spark)"),
    Variable("BOTFLOW_SPARK_MASTER_PORT", "7077", "the port of the Spark master `botflow spark up` starts "
             "(its web UI: this + 1000)"),
    Variable("BOTFLOW_SPARK_WORKERS", "2", "how many Spark workers `botflow spark up` starts"),
    Variable("BOTFLOW_SPARK_WORKER_CORES", "1", "cores of each Spark worker"),
    Variable("BOTFLOW_SPARK_WORKER_MEMORY", "1g", "memory of each Spark worker"),
    Variable("BOTFLOW_SPARK_METASTORE_URL", "", "the Hive metastore's database (postgresql://) "
             "(default: <the warehouse's database>_metastore, beside it)"),
    Variable("BOTFLOW_DETAILS", "", "1: tracebacks and Dagster's error blocks on the terminal"),
    Variable("XDG_CACHE_HOME", "", "the user's cache folder (default: ~/.cache), for Superset's virtualenv"),
)}
# set by this project for the processes it starts (never by hand): docs/configuration.md lists them too
PUBLISHED = ("BOTFLOW_DBT_HOST", "BOTFLOW_DBT_PORT", "BOTFLOW_DBT_USER", "BOTFLOW_DBT_PASSWORD",
             "BOTFLOW_DBT_DBNAME", "BOTFLOW_WINDOW_START", "BOTFLOW_WINDOW_END", "BOTFLOW_GX_WAREHOUSE_URL",
             "BOTFLOW_SUPERSET_CACHE_DIR", "DAGSTER_EVENT_BATCH_SIZE", "PGTZ")


def setting(name: str) -> str:
    """The value of a registered variable, else its default (empty counts as unset)."""
    return os.environ.get(name) or VARIABLES[name].default


def setting_number(name: str, kind: type[int] | type[float] = float, *, minimum: float | None = None,
                   positive: bool = False) -> int | float:
    """A numeric setting; a wrong value is a ConfigError naming the variable."""
    text = setting(name).strip()
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or (minimum is not None and value < minimum) or (positive and value <= 0):
        bound = " above 0" if positive else (f" of at least {minimum:g}" if minimum is not None else "")
        raise ConfigError(f"{name}={text!r} is not {'a whole number' if kind is int else 'a number'}{bound}")
    return value


ENGINES = ("postgres", "spark")


def engine() -> str:
    """BOTFLOW_ENGINE: where the partitioned marts are computed."""
    value = setting("BOTFLOW_ENGINE").strip().lower()
    if value not in ENGINES:
        raise ConfigError(f"BOTFLOW_ENGINE={value!r} is not one of {', '.join(ENGINES)}")
    return value


def botflow_home() -> Path:
    """$BOTFLOW_HOME, else .botflow at the repository root (never relative to the working directory)."""
    return Path(setting("BOTFLOW_HOME") or REPO_ROOT / ".botflow").resolve()


def process_environment() -> dict[str, str]:
    """A copy of this process's environment, for a child process that runs as this one does."""
    return dict(os.environ)


def publish(values: Mapping[str, str]) -> None:
    """Set variables for this process and its children (the settings, and the values in PUBLISHED)."""
    os.environ.update(values)


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
        home = botflow_home()
        source_url = setting("BOTFLOW_SOURCE_URL")
        warehouse_url = setting("BOTFLOW_WAREHOUSE_URL")
        storage_url = setting("BOTFLOW_DAGSTER_STORAGE_URL")
        embedded = uses_embedded_database()
        if embedded and start_embedded:
            urls = embedded_urls(home)
            source_url = source_url or urls["source"]
            warehouse_url = warehouse_url or urls["warehouse"]
            storage_url = storage_url or urls["dagster"]
        if not storage_url and warehouse_url:
            storage_url = warehouse_url
        for name, url in (("BOTFLOW_SOURCE_URL", source_url), ("BOTFLOW_WAREHOUSE_URL", warehouse_url)):
            validate_url(name, url)
        schema = setting("BOTFLOW_SOURCE_SCHEMA")
        if not schema.replace("_", "").isalnum():
            raise ConfigError(f"BOTFLOW_SOURCE_SCHEMA={schema!r} is not a plain schema name")
        return cls(
            source_url=source_url,
            source_schema=schema,
            warehouse_url=warehouse_url,
            dagster_storage_url=storage_url,
            dagster_home=Path(setting("DAGSTER_HOME") or home / "dagster_home").resolve(),
            botflow_home=home,
            phone_hash_key=_phone_hash_key(),
            partitions_start=first_partition_day(),
            embedded=embedded,
        )

    def export(self) -> None:
        """Publish the settings as environment variables for Dagster, dbt and child processes."""
        publish({
            "BOTFLOW_HOME": str(self.botflow_home),
            "BOTFLOW_SOURCE_URL": self.source_url,
            "BOTFLOW_SOURCE_SCHEMA": self.source_schema,
            "BOTFLOW_WAREHOUSE_URL": self.warehouse_url,
            "BOTFLOW_DAGSTER_STORAGE_URL": sqlalchemy_url(self.dagster_storage_url),
            "DAGSTER_HOME": str(self.dagster_home),
            "BOTFLOW_PHONE_HASH_KEY": self.phone_hash_key,
            "BOTFLOW_PARTITIONS_START": self.partitions_start,
            **dbt_env(self.warehouse_url),
            "PGTZ": "UTC",
        })
        # A range run records one materialization per (asset, partition). Batched, they are written
        # a thousand per statement: a 3-day hourly range ran in 11 s instead of 23 s (docs/performance.md).
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")

    def starting_partitions_at(self, first_day: date) -> Settings:
        """The demo's settings: on the embedded PostgreSQL, partitions start at the first simulated day.

        The day is kept under $BOTFLOW_HOME, so `botflow ui` shows the demo's days as the partitions
        (not 2025-01-01 onwards, nearly all empty). A BOTFLOW_PARTITIONS_START set in the environment,
        or configured databases, keep their start.
        """
        if setting("BOTFLOW_PARTITIONS_START") or not self.embedded:
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


def uses_embedded_database() -> bool:
    """Without both database URLs, the embedded PostgreSQL serves them."""
    return not (setting("BOTFLOW_SOURCE_URL") and setting("BOTFLOW_WAREHOUSE_URL"))


def first_partition_day() -> str:
    """BOTFLOW_PARTITIONS_START, else (on the embedded database) the demo's first day, else the default."""
    return (setting("BOTFLOW_PARTITIONS_START") or _demo_start(botflow_home(), uses_embedded_database())
            or DEFAULT_PARTITIONS_START)


def _phone_hash_key() -> str:
    """The phone-hash key; unset, the development key. Set but empty is refused: a secret that resolved
    to nothing (an empty deployment secret) would otherwise hash with the published key."""
    value = os.environ.get("BOTFLOW_PHONE_HASH_KEY")
    if value is not None and not value.strip():
        raise ConfigError("BOTFLOW_PHONE_HASH_KEY is set but empty: set the secret, "
                          "or unset it for the development key")
    return value or DEV_PHONE_HASH_KEY


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
    """Create the databases that do not exist yet. Processes that start together (the webserver and the
    daemon, test workers) take turns: a lock on the server's maintenance database, held until closed."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(hashtext('botflow.ensure_databases'))")
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
