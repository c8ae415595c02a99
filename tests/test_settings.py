"""core/settings.py is the one reader of the environment, and every variable is registered and documented."""

from __future__ import annotations

import ast
import re
import uuid

import psycopg
import pytest

from dagster_project.core import settings
from dagster_project.core.settings import PUBLISHED, REPO_ROOT, VARIABLES, ConfigError, setting, setting_number

PACKAGE = REPO_ROOT / "dagster_project"
NAME = re.compile(r"\b(?:BOTFLOW_[A-Z0-9_]*[A-Z0-9]|DAGSTER_HOME|XDG_CACHE_HOME)\b")


def test_no_module_but_settings_reads_the_environment():
    readers = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "core" / "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            reads = (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb")
                     and isinstance(node.value, ast.Name) and node.value.id == "os")
            reads |= isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                a.name in ("environ", "getenv") for a in node.names)
            if reads:
                readers.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert readers == [], "read settings through dagster_project.core.settings:\n" + "\n".join(readers)


def test_every_variable_the_code_names_is_registered():
    sources = [*PACKAGE.rglob("*.py"), REPO_ROOT / "superset" / "superset_config.py",
               REPO_ROOT / "dbt" / "profiles.yml"]
    named = {name for path in sources for name in NAME.findall(path.read_text())}
    unknown = sorted(named - set(VARIABLES) - set(PUBLISHED))
    assert unknown == [], f"register these in core/settings.py VARIABLES (or PUBLISHED): {unknown}"


def test_docs_configuration_lists_every_variable():
    text = (REPO_ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(name for name in {*VARIABLES, *PUBLISHED} if f"`{name}`" not in text)
    assert missing == [], f"docs/configuration.md does not list {missing}"


def test_an_empty_variable_is_unset_and_a_wrong_number_names_its_variable(monkeypatch):
    monkeypatch.setenv("BOTFLOW_RECONCILE_DAYS", "")
    assert setting("BOTFLOW_RECONCILE_DAYS") == "30"
    monkeypatch.setenv("BOTFLOW_RECONCILE_DAYS", "a month")
    with pytest.raises(ConfigError, match=r"BOTFLOW_RECONCILE_DAYS='a month' is not a whole number of at least 1"):
        setting_number("BOTFLOW_RECONCILE_DAYS", int, minimum=1)
    monkeypatch.setenv("BOTFLOW_CHANGE_CAPTURE_OVERLAP_MINUTES", "0")
    with pytest.raises(ConfigError, match="BOTFLOW_CHANGE_CAPTURE_OVERLAP_MINUTES='0' is not a number above 0"):
        setting_number("BOTFLOW_CHANGE_CAPTURE_OVERLAP_MINUTES", positive=True)


def test_the_homes_do_not_depend_on_the_working_directory(monkeypatch, tmp_path):
    """BOTFLOW_HOME unset: reports, recipients and GX live under the repository's .botflow, wherever
    botflow runs from (they once landed under the working directory)."""
    from dagster_project.serve.reports.build import reports_root

    monkeypatch.delenv("BOTFLOW_HOME", raising=False)
    monkeypatch.delenv("BOTFLOW_REPORTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert settings.botflow_home() == REPO_ROOT / ".botflow"
    assert reports_root() == REPO_ROOT / ".botflow" / "reports"


def test_an_empty_phone_hash_key_is_refused(monkeypatch):
    """An empty secret would hash every phone with the published development key."""
    monkeypatch.setenv("BOTFLOW_SOURCE_URL", "postgresql://postgres@127.0.0.1:5432/source")
    monkeypatch.setenv("BOTFLOW_WAREHOUSE_URL", "postgresql://postgres@127.0.0.1:5432/warehouse")
    monkeypatch.setenv("BOTFLOW_PHONE_HASH_KEY", " ")
    with pytest.raises(ConfigError, match="BOTFLOW_PHONE_HASH_KEY is set but empty"):
        settings.Settings.from_env(start_embedded=False)
    monkeypatch.delenv("BOTFLOW_PHONE_HASH_KEY")
    assert settings.Settings.from_env(start_embedded=False).phone_hash_key == settings.DEV_PHONE_HASH_KEY


def test_processes_that_start_together_create_the_databases_once():
    """`botflow ui` starts the webserver and the daemon at once, and both make sure the embedded databases
    exist: the first creates them and sets their zone, the others wait for it (one line of each, not a
    unique violation in `pg_db_role_setting`)."""
    from concurrent.futures import ThreadPoolExecutor

    from conftest import ADMIN_URL, drop_database

    names = [f"bf_test_ensure_{uuid.uuid4().hex[:8]}_{i}" for i in range(3)]
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: settings.ensure_databases(ADMIN_URL, names), range(8)))
        with psycopg.connect(ADMIN_URL) as conn:
            zones = conn.execute(
                "select d.datname, s.setconfig from pg_database d join pg_db_role_setting s on s.setdatabase = d.oid "
                "where d.datname = any(%s) order by 1", [names]).fetchall()
        assert zones == [(name, ["TimeZone=UTC"]) for name in sorted(names)]
    finally:
        for name in names:
            drop_database(name)
