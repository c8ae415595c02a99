"""The report's two charts, drawn by matplotlib (no browser), on any Axes: PNG for HTML, vector in the PDF."""

from __future__ import annotations

import io
from zoneinfo import ZoneInfo

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dagster_project.serve.reports.data import ReportData  # noqa: E402

COLORS = {"avg": "#2563eb", "p50": "#16a34a", "p95": "#dc2626", "inbound": "#64748b", "outbound": "#0ea5e9"}


def _x(report: ReportData) -> list:
    return [row["bucket"] for row in report.series]


def _format_time_axis(ax: Axes, report: ReportData) -> None:
    zone = report.period.zone
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M" if report.period.bucket == "hour" else "%a %d",
                                                      tz=ZoneInfo(zone)))
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    note = (" (messages are counted by UTC hour: a bucket holds the whole UTC hours inside it)"
            if report.period.off_the_hour else "")
    ax.set_xlabel(f"{zone} time{note}", fontsize=8)


def draw_response_times(ax: Axes, report: ReportData) -> None:
    x = _x(report)
    for key, label in (("avg", "avg"), ("p50", "p50"), ("p95", "p95")):
        ax.plot(x, [row[f"{key}_ms"] for row in report.series], marker="o", markersize=3, label=label,
                color=COLORS[key])
    ax.set_title(f"Response time per {report.period.bucket} (ms)", loc="left", fontsize=11, pad=16)
    ax.legend(frameon=False, ncols=3, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), borderaxespad=0)
    ax.set_ylim(bottom=0)
    _format_time_axis(ax, report)


def draw_message_volume(ax: Axes, report: ReportData) -> None:
    x = _x(report)
    inbound = [row["inbound"] for row in report.series]
    outbound = [row["outbound"] for row in report.series]
    width = (1 / 24 if report.period.bucket == "hour" else 1) * 0.8
    ax.bar(x, inbound, width=width, label=f"inbound ({sum(inbound):,})", color=COLORS["inbound"])
    ax.bar(x, outbound, width=width, bottom=inbound, label=f"outbound ({sum(outbound):,})", color=COLORS["outbound"])
    shown = "in the hours shown" if report.period.off_the_hour else "in all"
    ax.set_title(f"Messages per {report.period.bucket}: {sum(inbound) + sum(outbound):,} {shown}", loc="left",
                 fontsize=11, pad=16)
    ax.legend(frameon=False, ncols=2, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), borderaxespad=0)
    _format_time_axis(ax, report)


def chart_png(report: ReportData, draw) -> bytes:
    fig = Figure(figsize=(7, 2.8), dpi=110, layout="constrained")
    draw(fig.add_subplot(), report)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
