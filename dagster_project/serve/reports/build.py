"""Render the reports of a period (the platform and each organization, each in its own zone) and deliver them.

An organization's report of day D is due once every UTC day its local day D touches has ended (its daily
marts can then be built): at once for zones at or east of UTC, one day later for zones west of it
(America/Sao_Paulo's day D ends at D+1 03:00 UTC). A run renders the platform and the due organizations and
leaves the others pending; the schedule's catch-up run the next day renders the pending ones
(docs/operations.md, "Stakeholder reports").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from dagster_project.core.settings import botflow_home, setting
from dagster_project.core.tenancy import organization_scope
from dagster_project.serve.reports.data import Scope, list_scopes, read_report
from dagster_project.serve.reports.delivery import Delivery, Recipients, SmtpSettings, deliver_once
from dagster_project.serve.reports.periods import Period
from dagster_project.serve.reports.render import RenderedReport, read_manifest, write_manifest, write_report
from dagster_project.serve.reports.store import ensure_reports_schema, revisions_since_last_report, save_snapshot


def reports_root() -> Path:
    return Path(setting("BOTFLOW_REPORTS_DIR") or botflow_home() / "reports").resolve()


def period_folder(period: Period, root: Path | None = None) -> Path:
    """Stable names: <root>/daily/2026-11-24/, <root>/weekly/2026-W48/."""
    return (root or reports_root()) / period.kind / period.slug


@dataclass(frozen=True)
class Plan:
    """What a run of a period renders now (due) and what waits for its local period to end (pending)."""

    due: list[Scope]
    pending: list[Scope]


def plan_period(conn: psycopg.Connection, period: Period, now: datetime, *, only_pending: bool = False) -> Plan:
    """Every scope whose period in its zone is readable by `now`; with only_pending, those not yet rendered."""
    scopes = list_scopes(conn)
    rendered = {entry["scope"] for entry in read_manifest(period_folder(period))} if only_pending else set()
    due, pending = [], []
    for scope in scopes:
        if scope.key in rendered:
            continue
        readable = scope.organization_id is None or now >= period.in_zone(scope.timezone).readable_after
        (due if readable else pending).append(scope)
    return Plan(due, pending)


def render_period(conn: psycopg.Connection, period: Period, scopes: list[Scope] | None = None,
                  stale_marts: Callable[[Scope], list[str]] = lambda _scope: [],
                  log: Callable[[str], None] = print) -> list[RenderedReport]:
    """Render `scopes` (default: all) for the period, each in its zone; stale_marts names what a scope's report
    reads that was not built for its period."""
    ensure_reports_schema(conn)
    conn.commit()
    folder = period_folder(period)
    scopes = list_scopes(conn) if scopes is None else scopes
    rendered = []
    # one run at a time per period (a catch-up and a re-run by hand): each merges its reports into the manifest
    lock = f"botflow.reports:{period.kind}:{period.slug}"
    conn.execute("select pg_advisory_lock(hashtext(%s))", (lock,))  # a session lock: it outlives the commits
    conn.commit()
    try:
        for i, scope in enumerate(scopes, 1):
            with organization_scope(conn, scope.organization_id):  # the warehouse confines it, whatever the SQL
                report = read_report(conn, period, scope)
            report.stale_marts = stale_marts(scope)
            report.revisions = revisions_since_last_report(conn, report)
            report.generated_at = datetime.now(UTC)
            rendered.append(write_report(report, folder))
            save_snapshot(conn, report)
            conn.commit()
            log(f"[{i}/{len(scopes)}] {period.kind} {period.slug}: rendered {scope.key} ({report.period.zone})")
        write_manifest(folder, rendered)
    finally:
        conn.rollback()
        conn.execute("select pg_advisory_unlock(hashtext(%s))", (lock,))
        conn.commit()
    return rendered


def deliver_period(conn: psycopg.Connection, period: Period, log: Callable[[str], None] = print) -> list[Delivery]:
    """E-mail each rendered report of the period to its recipients, skipping those already sent."""
    folder = period_folder(period)
    manifest = folder / "manifest.json"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} is missing: render the {period.kind} report {period.slug} first")
    smtp, recipients = SmtpSettings.from_env(), Recipients.load()
    ensure_reports_schema(conn)
    conn.commit()
    deliveries = []
    for entry in json.loads(manifest.read_text()):
        to = recipients.for_report(entry["name"], entry["organization_id"])
        if not to:
            deliveries.append(Delivery(entry["scope"], "no recipients"))
        elif smtp is None:
            deliveries.append(Delivery(entry["scope"], "smtp not configured", tuple(to)))
        else:
            deliveries.append(deliver_once(conn, smtp, period.kind, period.start, entry["scope"], to,
                                           entry["subject"], folder / entry["html"], folder / entry["pdf"]))
        log(f"{period.kind} {period.slug} {entry['scope']}: {deliveries[-1].status}")
    return deliveries
