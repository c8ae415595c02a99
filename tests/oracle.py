"""An independent computation of the three marts from the SOURCE rows, written from metrics.md.

It shares no code with the warehouse: it reads the app database with pandas, applies the "Bad
rows" rules itself, and computes every column of every row in Python (Decimal and Fraction for
exact rounding). Percentiles follow PostgreSQL's documented percentile_cont (linear interpolation
between the two nearest ranks, in double precision); a double becomes numeric with 15 significant
digits, then rounds half away from zero - as the contract says: "exactly what percentile_cont returns".
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
import os
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

import pandas as pd
import psycopg

SEEDS = Path(__file__).resolve().parent.parent / "dbt" / "seeds"
PRICES_CSV = SEEDS / "llm_prices.csv"
DIRECTIONS = {"inbound", "outbound"}
STATUSES = {"active", "resolved", "escalated"}
OUTCOMES = {"success", "failed", "fallback"}
KINDS = {"api_call", "webhook_received"}


# -- rounding, as the contract states it ---------------------------------------------------------
def half_up(value: Fraction | Decimal | int, places: int = 0) -> Decimal:
    q = Decimal(1).scaleb(-places)
    if isinstance(value, Fraction):
        scaled = value * 10**places
        whole = math.floor(abs(scaled) + Fraction(1, 2))
        result = Decimal(whole if scaled >= 0 else -whole).scaleb(-places)
        return result.quantize(q)
    return Decimal(value).quantize(q, rounding=ROUND_HALF_UP)


def rate(numerator: int, denominator: int) -> Decimal | None:
    return None if denominator == 0 else half_up(Fraction(100 * numerator, denominator), 2)


def ratio(numerator, denominator: int, places: int) -> Decimal | None:
    if denominator == 0:
        return None
    return half_up(Fraction(Decimal(numerator)) / denominator, places)


def avg_ms(values: list[int]) -> int | None:
    return None if not values else int(half_up(Fraction(sum(values), len(values))))


def percentile_cont(values: list[int], p: float) -> float:
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    lower = math.floor(position)
    fraction = position - lower
    low = float(ordered[lower])
    if lower + 1 >= len(ordered):
        return low
    high = float(ordered[lower + 1])
    return low + (high - low) * fraction


def percentile_ms(values: list[int], p: float) -> int | None:
    if not values:
        return None
    return int(half_up(Decimal(f"{percentile_cont(values, p):.15g}")))


def stable_uuid(*parts) -> uuid.UUID:
    return uuid.UUID(hashlib.md5(":".join(str(p) for p in parts).encode()).hexdigest())


# -- source rows and the "Bad rows" rules --------------------------------------------------------
@dataclass
class Valid:
    conversations: pd.DataFrame
    messages: pd.DataFrame
    api_events: pd.DataFrame
    bots: pd.DataFrame
    rejected: dict[str, set]  # table -> ids of rejected rows
    organizations: pd.DataFrame | None = None


OLDEST = datetime(1, 1, 1, tzinfo=UTC)


def read_source(url: str, schema: str = "public") -> dict[str, pd.DataFrame]:
    """The source's tables, one version per id: the newest updated_at (metrics.md, "Bad rows").

    Ties (several versions with the same updated_at and other values) are the warehouse's to break
    (by a hash): tests that compare with this oracle hold none; those rows' tables keep any one."""
    with psycopg.connect(url, options="-c timezone=UTC") as conn:
        frames = {}
        for table in ("organizations", "bots", "conversations", "messages", "api_events"):
            cur = conn.execute(f'select * from "{schema}"."{table}"')
            cols = [d.name for d in cur.description]
            frame = pd.DataFrame(cur.fetchall(), columns=cols, dtype=object)
            if "updated_at" in cols and len(frame):
                order = frame["updated_at"].map(lambda v: OLDEST if v is None else v)
                frame = frame.iloc[order.argsort(kind="stable")]
            frames[table] = frame.drop_duplicates("id", keep="last").reset_index(drop=True)
        return frames


def validate(src: dict[str, pd.DataFrame], now: datetime) -> Valid:
    future = now + timedelta(minutes=5)
    floor = datetime.fromisoformat(os.environ.get("BOTFLOW_PARTITIONS_START", "2025-01-01")).replace(tzinfo=UTC)
    bots = src["bots"]
    bot_ids = set(bots["id"])
    org_ids = set(src["organizations"]["id"])
    rejected: dict[str, set] = {"conversations": set(), "messages": set(), "api_events": set()}

    conv_rows = []
    for c in src["conversations"].to_dict("records"):
        ok = (
            c["status"] in STATUSES
            and c["started_at"] is not None
            and floor <= c["started_at"] <= future
            and (c["ended_at"] is None or c["ended_at"] >= c["started_at"])
            and c["bot_id"] in bot_ids
            and c["organization_id"] in org_ids
        )
        if not ok:
            rejected["conversations"].add(c["id"])
            continue
        csat = c["customer_satisfaction"]
        c["customer_satisfaction"] = csat if csat is not None and 1 <= csat <= 5 else None
        conv_rows.append(c)
    conversations = pd.DataFrame(conv_rows, dtype=object)
    valid_conv = {c["id"]: c for c in conv_rows}
    bot_model = dict(zip(bots["id"], bots["llm_model"], strict=True))

    msg_rows = []
    for m in src["messages"].to_dict("records"):
        ok = (
            m["direction"] in DIRECTIONS
            and m["created_at"] is not None
            and floor <= m["created_at"] <= future
            and not (m["direction"] == "outbound" and m["outcome"] is not None and m["outcome"] not in OUTCOMES)
            # the project's bound (docs/decisions.md): no LLM call uses more than 10M tokens of a kind
            and not (m["direction"] == "outbound"
                     and max(m["prompt_tokens"] or 0, m["completion_tokens"] or 0) > 10_000_000)
            and m["conversation_id"] in valid_conv
        )
        if not ok:
            rejected["messages"].add(m["id"])
            continue
        conv = valid_conv[m["conversation_id"]]
        m["bot_id"] = conv["bot_id"]
        m["organization_id"] = conv["organization_id"]
        if m["direction"] == "inbound":  # outcome, kb, model, response time and tokens are ignored
            m.update(outcome=None, knowledge_base_hit=None, llm_model=None, response_time_ms=None,
                     prompt_tokens=0, completion_tokens=0)
        else:
            if m["response_time_ms"] is not None and m["response_time_ms"] < 0:
                m["response_time_ms"] = None
            m["prompt_tokens"] = max(m["prompt_tokens"] or 0, 0)
            m["completion_tokens"] = max(m["completion_tokens"] or 0, 0)
        m["model"] = m["llm_model"] or bot_model.get(conv["bot_id"])
        msg_rows.append(m)
    messages = pd.DataFrame(msg_rows, dtype=object)

    ev_rows = []
    for e in src["api_events"].to_dict("records"):
        if e["kind"] in KINDS and e["occurred_at"] is not None and floor <= e["occurred_at"] <= future:
            ev_rows.append(e)
        else:
            rejected["api_events"].add(e["id"])
    return Valid(conversations, messages, pd.DataFrame(ev_rows, dtype=object), bots, rejected, src["organizations"])


def load_prices() -> dict[str, list[tuple[datetime, Decimal, Decimal]]]:
    prices: dict[str, list] = {}
    with PRICES_CSV.open() as f:
        for row in csv.DictReader(f):
            effective = datetime.fromisoformat(row["effective_from"].replace("+00", "+00:00"))
            prices.setdefault(row["model"], []).append(
                (effective, Decimal(row["prompt_price_per_1k"]), Decimal(row["completion_price_per_1k"]))
            )
    return prices


def message_cost(model, created_at, prompt: int, completion: int, prices) -> Decimal:
    candidates = [p for p in prices.get(model, []) if p[0] <= created_at]
    if not candidates:
        return Decimal(0)
    _, p_price, c_price = max(candidates, key=lambda p: p[0])
    return (prompt * p_price + completion * c_price) / 1000


# -- the marts -----------------------------------------------------------------------------------
@dataclass
class Window:
    start: datetime
    end: datetime

    def contains(self, ts) -> bool:
        return ts is not None and self.start <= ts < self.end


def in_scope(valid: Valid, window: Window) -> tuple[list[dict], dict]:
    """The messages a run over `window` ingests, with reply facts, and the conversations it knows."""
    prices = load_prices()
    messages = [m for m in valid.messages.to_dict("records") if window.contains(m["created_at"])]
    conv_ids = {m["conversation_id"] for m in messages}
    conversations = {
        c["id"]: c for c in valid.conversations.to_dict("records")
        if window.contains(c["started_at"]) or c["id"] in conv_ids
    }
    by_conv: dict = {}
    for m in messages:
        by_conv.setdefault(m["conversation_id"], []).append(m)
    for msgs in by_conv.values():
        for m in msgs:
            m["tokens"] = m["prompt_tokens"] + m["completion_tokens"]
            m["cost"] = message_cost(m["model"], m["created_at"], m["prompt_tokens"], m["completion_tokens"], prices)
            m["response_time"] = None
            if m["direction"] != "outbound":
                continue
            if m["response_time_ms"] is not None:
                m["response_time"] = int(m["response_time_ms"])
                continue
            earlier = [x["created_at"] for x in msgs
                       if x["direction"] == "inbound" and x["created_at"] < m["created_at"]]
            if earlier:
                delta = m["created_at"] - max(earlier)
                micros = delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds
                m["response_time"] = micros // 1000  # fractions of a millisecond truncated
    return messages, conversations


def _seconds(delta: timedelta) -> int:
    micros = delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds
    return int(Fraction(micros, 1_000_000).__trunc__())


def conversation_metrics(valid: Valid, window: Window) -> dict:
    messages, conversations = in_scope(valid, window)
    by_conv: dict = {}
    for m in messages:
        by_conv.setdefault(m["conversation_id"], []).append(m)
    rows = {}
    for cid, c in conversations.items():
        msgs = by_conv.get(cid, [])
        if not window.contains(c["started_at"]) or not msgs:
            continue
        replies = [m for m in msgs if m["direction"] == "outbound"]
        times = [m["response_time"] for m in replies if m["response_time"] is not None]
        end = c["ended_at"] if c["ended_at"] is not None else max(m["created_at"] for m in msgs)
        rows[cid] = {
            "id": stable_uuid("conversation_metrics", cid),
            "conversation_id": cid,
            "bot_id": c["bot_id"],
            "organization_id": c["organization_id"],
            "started_at": c["started_at"],
            "ended_at": c["ended_at"],
            "duration_seconds": _seconds(end - c["started_at"]),
            "total_messages": len(msgs),
            "user_messages": sum(m["direction"] == "inbound" for m in msgs),
            "bot_messages": len(replies),
            "avg_response_time_ms": avg_ms(times),
            "p50_response_time_ms": percentile_ms(times, 0.5),
            "p95_response_time_ms": percentile_ms(times, 0.95),
            "p99_response_time_ms": percentile_ms(times, 0.99),
            "successful_responses": sum(m["outcome"] == "success" for m in replies),
            "failed_responses": sum(m["outcome"] == "failed" for m in replies),
            "fallback_responses": sum(m["outcome"] == "fallback" for m in replies),
            "handoff_triggered": c["handoff_at"] is not None or c["status"] == "escalated",
            "knowledge_base_hits": sum(m["knowledge_base_hit"] is True for m in replies),
            "knowledge_base_misses": sum(m["knowledge_base_hit"] is False for m in replies),
            "tokens_used": sum(m["tokens"] for m in msgs),
            "estimated_cost_usd": half_up(sum((m["cost"] for m in msgs), Decimal(0)), 6),
            "resolution_status": c["status"],
            "customer_satisfaction": c["customer_satisfaction"],
            **service_times(valid, c, msgs),
        }
    return rows


def _utc_date(ts) -> date:
    return ts.date()


def bot_performance_metrics(valid: Valid, window: Window) -> dict:
    """(bot, UTC date) -> row."""
    return _bot_days(valid, window, lambda bot, ts: _utc_date(ts), "bot_performance_metrics")


def bot_performance_metrics_local(valid: Valid, window: Window) -> dict:
    """(bot, date in its organization's zone) -> row: bot_performance_metrics by local day, plus the zone. A run over
    `window` (whole UTC days) covers the local days it overlaps, with the rows it loaded."""
    org_zone = {org: zone_of(name) for org, name in zip(valid.organizations["id"], valid.organizations["timezone"],
                                                         strict=True)}
    zone = {bot: org_zone[org] for bot, org in zip(valid.bots["id"], valid.bots["organization_id"], strict=True)}
    rows = _bot_days(valid, window, lambda bot, ts: ts.astimezone(zone[bot]).date(), "bot_performance_metrics_local")
    for (bot, _), row in rows.items():
        row["timezone"] = zone[bot].key
    return rows


def _bot_days(valid: Valid, window: Window, day_of, name: str) -> dict:
    """bot_performance_metrics' rows by `day_of(bot, instant)`, over the days `window` overlaps."""
    messages, conversations = in_scope(valid, window)
    per_conversation = conversation_metrics(valid, window)
    bot_org = dict(zip(valid.bots["id"], valid.bots["organization_id"], strict=True))

    def on(bot, ts, day=None) -> bool:
        """`ts` falls on `day` (none: on a day the window overlaps)."""
        if ts is None:
            return False
        if day is not None:
            return day_of(bot, ts) == day
        return day_of(bot, window.start) <= day_of(bot, ts) <= day_of(bot, window.end - timedelta(microseconds=1))

    keys = {(m["bot_id"], day_of(m["bot_id"], m["created_at"])) for m in messages}
    for c in conversations.values():
        for ts in (c["started_at"], c["ended_at"]):
            if on(c["bot_id"], ts):
                keys.add((c["bot_id"], day_of(c["bot_id"], ts)))
    rows = {}
    for bot, day in keys:
        msgs = [m for m in messages if m["bot_id"] == bot and on(bot, m["created_at"], day)]
        replies = [m for m in msgs if m["direction"] == "outbound"]
        times = [m["response_time"] for m in replies if m["response_time"] is not None]
        with_outcome = [m for m in replies if m["outcome"] is not None]
        kb = [m for m in replies if m["knowledge_base_hit"] is not None]
        convs = [c for c in conversations.values() if c["bot_id"] == bot]
        started = [c for c in convs if on(bot, c["started_at"], day)]
        ended = [c for c in convs if on(bot, c["ended_at"], day)]
        handoffs = [c for c in convs if on(bot, c["handoff_at"], day)]
        active = len({m["conversation_id"] for m in msgs})
        tokens = sum(m["tokens"] for m in msgs)
        cost = sum((m["cost"] for m in msgs), Decimal(0))
        rated = [c["customer_satisfaction"] for c in ended if c["customer_satisfaction"] is not None]
        durations = [_seconds(c["ended_at"] - c["started_at"]) for c in ended]
        rows[(bot, day)] = {
            "id": stable_uuid(name, bot, day.isoformat()),
            "bot_id": bot,
            "organization_id": bot_org[bot],
            "date": day,
            "total_conversations": len(started),
            "total_messages": len(msgs),
            "active_conversations": active,
            "avg_response_time_ms": avg_ms(times),
            "p50_response_time_ms": percentile_ms(times, 0.5),
            "p95_response_time_ms": percentile_ms(times, 0.95),
            "p99_response_time_ms": percentile_ms(times, 0.99),
            "success_rate": rate(sum(m["outcome"] == "success" for m in with_outcome), len(with_outcome)),
            "error_rate": rate(sum(m["outcome"] == "failed" for m in with_outcome), len(with_outcome)),
            "fallback_rate": rate(sum(m["outcome"] == "fallback" for m in with_outcome), len(with_outcome)),
            "handoff_rate": rate(len(handoffs), active),
            "knowledge_base_hit_rate": rate(sum(m["knowledge_base_hit"] is True for m in kb), len(kb)),
            "avg_tokens_per_conversation": None if active == 0 else int(ratio(tokens, active, 0)),
            "total_tokens_used": tokens,
            "total_cost_usd": half_up(cost, 2),
            "cost_per_conversation_usd": ratio(cost, active, 6),
            "avg_conversation_duration_secs": None if not durations else int(
                half_up(Fraction(sum(durations), len(durations)))),
            "avg_messages_per_conversation": ratio(len(msgs), active, 2),
            "customer_satisfaction_avg": None if not rated else half_up(Fraction(sum(rated), len(rated)), 2),
            **first_response_stats([r for r in per_conversation.values()
                                    if r["bot_id"] == bot and on(bot, r["started_at"], day)]),
        }
    return rows


def _hour(ts) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def usage_analytics(valid: Valid, window: Window, phones: dict) -> dict:
    """`phones`: conversation id -> customer_phone (the oracle counts clear-text phones)."""
    messages, conversations = in_scope(valid, window)
    events = [e for e in valid.api_events.to_dict("records") if window.contains(e["occurred_at"])]
    keys = {(m["organization_id"], _hour(m["created_at"])) for m in messages}
    keys |= {(e["organization_id"], _hour(e["occurred_at"])) for e in events}
    for c in conversations.values():
        for ts in (c["started_at"], c["ended_at"]):
            if window.contains(ts):
                keys.add((c["organization_id"], _hour(ts)))
    rows = {}
    for org, hour in keys:
        msgs = [m for m in messages if m["organization_id"] == org and _hour(m["created_at"]) == hour]
        per_bot: dict = {}
        for m in msgs:
            per_bot[m["bot_id"]] = per_bot.get(m["bot_id"], 0) + 1
        most = min(per_bot, key=lambda b: (-per_bot[b], str(b))) if per_bot else None
        evs = [e for e in events if e["organization_id"] == org and _hour(e["occurred_at"]) == hour]
        convs = [c for c in conversations.values() if c["organization_id"] == org]
        rows[(org, hour)] = {
            "id": stable_uuid("usage_analytics", org, hour.strftime("%Y-%m-%d %H:%M")),
            "organization_id": org,
            "hour": hour,
            "messages_sent": sum(m["direction"] == "outbound" for m in msgs),
            "messages_received": sum(m["direction"] == "inbound" for m in msgs),
            "conversations_started": sum(c["started_at"] is not None and _hour(c["started_at"]) == hour
                                         for c in convs),
            "conversations_ended": sum(c["ended_at"] is not None and _hour(c["ended_at"]) == hour
                                       and window.contains(c["ended_at"]) for c in convs),
            "active_users": len({phones[m["conversation_id"]] for m in msgs if m["direction"] == "inbound"}),
            "bots_active": len(per_bot),
            "most_active_bot_id": most,
            "api_calls_made": sum(e["kind"] == "api_call" for e in evs),
            "webhook_calls_received": sum(e["kind"] == "webhook_received" for e in evs),
            "tokens_used": sum(m["tokens"] for m in msgs),
            "estimated_cost_usd": half_up(sum((m["cost"] for m in msgs), Decimal(0)), 6),
        }
    return rows


def phone_map(src: dict[str, pd.DataFrame]) -> dict:
    return dict(zip(src["conversations"]["id"], src["conversations"]["customer_phone"], strict=True))


# -- service metrics (metrics.md "Service metrics (second edition)") -----------------------------------
@dataclass
class Schedule:
    """The seeds business_hours, holidays and sla_targets, read from their CSV files."""
    hours: dict[str, dict[int, list[tuple[int, int]]]]  # organization -> iso weekday -> [(opens, closes) minutes]
    holidays: set[tuple[str, date]]
    targets: dict[str, int]  # organization -> first_response_secs


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


@functools.cache
def load_schedule(seeds: Path = SEEDS) -> Schedule:
    hours: dict = {}
    with (seeds / "business_hours.csv").open() as f:
        for row in csv.DictReader(f):
            day = hours.setdefault(row["organization_id"], {}).setdefault(int(row["iso_weekday"]), [])
            day.append((_minutes(row["opens"]), _minutes(row["closes"])))
    with (seeds / "holidays.csv").open() as f:
        holidays = {(row["organization_id"], date.fromisoformat(row["local_date"])) for row in csv.DictReader(f)}
    with (seeds / "sla_targets.csv").open() as f:
        targets = {row["organization_id"]: int(row["first_response_secs"]) for row in csv.DictReader(f)}
    return Schedule(hours, holidays, targets)


@functools.cache
def _known_zones() -> dict[str, str]:
    return {z.lower(): z for z in zoneinfo.available_timezones()}


def zone_of(name) -> zoneinfo.ZoneInfo:
    """The organization's zone; a name no zone has (in any case) is UTC (repair organization_timezone_unknown)."""
    canonical = _known_zones().get(str(name).lower()) if name is not None else None
    return zoneinfo.ZoneInfo(canonical) if canonical else zoneinfo.ZoneInfo("UTC")


def local_to_utc(day: date, minute: int, tz: zoneinfo.ZoneInfo) -> datetime:
    """PostgreSQL's `timestamp at time zone tz`: a wall time in a gap takes the offset before the gap, one in
    an overlap the offset after it (the later instant)."""
    wall = datetime.combine(day, time()) + timedelta(minutes=minute)
    later = wall.replace(tzinfo=tz, fold=1)
    if later.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
        return later.astimezone(UTC)
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _micros(delta: timedelta) -> int:
    return delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds


def business_micros(schedule: Schedule, org: str, tz: zoneinfo.ZoneInfo, a: datetime, b: datetime) -> int:
    """The microseconds of [a, b) the organization is open, walking its local dates one by one."""
    days = schedule.hours.get(str(org))
    if days is None:
        return _micros(b - a)
    total = 0
    day, last = a.astimezone(tz).date(), b.astimezone(tz).date()
    while day <= last:
        if (str(org), day) not in schedule.holidays:
            for opens, closes in days.get(day.isoweekday(), []):
                lo, hi = max(a, local_to_utc(day, opens, tz)), min(b, local_to_utc(day, closes, tz))
                if hi > lo:
                    total += _micros(hi - lo)
        day += timedelta(days=1)
    return total


def service_times(valid: Valid, c: dict, msgs: list[dict], schedule: Schedule | None = None) -> dict:
    """The columns conversation_metrics gained, for conversation `c` and its messages."""
    schedule = schedule or load_schedule()
    zones = dict(zip(valid.organizations["id"], valid.organizations["timezone"], strict=True))
    tz = zone_of(zones.get(c["organization_id"]))
    org = c["organization_id"]
    inbound = [m["created_at"] for m in msgs if m["direction"] == "inbound"]
    first_in = min(inbound) if inbound else None
    replies = [m["created_at"] for m in msgs if m["direction"] == "outbound" and first_in is not None
               and m["created_at"] > first_in]
    first_reply = min(replies) if replies else None
    first_ms = business_ms = None
    if first_reply is not None:
        first_ms = _micros(first_reply - first_in) // 1000
        business_ms = business_micros(schedule, org, tz, first_in, first_reply) // 1000
    resolved = c["status"] == "resolved" and c["ended_at"] is not None
    target = schedule.targets.get(str(org))
    return {
        "first_response_time_ms": first_ms,
        "first_response_business_ms": business_ms,
        "resolution_time_secs": _seconds(c["ended_at"] - c["started_at"]) if resolved else None,
        "resolution_business_secs": business_micros(schedule, org, tz, c["started_at"], c["ended_at"]) // 1_000_000
        if resolved else None,
        "sla_first_response_met": None if target is None or business_ms is None else business_ms <= 1000 * target,
    }


def first_response_stats(rows: list[dict]) -> dict:
    """bot_performance_metrics' added columns over the conversation_metrics rows of a bot and date."""
    times = [r["first_response_time_ms"] for r in rows if r["first_response_time_ms"] is not None]
    verdicts = [r["sla_first_response_met"] for r in rows if r["sla_first_response_met"] is not None]
    return {
        "first_response_p50_ms": percentile_ms(times, 0.5),
        "first_response_p95_ms": percentile_ms(times, 0.95),
        "sla_met_rate": rate(sum(verdicts), len(verdicts)),
    }


BUCKET_EDGES_MS = [0, 250, 500, 1000, 2000, 3000, 5000, 10000, 30000, 60000]  # metrics.md, written out again


def response_time_histogram(valid: Valid, window: Window) -> dict:
    """(bot, hour, bucket lower edge) -> row, over the window's replies that have a response time."""
    messages, _ = in_scope(valid, window)
    rows: dict = {}
    for m in messages:
        if m["direction"] != "outbound" or m["response_time"] is None:
            continue
        lower = max(edge for edge in BUCKET_EDGES_MS if edge <= m["response_time"])
        upper = next((edge for edge in BUCKET_EDGES_MS if edge > lower), None)
        key = (m["bot_id"], _hour(m["created_at"]), lower)
        row = rows.setdefault(key, {"bot_id": m["bot_id"], "organization_id": m["organization_id"],
                                    "hour": key[1], "bucket_lower_ms": lower, "bucket_upper_ms": upper,
                                    "replies": 0})
        row["replies"] += 1
    return rows


ANOMALY_METRICS = ["p95_response_time_ms", "error_rate", "fallback_rate", "total_messages"]  # metrics.md, again


def metric_anomalies(bot_performance: dict) -> dict:
    """(bot, date, metric) -> row, from bot_performance_metrics rows (the oracle's): each bot's value on a date
    against the median and MAD of its non-null values on the 14 dates before it that have a row (at least 7).
    In double precision, as PostgreSQL's percentile_cont; the value itself stays exact."""
    by_bot: dict = {}
    for row in bot_performance.values():
        by_bot.setdefault(row["bot_id"], []).append(row)
    rows = {}
    for bot, days in by_bot.items():
        days.sort(key=lambda row: row["date"])
        for i, day in enumerate(days):
            for metric in ANOMALY_METRICS:
                history = [float(past[metric]) for past in days[max(0, i - 14):i] if past[metric] is not None]
                if day[metric] is None or len(history) < 7:
                    continue
                median = percentile_cont(history, 0.5)
                spread = 1.4826 * percentile_cont([abs(x - median) for x in history], 0.5)
                threshold = 3 * max(spread, 0.05 * abs(median), 1)
                if abs(float(day[metric]) - median) > threshold:
                    rows[(bot, day["date"], metric)] = {
                        "bot_id": bot, "organization_id": day["organization_id"], "date": day["date"],
                        "metric": metric, "value": Decimal(day[metric]), "baseline_median": median,
                        "threshold": threshold, "direction": "high" if float(day[metric]) > median else "low"}
    return rows
