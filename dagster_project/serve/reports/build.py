"""Render every report of a period (the platform and each organization) and deliver them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from dagster_project.core.settings import botflow_home, setting
from dagster_project.core.tenancy import organization_scope
from dagster_project.serve.reports.data import list_scopes, read_report
from dagster_project.serve.reports.delivery import Delivery, Recipients, SmtpSettings, deliver_once
from dagster_project.serve.reports.periods import Period
from dagster_project.serve.reports.render import RenderedReport, write_manifest, write_report
from dagster_project.serve.reports.store import ensure_reports_schema, revisions_since_last_report, save_snapshot


def reports_root() -> Path:
    return Path(setting("BOTFLOW_REPORTS_DIR") or botflow_home() / "reports").resolve()


def period_folder(period: Period, root: Path | None = None) -> Path:
    """Stable names: <root>/daily/2026-11-24/, <root>/weekly/2026-W48/."""
    return (root or reports_root()) / period.kind / period.slug


def render_period(conn: psycopg.Connection, period: Period, stale_marts: list[str],
                  log: Callable[[str], None] = print) -> list[RenderedReport]:
    ensure_reports_schema(conn)
    conn.commit()
    folder = period_folder(period)
    scopes = list_scopes(conn)
    rendered = []
    for i, scope in enumerate(scopes, 1):
        with organization_scope(conn, scope.organization_id):  # the warehouse confines it, whatever the SQL
            report = read_report(conn, period, scope)
        report.stale_marts = stale_marts
        report.revisions = revisions_since_last_report(conn, report)
        report.generated_at = datetime.now(UTC)
        rendered.append(write_report(report, folder))
        save_snapshot(conn, report)
        conn.commit()
        log(f"[{i}/{len(scopes)}] {period.kind} {period.slug}: rendered {scope.key}")
    write_manifest(folder, rendered)
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
