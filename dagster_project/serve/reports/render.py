"""Render a report as self-contained HTML (charts inline) and as PDF (matplotlib, no browser)."""

from __future__ import annotations

import base64
import json
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import jinja2
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from dagster_project.serve.reports.charts import chart_png, draw_message_volume, draw_response_times
from dagster_project.serve.reports.data import KPI_FIELDS, PERCENT_KPIS, ReportData, anomaly_line

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("dagster_project.serve.reports", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
)
A4 = (8.27, 11.69)


def fmt(name: str, value) -> str:
    """A KPI as people read it: thousands separators, units, 'n/a' when there is nothing to measure."""
    if value is None:
        return "n/a"
    if name == "cost_usd":
        return f"${Decimal(value):,.2f}"
    if name in PERCENT_KPIS:
        return f"{Decimal(value):.2f}%"
    if name == "csat":
        return f"{Decimal(value):.2f}"
    return f"{int(value):,}"


def report_json(report: ReportData) -> dict:
    """The data behind the report, embedded in the HTML (tests and tools read it back)."""
    def plain(value):
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime):
            return value.isoformat()
        return str(value) if value is not None and not isinstance(value, int | float | str) else value

    return {
        "kind": report.period.kind, "period_start": report.period.start.isoformat(),
        "period_end": report.period.end.isoformat(), "zone": report.period.zone,
        "period_bounds": [report.period.window.start.isoformat(), report.period.window.end.isoformat()],
        "scope": report.scope.key,
        "organization_id": plain(report.scope.organization_id),
        "kpis": {k: plain(v) for k, v in report.kpis.items()},
        "previous_kpis": {k: plain(v) for k, v in report.previous_kpis.items()},
        "series": [{k: plain(v) for k, v in row.items()} for row in report.series],
        "bots_by_p95": [{k: plain(v) for k, v in row.items()} for row in report.bots_by_p95],
        "bots_by_success": [{k: plain(v) for k, v in row.items()} for row in report.bots_by_success],
        "anomalies": [{k: plain(v) for k, v in row.items()} for row in report.anomalies],
        "quarantined": report.quarantined, "revisions": report.revisions, "stale_marts": report.stale_marts,
    }


def render_html(report: ReportData) -> str:
    charts = {
        "response_times": base64.b64encode(chart_png(report, draw_response_times)).decode(),
        "message_volume": base64.b64encode(chart_png(report, draw_message_volume)).decode(),
    }
    return TEMPLATES.get_template("report.html.j2").render(
        title=subject(report), report=report, kpi_fields=KPI_FIELDS, changes=report.changes(), fmt=fmt,
        charts=charts, data=report_json(report), anomaly_lines=[anomaly_line(a) for a in report.anomalies])


def subject(report: ReportData) -> str:
    return f"BotFlow {report.period.kind} report: {report.scope.name}, {report.period.label}"


def render_pdf(report: ReportData, path: Path) -> None:
    changes = report.changes()
    with PdfPages(path, metadata={"Title": subject(report), "Creator": "BotFlow warehouse"}) as pdf:
        page = Figure(figsize=A4)
        page.text(0.06, 0.96, f"BotFlow {report.period.kind} report", fontsize=10, color="#475569")
        page.text(0.06, 0.935, textwrap.shorten(f"{report.scope.name}: {report.period.label}", 80),
                  fontsize=15, weight="bold")
        y = 0.905
        if report.stale_marts:
            warning = "Numbers may be incomplete: not yet built for the period: " + ", ".join(report.stale_marts)
            page.text(0.06, y, textwrap.fill(warning, 95), fontsize=9, color="#b45309", va="top")
            y -= 0.04
        table_ax = page.add_axes((0.06, y - 0.33, 0.88, 0.32))
        table_ax.axis("off")
        cells = []
        for name, label in KPI_FIELDS.items():
            change = changes[name]
            delta = "n/a" if change["delta"] is None else f"{change['delta']:+.1f} {change['unit']}"
            cells.append([label, fmt(name, report.kpis[name]), fmt(name, report.previous_kpis[name]), delta])
        table = table_ax.table(cellText=cells, colLabels=["KPI", "This period", "Previous", "Change"],
                               loc="upper left", cellLoc="left", colWidths=[0.4, 0.22, 0.22, 0.16])
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        table.scale(1, 1.5)
        charts = page.add_gridspec(2, 1, left=0.08, right=0.94, bottom=0.06, top=y - 0.39, hspace=0.45)
        draw_response_times(page.add_subplot(charts[0]), report)
        draw_message_volume(page.add_subplot(charts[1]), report)
        pdf.savefig(page)

        page = Figure(figsize=A4)
        lines = ["Bots by p95 response time (ms)"]
        lines += [f"  {b['rank']:<5} {textwrap.shorten(b['bot_name'], 50):<52} {b['p95_response_time_ms']:>8}"
                  for b in report.bots_by_p95] or ["  no bot replies in this period"]
        lines += ["", "Bots by success rate (%)"]
        lines += [f"  {b['rank']:<5} {textwrap.shorten(b['bot_name'], 50):<52} {b['success_rate']:>8}"
                  for b in report.bots_by_success] or ["  no bot replies in this period"]
        lines += ["", "Anomalies (each bot against its own 14 days before)"]
        for anomaly in report.anomalies:
            lines += textwrap.wrap(anomaly_line(anomaly), 95, initial_indent="  ", subsequent_indent="    ")
        if not report.anomalies:
            lines += ["  no bot metric was anomalous in this period"]
        lines += ["", "Data quality"]
        lines += [f"  {q['rows']:,} row(s) of {q['source_table']} quarantined by rule {q['rule']}"
                  for q in report.quarantined] or ["  no rows quarantined in this period"]
        for note in report.revisions or ["No late data changed the previous report's numbers."]:
            lines += textwrap.wrap(note, 95, initial_indent="  ", subsequent_indent="    ")
        page.text(0.06, 0.95, "\n".join(lines), fontsize=9, family="DejaVu Sans Mono", va="top")
        page.text(0.06, 0.03, f"Generated {report.generated_at:%Y-%m-%d %H:%M} UTC from the BotFlow warehouse marts.",
                  fontsize=8, color="#64748b")
        pdf.savefig(page)


@dataclass(frozen=True)
class RenderedReport:
    scope_key: str
    scope_name: str
    organization_id: str | None
    subject: str
    html: Path
    pdf: Path
    stale: bool


def write_report(report: ReportData, folder: Path) -> RenderedReport:
    """Write <folder>/<scope>.html and .pdf (atomically: a reader never sees half a file)."""
    report.generated_at = report.generated_at or datetime.now(UTC)
    folder.mkdir(parents=True, exist_ok=True)
    html, pdf = folder / f"{report.scope.key}.html", folder / f"{report.scope.key}.pdf"
    tmp_html, tmp_pdf = html.with_suffix(".html.tmp"), pdf.with_suffix(".pdf.tmp")
    tmp_html.write_text(render_html(report), encoding="utf-8")
    render_pdf(report, tmp_pdf)
    tmp_html.replace(html)
    tmp_pdf.replace(pdf)
    org = None if report.scope.organization_id is None else str(report.scope.organization_id)
    return RenderedReport(report.scope.key, report.scope.name, org, subject(report), html, pdf,
                          bool(report.stale_marts))


def read_manifest(folder: Path) -> list[dict]:
    """The reports rendered for a period so far (none when nothing was)."""
    manifest = folder / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.exists() else []


def write_manifest(folder: Path, reports: list[RenderedReport]) -> Path:
    """manifest.json: what the delivery step sends. Reports rendered now replace their earlier entries; the
    others stay (an organization rendered by a later run joins the platform's and the others')."""
    fresh = [{"scope": r.scope_key, "name": r.scope_name, "organization_id": r.organization_id, "subject": r.subject,
              "html": r.html.name, "pdf": r.pdf.name, "stale": r.stale} for r in reports]
    keys = {entry["scope"] for entry in fresh}
    entries = [entry for entry in read_manifest(folder) if entry["scope"] not in keys] + fresh
    entries.sort(key=lambda e: (e["organization_id"] is not None, e["name"], e["scope"]))
    manifest = folder / "manifest.json"
    tmp = manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entries, indent=2))
    tmp.replace(manifest)
    return manifest
