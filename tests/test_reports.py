"""Stakeholder reports end to end: simulate, build through Dagster, render, e-mail to a real SMTP server.

Every KPI is compared with the pandas oracle over the same source rows (tests/oracle.py), for the
platform and for one organization, for a day and for an ISO week.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import oracle
import pytest
from conftest import Inbox, build_window, free_port, lenient_quality_limits, module_scenario, run_job

from dagster_project.core.settings import scoped_environment
from dagster_project.dev.simulate import simulate
from dagster_project.serve.reports.periods import Period

START = date(2026, 11, 9)  # a Monday: the ISO week 2026-11-09 .. 2026-11-15, every day of it built
DAYS = 7
DAY = "2026-11-10"
WEEK = "2026-11-09"
EMPTY_WEEK = "2026-10-05"  # no data, no mart partitions built
DAILY_REPORT = ["reports", "daily_report"]


@pytest.fixture(scope="module")
def built(dagster_instance, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    env = {"BOTFLOW_REPORTS_DIR": str(folder / "out"), "BOTFLOW_REPORT_WAIT_MINUTES": "0",
           "BOTFLOW_REPORT_RECIPIENTS": str(folder / "none.toml")}
    with scoped_environment(env), module_scenario("reports") as (scenario,):
        with scenario.source() as conn:
            simulate(conn, "public", START, DAYS, seed=11, conversations_per_day=60)
        with lenient_quality_limits():  # few rows per hour: the simulator's bad rows exceed the share limits
            build_window(dagster_instance, START, START + timedelta(days=DAYS))
        src = oracle.read_source(scenario.source_url)
        valid = oracle.validate(src, datetime.now(UTC))
        yield scenario, src, OracleFacts.of(src, valid), Path(env["BOTFLOW_REPORTS_DIR"])


# -- the independent computation -----------------------------------------------------------------
@dataclass
class OracleFacts:
    """The oracle's messages (with response times and costs), conversations and usage rows, computed once."""

    messages: list[dict]
    conversations: dict
    usage: list[dict]
    service: dict  # conversation id -> the oracle's conversation_metrics row (first response, SLA verdict)

    @classmethod
    def of(cls, src, valid, start: date = START, days: int = DAYS) -> OracleFacts:
        window = oracle.Window(*bounds(start.isoformat(), days))
        messages, conversations = oracle.in_scope(valid, window)
        usage = list(oracle.usage_analytics(valid, window, oracle.phone_map(src)).values())
        return cls(messages, conversations, usage, oracle.conversation_metrics(valid, window))


def expected_kpis(facts: OracleFacts, lo: datetime, hi: datetime, org) -> dict:
    messages, conversations = facts.messages, facts.conversations

    def mine(row) -> bool:
        return org is None or row["organization_id"] == org

    msgs = [m for m in messages if lo <= m["created_at"] < hi and mine(m)]
    replies = [m for m in msgs if m["direction"] == "outbound"]
    times = [m["response_time"] for m in replies if m["response_time"] is not None]
    with_outcome = [m for m in replies if m["outcome"] is not None]
    convs = [c for c in conversations.values() if mine(c)]
    started = [c for c in convs if lo <= c["started_at"] < hi]
    ended = [c for c in convs if c["ended_at"] is not None and lo <= c["ended_at"] < hi]
    rated = [c["customer_satisfaction"] for c in ended if c["customer_satisfaction"] is not None]
    handoffs = sum(c["handoff_at"] is not None or c["status"] == "escalated" for c in started)
    service = [facts.service[c["id"]] for c in started if c["id"] in facts.service]
    first_responses = [r["first_response_time_ms"] for r in service if r["first_response_time_ms"] is not None]
    verdicts = [r["sla_first_response_met"] for r in service if r["sla_first_response_met"] is not None]

    def text(value):
        return None if value is None else str(value)

    return {
        "conversations": len(started),
        "messages": len(msgs),
        "avg_response_time_ms": oracle.avg_ms(times),
        "p50_response_time_ms": oracle.percentile_ms(times, 0.5),
        "p95_response_time_ms": oracle.percentile_ms(times, 0.95),
        "success_rate": text(oracle.rate(sum(m["outcome"] == "success" for m in with_outcome), len(with_outcome))),
        "handoff_rate": text(oracle.rate(handoffs, len(started))),
        "csat": text(None if not rated else oracle.half_up(Fraction(sum(rated), len(rated)), 2)),
        "first_response_p50_ms": oracle.percentile_ms(first_responses, 0.5),
        "sla_met_rate": text(oracle.rate(sum(verdicts), len(verdicts))),
        "tokens": sum(m["tokens"] for m in replies),
        "cost_usd": text(oracle.half_up(sum((m["cost"] for m in replies), Decimal(0)), 2)),
    }


def report_data(html: Path) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html.read_text(), re.S)
    assert match, f"{html} has no embedded report data"
    return json.loads(match.group(1))


def bounds(start: str, days: int, zone: str = "UTC") -> tuple[datetime, datetime]:
    """The instants of `days` dates from `start` in `zone` (zoneinfo), in UTC."""
    first = date.fromisoformat(start)
    lo, hi = (datetime.combine(d, time(), ZoneInfo(zone)).astimezone(UTC) for d in (first, first + timedelta(days)))
    return lo, hi


def zones(src) -> dict[str, str]:
    """Organization id -> its zone as the oracle repairs it."""
    return {str(o["id"]): oracle.zone_of(o["timezone"]).key for o in src["organizations"].to_dict("records")}


def render(instance, kind: str, key: str, tags: dict | None = None):
    return run_job(instance, f"{kind}_report_job", partition_key=key, tags=tags,
                   asset_selection=[dg.AssetKey(["reports", f"{kind}_report"])])


def daily_platform_report_equals_the_oracle(scenario, instance, day: str, start: date, days: int, out: Path) -> None:
    """The platform's daily report of `day`, rendered from `scenario`'s marts (test_spark_engine.py: marts built on
    Spark), against the oracle over the source's `days` from `start`. BOTFLOW_REPORTS_DIR is `out`."""
    src = oracle.read_source(scenario.source_url)
    facts = OracleFacts.of(src, oracle.validate(src, datetime.now(UTC)), start, days)
    render(instance, "daily", day)
    data = report_data(out / "daily" / day / "platform.html")
    lo, hi = bounds(day, 1)
    assert data["kpis"] == expected_kpis(facts, lo, hi, None)
    assert data["kpis"]["messages"] > 0 and data["kpis"]["p95_response_time_ms"] is not None


def first_org(src) -> tuple[uuid.UUID, str]:
    org = src["organizations"].sort_values("name").iloc[0]
    return org["id"], org["name"]


# -- the tests -----------------------------------------------------------------------------------
def test_daily_report_numbers_equal_the_oracle_for_platform_and_each_organization_in_its_zone(built,
                                                                                            dagster_instance):
    """The platform's day is the UTC day; each organization's is its own local day: +02:00, London, -03:00 and
    +05:30 (Umbrella Health's day runs from 18:30 UTC to 18:30 UTC)."""
    scenario, src, facts, out = built
    render(dagster_instance, "daily", DAY)
    folder = out / "daily" / DAY
    manifest = json.loads((folder / "manifest.json").read_text())
    org_zone = zones(src)
    assert [e["scope"] for e in manifest][0] == "platform"
    assert len(manifest) == 1 + len(src["organizations"])
    assert "Asia/Kolkata" in org_zone.values() and "America/Sao_Paulo" in org_zone.values()
    for entry in manifest:
        org = entry["organization_id"]
        zone = "UTC" if org is None else org_zone[org]
        html = folder / entry["html"]
        data = report_data(html)
        lo, hi = bounds(DAY, 1, zone)
        previous = bounds((date.fromisoformat(DAY) - timedelta(days=1)).isoformat(), 1, zone)
        who = None if org is None else uuid.UUID(org)
        assert data["kpis"] == expected_kpis(facts, lo, hi, who), (html.name, zone)
        assert data["previous_kpis"] == expected_kpis(facts, *previous, who), (html.name, zone)
        assert (data["zone"], data["period_bounds"]) == (zone, [lo.isoformat(), hi.isoformat()])
        assert data["kpis"]["conversations"] > 0 and data["kpis"]["p95_response_time_ms"] is not None
        assert data["stale_marts"] == []
        # what a reader sees is the same number
        text = html.read_text()
        assert f'data-kpi="conversations"><div class="name">Conversations</div>\n    <div class="value">' \
               f'{data["kpis"]["conversations"]:,}</div>' in text
        assert f"in {zone} time" in text
        if org is not None:
            assert entry["name"] in text


def test_daily_report_series_and_bot_rankings_come_from_the_reply_facts(built, dagster_instance):
    """The chart's hours are the UTC hours wholly inside the scope's day (usage_analytics is kept by UTC hour):
    24 local hours in a whole-hour zone; in +05:30 the 23 hours from 00:30 to 23:30 local time."""
    scenario, src, facts, out = built
    render(dagster_instance, "daily", DAY)
    folder = out / "daily" / DAY
    org_zone = zones(src)
    with scenario.warehouse() as conn:
        per_hour = conn.execute(
            "select organization_id::text, date_trunc('hour', created_at, 'UTC'), "
            "count(*) filter (where direction = 'inbound'), count(*) filter (where direction = 'outbound') "
            "from intermediate.int_messages group by 1, 2").fetchall()
    for entry in json.loads((folder / "manifest.json").read_text()):
        org = entry["organization_id"]
        zone = "UTC" if org is None else org_zone[org]
        lo, hi = bounds(DAY, 1, zone)
        hours = [h for h in (lo.replace(minute=0) + timedelta(hours=i) for i in range(26)) if lo <= h and h < hi
                 and h + timedelta(hours=1) <= hi]
        series = report_data(folder / entry["html"])["series"]
        assert [datetime.fromisoformat(r["bucket"]) for r in series] == hours, zone
        assert len(series) == (23 if zone == "Asia/Kolkata" else 24)
        expected: dict = {}
        for org_id, hour, inbound, outbound in per_hour:
            if org in (None, org_id) and hour in hours:
                was = expected.get(hour, (0, 0))
                expected[hour] = (was[0] + inbound, was[1] + outbound)
        assert {datetime.fromisoformat(r["bucket"]): (r["inbound"], r["outbound"]) for r in series
                if r["inbound"] or r["outbound"]} == expected, zone
        for row in series:
            bucket = datetime.fromisoformat(row["bucket"])
            times = [m["response_time"] for m in facts.messages if bucket <= m["created_at"] < bucket + timedelta(
                hours=1) and m["response_time"] is not None and org in (None, str(m["organization_id"]))]
            assert row["p95_ms"] == oracle.percentile_ms(times, 0.95), (zone, bucket)
    data = report_data(folder / "platform.html")
    lo, hi = bounds(DAY, 1)
    ranked = data["bots_by_p95"]
    assert [b["rank"] for b in ranked].count("best") >= 1
    p95s = [b["p95_response_time_ms"] for b in ranked]
    assert p95s == sorted(p95s)
    bot_names = dict(zip(src["bots"]["id"].astype(str), src["bots"]["name"], strict=True))
    window = oracle.Window(lo, hi)
    for bot in ranked:
        times = [m["response_time"] for m in facts.messages if str(m["bot_id"]) == bot["bot_id"]
                 and window.contains(m["created_at"]) and m["response_time"] is not None]
        assert bot["p95_response_time_ms"] == oracle.percentile_ms(times, 0.95)
        assert bot["bot_name"] == bot_names[bot["bot_id"]]


def test_weekly_report_covers_exactly_seven_days(built, dagster_instance):
    scenario, src, facts, out = built
    render(dagster_instance, "weekly", WEEK)
    folder = out / "weekly" / "2026-W46"
    data = report_data(folder / "platform.html")
    lo, hi = bounds(WEEK, 7)
    assert (data["period_start"], data["period_end"]) == ("2026-11-09", "2026-11-16")
    assert [r["bucket"][:10] for r in data["series"]] == [(lo + timedelta(days=i)).date().isoformat() for i in range(7)]
    assert data["kpis"] == expected_kpis(facts, lo, hi, None)
    # an organization's week: its seven local days (Umbrella Health's start at 18:30 UTC the day before)
    org_zone = zones(src)
    kolkata = next(org for org, zone in org_zone.items() if zone == "Asia/Kolkata")
    entry = next(e for e in json.loads((folder / "manifest.json").read_text()) if e["organization_id"] == kolkata)
    local = report_data(folder / entry["html"])
    assert [datetime.fromisoformat(r["bucket"]) for r in local["series"]] == [
        bounds((date.fromisoformat(WEEK) + timedelta(days=i)).isoformat(), 1, "Asia/Kolkata")[0] for i in range(7)]
    assert local["series"][0]["bucket"] == "2026-11-08T18:30:00+00:00"
    # 2026-11-08 (UTC) was never built: its report says so, naming the missing day
    assert "bot_performance_metrics_local (1 of 8 days missing)" in local["stale_marts"]
    assert data["stale_marts"] == []


def test_an_organization_west_of_utc_is_rendered_once_its_local_day_has_ended(built, dagster_instance):
    """Initech Bank's (-03:00) day 2026-11-10 ends at 2026-11-11 03:00 UTC: its daily marts can be built after the
    UTC day 2026-11-11, so the 07:00 run of 2026-11-11 leaves it pending and the catch-up run renders it alone."""
    from dagster_project.serve.reports.assets import PENDING, PENDING_TAG
    from dagster_project.serve.reports.build import plan_period

    scenario, src, _, out = built
    period = Period("daily", date.fromisoformat(DAY))
    with scenario.warehouse() as conn:
        first_run = plan_period(conn, period, datetime(2026, 11, 11, 7, tzinfo=UTC))
        catch_up = plan_period(conn, period, datetime(2026, 11, 12, 7, tzinfo=UTC))
    assert [s.timezone for s in first_run.pending] == ["America/Sao_Paulo"]
    assert len(first_run.due) == len(src["organizations"]) and first_run.due[0].organization_id is None
    assert len(catch_up.due) == 1 + len(src["organizations"]) and not catch_up.pending

    render(dagster_instance, "daily", DAY)
    folder = out / "daily" / DAY
    manifest = json.loads((folder / "manifest.json").read_text())
    west = next(e for e in manifest if e["organization_id"] and zones(src)[e["organization_id"]] == "America/Sao_Paulo")
    # the manifest as the 07:00 run left it
    (folder / "manifest.json").write_text(json.dumps([e for e in manifest if e is not west]))
    result = render(dagster_instance, "daily", DAY, tags={PENDING_TAG: PENDING})
    metadata = result.asset_materializations_for_node("reports__daily_report")[0].metadata
    assert metadata["rendered"].value == west["scope"]
    assert json.loads((folder / "manifest.json").read_text()) == manifest  # the same entries, in the same order
    # the next catch-up finds nothing pending: no materialization, nothing for the delivery to do
    again = run_job(dagster_instance, "daily_report_job", partition_key=DAY, tags={PENDING_TAG: PENDING})
    assert again.asset_materializations_for_node("reports__daily_report") == []
    assert again.asset_materializations_for_node("reports__daily_report_delivery") == []


def test_a_report_of_utc_days_is_no_earlier_figure_of_local_days(built, dagster_instance):
    """Before the upgrade an organization's reports covered UTC days: the snapshot of its previous UTC day holds
    other hours' numbers, not an earlier figure of its local day, so its next report notes no late data."""
    scenario, src, _, out = built
    kolkata = next(org for org, zone in zones(src).items() if zone == "Asia/Kolkata")
    previous = date.fromisoformat(DAY) - timedelta(days=1)
    render(dagster_instance, "daily", DAY)
    entry = next(e for e in json.loads((out / "daily" / DAY / "manifest.json").read_text())
                 if e["organization_id"] == kolkata)

    def revisions_after_a_snapshot_in(zone: str) -> list[str]:
        with scenario.warehouse() as conn:
            conn.execute("update reports.snapshots set zone = %s, kpis = kpis || '{\"conversations\": 1}' "
                         "where report_kind = 'daily' and period_start = %s and scope_key = %s",
                         (zone, previous, entry["scope"]))
            assert conn.execute("select count(*) from reports.snapshots where report_kind = 'daily' and "
                                "period_start = %s and scope_key = %s", (previous, entry["scope"])).fetchone()[0] == 1
        render(dagster_instance, "daily", DAY)
        return report_data(out / "daily" / DAY / entry["html"])["revisions"]

    render(dagster_instance, "daily", previous.isoformat())
    assert revisions_after_a_snapshot_in("UTC") == []
    assert "Conversations 1 -> " in revisions_after_a_snapshot_in("Asia/Kolkata")[0]  # the same days: late data


def test_report_with_marts_not_built_says_so(built, dagster_instance):
    _, _, _, out = built
    render(dagster_instance, "weekly", EMPTY_WEEK)
    html = (out / "weekly" / "2026-W41" / "platform.html").read_text()
    assert 'id="stale-warning"' in html and "Numbers may be incomplete" in html
    assert "usage_analytics (168 of 168 hours missing)" in html


def test_anomalies_of_the_period_are_listed_in_their_organizations_reports(built, dagster_instance):
    """marts.metric_anomalies rows dated in the period (the simulated days are too few for a verdict: the rows
    are written as the mart holds them), one for a bot of each of two organizations, and one the day after."""
    scenario, src, _, out = built
    bots = src["bots"].merge(src["organizations"], left_on="organization_id", right_on="id",
                             suffixes=("", "_org")).sort_values(["name_org", "name"])
    first, other = bots.iloc[0], bots[bots["organization_id"] != bots.iloc[0]["organization_id"]].iloc[0]
    day = date.fromisoformat(DAY)
    rows = [(first["id"], first["organization_id"], day, "p95_response_time_ms", 5000, 1000.0, 150.0, "high"),
            (other["id"], other["organization_id"], day, "error_rate", Decimal("0.00"), 20.0, 3.0, "low"),
            (first["id"], first["organization_id"], day + timedelta(days=1), "total_messages", 3, 40.0, 6.0, "low")]
    with scenario.warehouse() as conn:
        conn.cursor().executemany("insert into marts.metric_anomalies values (%s, %s, %s, %s, %s, %s, %s, %s)", rows)
    try:
        render(dagster_instance, "daily", DAY)
        folder = out / "daily" / DAY
        manifest = {e["organization_id"]: e for e in json.loads((folder / "manifest.json").read_text())}
        platform = report_data(folder / "platform.html")
        assert sorted((a["metric"], a["direction"]) for a in platform["anomalies"]) == [
            ("error_rate", "low"), ("p95_response_time_ms", "high")]  # the day after is another report's
        own = folder / manifest[str(first["organization_id"])]["html"]
        assert [a["metric"] for a in report_data(own)["anomalies"]] == ["p95_response_time_ms"]
        assert (f"{DAY} {first['name']}: p95 response time (ms) 5,000, above its usual 1,000 (more than 150 away"
                in own.read_text())
        assert "error rate" not in own.read_text().split("<h2>Anomalies</h2>")[1].split("<h2>")[0]
    finally:
        with scenario.warehouse() as conn:
            conn.execute("delete from marts.metric_anomalies")


def test_pdf_renders_to_a_non_blank_page(built, dagster_instance, tmp_path):
    _, _, _, out = built
    render(dagster_instance, "daily", DAY)
    pdf = out / "daily" / DAY / "platform.pdf"
    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
                   check=True)
    assert _ink_share(next(tmp_path.glob("page*.png"))) > 0.02


def _ink_share(png: Path) -> float:
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    return float((pixels.mean(axis=2) < 0.9).mean())


# -- e-mail ----------------------------------------------------------------------------------------
@pytest.fixture
def smtp_server(monkeypatch, tmp_path, built):
    from aiosmtpd.controller import Controller

    _, src, _, _ = built
    org_id, org_name = first_org(src)
    recipients = tmp_path / "recipients.toml"
    recipients.write_text(f'platform = ["ops@botflow.example", "cfo@botflow.example"]\n\n[organizations]\n'
                          f'"{org_name}" = ["owner@org.example"]\n')
    inbox = Inbox(refuse=1)
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("BOTFLOW_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BOTFLOW_SMTP_PORT", str(port))
    monkeypatch.setenv("BOTFLOW_SMTP_SECURITY", "none")
    monkeypatch.setenv("BOTFLOW_REPORT_RECIPIENTS", str(recipients))
    yield inbox, org_name
    controller.stop()


def test_report_is_emailed_once_with_a_readable_pdf_after_a_retry(built, dagster_instance, smtp_server, tmp_path):
    import dagster as dg

    inbox, org_name = smtp_server
    result = run_job(dagster_instance, "daily_report_job", partition_key=DAY)
    # the first attempt met a 451: the delivery step failed, was retried, then delivered
    retried = [e for e in result.all_events if e.is_step_up_for_retry]
    assert len(retried) == 1 and retried[0].step_key.endswith("daily_report_delivery")
    assert sorted(tuple(m.rcpt_tos) for m in inbox.messages) == [
        ("ops@botflow.example", "cfo@botflow.example"), ("owner@org.example",)]
    platform = next(message_from_bytes(m.original_content, policy=policy.default) for m in inbox.messages
                    if "ops@botflow.example" in m.rcpt_tos)
    assert platform["Subject"].startswith("BotFlow daily report: All organizations")
    attachment = next(part for part in platform.iter_attachments() if part.get_content_type() == "application/pdf")
    (tmp_path / "mailed.pdf").write_bytes(attachment.get_content())
    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(tmp_path / "mailed.pdf"),
                    str(tmp_path / "mailed")], check=True)
    assert _ink_share(next(tmp_path.glob("mailed*.png"))) > 0.02
    html = platform.get_body(preferencelist=("html",)).get_content()
    assert 'id="report-data"' in html

    # a second run (a re-materialization, a backfill) sends nothing again
    again = run_job(dagster_instance, "daily_report_job", partition_key=DAY)
    assert len(inbox.messages) == 2
    delivery = again.asset_materializations_for_node("reports__daily_report_delivery")[0]
    assert delivery.metadata["already_sent"] == dg.IntMetadataValue(2)


def test_unreachable_smtp_fails_naming_the_settings(built, dagster_instance, monkeypatch):
    from dagster_project.serve.reports.build import deliver_period
    from dagster_project.serve.reports.delivery import DeliveryError

    scenario, src, _, _ = built
    render(dagster_instance, "weekly", WEEK)
    recipients = Path(os.environ["BOTFLOW_REPORTS_DIR"]).parent / "ops.toml"
    recipients.write_text('platform = ["ops@botflow.example"]\n')
    monkeypatch.setenv("BOTFLOW_REPORT_RECIPIENTS", str(recipients))
    monkeypatch.setenv("BOTFLOW_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BOTFLOW_SMTP_PORT", str(free_port()))  # nothing listens
    monkeypatch.setenv("BOTFLOW_SMTP_SECURITY", "none")
    with scenario.warehouse() as conn, pytest.raises(DeliveryError, match="BOTFLOW_SMTP_HOST"):
        deliver_period(conn, Period("weekly", date.fromisoformat(WEEK)), log=lambda _line: None)


def test_late_data_is_noted_by_the_next_report(built, dagster_instance):
    """A conversation arrives late for a day already reported: the next day's report says what changed."""
    scenario, src, _, out = built
    day, next_day = "2026-11-13", "2026-11-14"
    render(dagster_instance, "daily", day)
    said = report_data(out / "daily" / day / "platform.html")["kpis"]["conversations"]
    bot = src["bots"].sort_values("name").iloc[0]
    late = uuid.uuid4()
    with scenario.source() as conn:
        conn.execute(
            "insert into conversations (id, organization_id, bot_id, customer_phone, status, started_at, ended_at, "
            "updated_at) values (%s, %s, %s, '+27820000001', 'resolved', '2026-11-13 10:30Z', '2026-11-13 10:40Z', "
            "now())", (late, bot["organization_id"], bot["id"]))
    try:
        run_job(dagster_instance, "hourly_partition_job", partition_key="2026-11-13-10:00")
        run_job(dagster_instance, "daily_partition_job", partition_key=day)
        render(dagster_instance, "daily", next_day)
        data = report_data(out / "daily" / next_day / "platform.html")
        assert data["previous_kpis"]["conversations"] == said + 1
        assert len(data["revisions"]) == 1
        assert f"Conversations {said} -> {said + 1}" in data["revisions"][0]
        assert f"Conversations {said} -&gt; {said + 1}" in (out / "daily" / next_day / "platform.html").read_text()
    finally:  # the module's other tests compare with the oracle of the rows as simulated
        with scenario.source() as conn:
            conn.execute("delete from conversations where id = %s", (late,))
        run_job(dagster_instance, "hourly_partition_job", partition_key="2026-11-13-10:00")
        run_job(dagster_instance, "daily_partition_job", partition_key=day)


# -- pure helpers ----------------------------------------------------------------------------------
def test_periods():
    week = Period("weekly", date(2026, 11, 23))
    assert (week.slug, week.end, week.previous.start) == ("2026-W48", date(2026, 11, 30), date(2026, 11, 16))
    day = Period.from_partition_key("daily", "2026-01-01")
    assert (day.slug, day.previous.start, day.bucket) == ("2026-01-01", date(2025, 12, 31), "hour")
    with pytest.raises(ValueError, match="Monday"):
        Period("weekly", date(2026, 11, 24))
    # in a zone: 25 hours on London's last Sunday of October, the 23 whole UTC hours of a +05:30 day, and the
    # UTC days whose marts a report reads (a -03:00 day touches the next UTC day: readable a day later)
    london = Period("daily", date(2026, 10, 25), "Europe/London")
    assert (london.window.duration, len(london.buckets)) == (timedelta(hours=25), 25)
    kolkata = Period("daily", date(2026, 11, 10), "Asia/Kolkata")
    assert kolkata.buckets[0][0] == datetime(2026, 11, 9, 19, tzinfo=UTC) and len(kolkata.buckets) == 23
    assert kolkata.readable_after == datetime(2026, 11, 11, tzinfo=UTC)
    sao_paulo = Period("daily", date(2026, 11, 10), "America/Sao_Paulo")
    assert sao_paulo.covering(timedelta(days=1)).start == datetime(2026, 11, 10, tzinfo=UTC)
    assert sao_paulo.readable_after == datetime(2026, 11, 12, tzinfo=UTC)


def test_bad_delivery_settings_name_the_setting(monkeypatch, tmp_path):
    from dagster_project.core.settings import ConfigError
    from dagster_project.serve.reports.delivery import Recipients, SmtpSettings

    monkeypatch.setenv("BOTFLOW_SMTP_HOST", "mail.example")
    monkeypatch.setenv("BOTFLOW_SMTP_PORT", "25x")
    with pytest.raises(ConfigError, match="BOTFLOW_SMTP_PORT"):
        SmtpSettings.from_env()
    monkeypatch.setenv("BOTFLOW_SMTP_PORT", "465")
    monkeypatch.setenv("BOTFLOW_SMTP_SECURITY", "tls1.0")
    with pytest.raises(ConfigError, match="BOTFLOW_SMTP_SECURITY"):
        SmtpSettings.from_env()
    bad = tmp_path / "r.toml"
    bad.write_text('platform = "ops@example.com"\n')
    with pytest.raises(ConfigError, match="BOTFLOW_REPORT_RECIPIENTS"):
        Recipients.load(bad)
    monkeypatch.delenv("BOTFLOW_SMTP_HOST")
    assert SmtpSettings.from_env() is None  # reports are saved, not sent
