"""`botflow` gives one clear line for a wrong URL, an unreachable database and a malformed date."""

from __future__ import annotations

import pytest

from dagster_project.cli.main import main


def run_cli(capsys, *args) -> tuple[int, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse errors
        code = exc.code
    return code, capsys.readouterr().err.strip()


def test_malformed_date_is_named(capsys):
    code, err = run_cli(capsys, "run", "--start", "2026-13-01", "--end", "2026-03-02")
    assert code == 2 and "'2026-13-01' is not a date (expected YYYY-MM-DD)" in err


def test_end_before_start(capsys):
    code, err = run_cli(capsys, "run", "--start", "2026-03-02", "--end", "2026-03-01")
    assert code == 2 and err.splitlines()[-1] == (
        "botflow: error: --end 2026-03-01 must be after --start 2026-03-02 (end is exclusive)")


def test_wrong_url_names_the_setting(capsys, monkeypatch):
    monkeypatch.setenv("BOTFLOW_SOURCE_URL", "mysql://root@localhost/app")
    monkeypatch.setenv("BOTFLOW_WAREHOUSE_URL", "postgresql://postgres@127.0.0.1/x")
    code, err = run_cli(capsys, "run", "--start", "2026-03-01", "--end", "2026-03-02")
    assert code == 2
    assert err == "botflow: error: BOTFLOW_SOURCE_URL must be a postgresql:// URL, got 'mysql://root@localhost/app'"


def test_unreachable_database_names_the_setting(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BOTFLOW_SOURCE_URL", "postgresql://postgres:secret@127.0.0.1:1/app")
    monkeypatch.setenv("BOTFLOW_WAREHOUSE_URL", "postgresql://postgres@127.0.0.1:1/wh")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    code, err = run_cli(capsys, "simulate", "--start", "2026-03-01", "--days", "1", "--seed", "1")
    assert code == 2
    assert err.startswith("botflow: error: cannot connect to BOTFLOW_SOURCE_URL=postgresql://postgres:***@127.0.0.1:1/app")
    assert "secret" not in err


@pytest.mark.parametrize("password", ["pa@ssword1", "p%zzsecret9", "se:c/r@et%41x", "s p@ce%"])
def test_a_malformed_password_is_never_printed(capsys, monkeypatch, tmp_path, password):
    """An unescaped '@', a broken %-escape: the driver's own message would echo it (issue #14)."""
    monkeypatch.setenv("BOTFLOW_SOURCE_URL", f"postgresql://postgres:{password}@127.0.0.1:1/app")
    monkeypatch.setenv("BOTFLOW_WAREHOUSE_URL", "postgresql://postgres@127.0.0.1:1/wh")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    code, err = run_cli(capsys, "simulate", "--start", "2026-03-01", "--days", "1", "--seed", "1")
    assert code == 2 and err.startswith("botflow: error: ") and "BOTFLOW_SOURCE_URL" in err
    assert len(err.splitlines()) == 1
    for piece in {password, *password.split("@"), *password.split("%"), *password.split(":")}:
        assert len(piece) < 3 or piece not in err, (piece, err)


@pytest.mark.parametrize("days", ["0", "-3", "three"])
def test_bad_day_counts(capsys, days):
    code, err = run_cli(capsys, "simulate", "--start", "2026-03-01", "--days", days, "--seed", "1")
    assert code == 2 and f"'{days}'" in err



def test_missing_source_tables_fail_at_once_naming_the_settings(make_scenario, dagster_instance):
    from datetime import date

    from dagster_project.automation.runner import RunFailed, run_window
    from dagster_project.definitions import defs

    make_scenario("nosource")
    with pytest.raises(RunFailed) as failure:
        run_window(defs, dagster_instance, date(2026, 3, 1), date(2026, 3, 2), progress=lambda _: None)
    message = str(failure.value)
    assert "hourly_partition_job failed for [2026-03-01, 2026-03-02)" in message
    assert "source tables missing in schema 'public'" in message and "BOTFLOW_SOURCE_SCHEMA" in message


def test_a_missing_source_column_fails_at_once_naming_it_and_the_settings(make_scenario, dagster_instance):
    import time
    from datetime import date

    from dagster_project.automation.runner import RunFailed, run_window
    from dagster_project.definitions import defs
    from dagster_project.dev.simulate import create_source_tables

    scenario = make_scenario("nocolumn")
    with scenario.source() as conn:
        create_source_tables(conn, "public")
        conn.execute("alter table messages drop column updated_at")
        conn.execute("alter table conversations drop column customer_phone")
    began = time.monotonic()
    with pytest.raises(RunFailed) as failure:
        run_window(defs, dagster_instance, date(2026, 3, 1), date(2026, 3, 2), progress=lambda _: None)
    message = str(failure.value)
    assert "source columns missing in schema 'public': conversations.customer_phone, messages.updated_at" in message
    assert "BOTFLOW_SOURCE_SCHEMA" in message
    assert time.monotonic() - began < 30  # no retries (they took 48 s)


def test_the_demo_starts_partitions_at_its_first_day_and_keeps_the_earliest(tmp_path, monkeypatch):
    """On the embedded database the UI's partitions cover the demo's days; a later demo keeps the earlier
    start; BOTFLOW_PARTITIONS_START set by the user, or configured databases, win."""
    from datetime import date

    from dagster_project.core.settings import DEFAULT_PARTITIONS_START, Settings, _demo_start

    monkeypatch.delenv("BOTFLOW_PARTITIONS_START", raising=False)
    embedded = Settings(source_url="postgresql://x@127.0.0.1/x", source_schema="public",
                        warehouse_url="postgresql://x@127.0.0.1/y", dagster_storage_url="postgresql://x@127.0.0.1/z",
                        dagster_home=tmp_path, botflow_home=tmp_path, phone_hash_key="k",
                        partitions_start=DEFAULT_PARTITIONS_START, embedded=True)
    assert embedded.starting_partitions_at(date(2026, 11, 28)).partitions_start == "2026-11-28"
    assert embedded.starting_partitions_at(date(2026, 12, 5)).partitions_start == "2026-11-28"
    assert _demo_start(tmp_path, embedded=True) == "2026-11-28"  # what `botflow ui` reads next
    assert _demo_start(tmp_path, embedded=False) is None
    configured = Settings(**{**embedded.__dict__, "embedded": False})
    assert configured.starting_partitions_at(date(2026, 11, 1)).partitions_start == DEFAULT_PARTITIONS_START
    monkeypatch.setenv("BOTFLOW_PARTITIONS_START", "2026-01-01")
    assert embedded.starting_partitions_at(date(2026, 11, 1)).partitions_start == DEFAULT_PARTITIONS_START
