"""A deterministic traffic simulator for BotFlow's app database (the warehouse's source).

Numbers are drawn with numpy per simulated day (seeded by `seed` and the date, so a day always
gets the same rows, whatever range it is simulated in) and written with COPY into typed temp
tables; PostgreSQL turns them into uuids and timestamps with one INSERT ... SELECT per table.
About 0.5% of rows break the contract in each of the ways metrics.md ("Bad rows") names.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

ORGANIZATIONS = [
    ("Acme Retail", "Africa/Johannesburg"),
    ("Globex Telecom", "Europe/London"),
    ("Initech Bank", "America/Sao_Paulo"),
    ("Umbrella Health", "Asia/Kolkata"),
]
# (organization index, bot name, default llm model, popularity weight)
BOTS = [
    (0, "Acme Support", "gpt-4o-mini", 5.0),
    (0, "Acme Sales", "gpt-4o", 2.0),
    (0, "Acme Returns", "claude-3-5-haiku", 1.5),
    (1, "Globex Billing", "gpt-4o-mini", 4.0),
    (1, "Globex Roaming", "llama-3.1-70b", 1.0),
    (1, "Globex Labs", "botflow-experimental", 0.5),  # a model with no price: costs 0, flagged by a check
    (2, "Initech Cards", "gpt-4o", 3.0),
    (2, "Initech Loans", "claude-3-5-haiku", 1.5),
    (3, "Umbrella Triage", "gpt-4o-mini", 3.0),
    (3, "Umbrella Pharmacy", "gpt-4o-mini", 1.0),
]
OVERRIDE_MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-70b"]
OUTCOMES = ["success", "fallback", "failed", None]
STATUSES = ["resolved", "escalated", "active"]

# Bad-row kinds, by table, as metrics.md "Bad rows" names them.
BAD_MESSAGE_KINDS = [
    "direction_unknown", "outcome_unknown", "conversation_missing", "created_at_null",
    "created_at_future", "response_time_negative", "inbound_fields", "tokens_negative",
]
BAD_CONVERSATION_KINDS = [
    "status_unknown", "bot_missing", "organization_missing", "started_at_null",
    "started_at_future", "ended_before_started", "csat_out_of_range",
]
BAD_EVENT_KINDS = ["kind_unknown", "occurred_at_future"]
BAD_SHARE = 0.005
FUTURE_EPOCH_US = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
US = 1_000_000

SOURCE_DDL = """
create table if not exists {s}.organizations (
  id uuid primary key, name text not null, timezone text not null default 'UTC',
  created_at timestamptz not null default now());
create table if not exists {s}.bots (
  id uuid primary key, organization_id uuid not null, name text not null, llm_model text,
  created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table if not exists {s}.conversations (
  id uuid primary key, organization_id uuid not null, bot_id uuid not null, customer_phone text not null,
  status text not null, started_at timestamptz, ended_at timestamptz, handoff_at timestamptz,
  customer_satisfaction smallint, updated_at timestamptz not null default now());
create table if not exists {s}.messages (
  id uuid primary key, conversation_id uuid not null, direction text not null, content text,
  created_at timestamptz, response_time_ms integer, outcome text, knowledge_base_hit boolean,
  llm_model text, prompt_tokens integer not null default 0, completion_tokens integer not null default 0,
  updated_at timestamptz not null default now());
create table if not exists {s}.api_events (
  id bigint generated always as identity primary key, organization_id uuid not null, bot_id uuid,
  kind text not null, occurred_at timestamptz not null);
create index if not exists messages_created_at_idx on {s}.messages (created_at);
create index if not exists messages_updated_at_idx on {s}.messages (updated_at);
create index if not exists conversations_updated_at_idx on {s}.conversations (updated_at);
create index if not exists conversations_started_at_idx on {s}.conversations (started_at);
create index if not exists api_events_occurred_at_idx on {s}.api_events (occurred_at);
"""


@dataclass
class SimulationSummary:
    days: int = 0
    conversations: int = 0
    messages: int = 0
    api_events: int = 0
    bad_rows: dict[str, int] = field(default_factory=dict)

    def add(self, other: SimulationSummary) -> None:
        self.days += other.days
        self.conversations += other.conversations
        self.messages += other.messages
        self.api_events += other.api_events
        for k, v in other.bad_rows.items():
            self.bad_rows[k] = self.bad_rows.get(k, 0) + v


def create_source_tables(conn: psycopg.Connection, schema: str) -> None:
    """The tables of source.sql, without CHECK and FOREIGN KEY constraints (as in production).

    The event timestamps (messages.created_at, conversations.started_at) are nullable too: the
    app's writers have produced nulls there, and the warehouse must quarantine such rows.
    """
    s = sql.Identifier(schema).as_string(conn)
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
    conn.execute(SOURCE_DDL.format(s=s))


def seed_directory(conn: psycopg.Connection, schema: str) -> None:
    """Organizations and bots; their ids are derived from their names (stable across runs)."""
    s = sql.Identifier(schema)
    created = datetime(2024, 1, 1, tzinfo=UTC)
    with conn.cursor() as cur:
        for name, tz in ORGANIZATIONS:
            cur.execute(
                sql.SQL(
                    "insert into {}.organizations (id, name, timezone, created_at) "
                    "values (md5('org:' || %s)::uuid, %s, %s, %s) on conflict (id) do nothing"
                ).format(s),
                (name, name, tz, created),
            )
        for org_idx, name, model, _ in BOTS:
            cur.execute(
                sql.SQL(
                    "insert into {}.bots (id, organization_id, name, llm_model, created_at, updated_at) "
                    "values (md5('bot:' || %s)::uuid, md5('org:' || %s)::uuid, %s, %s, %s, %s) "
                    "on conflict (id) do nothing"
                ).format(s),
                (name, ORGANIZATIONS[org_idx][0], name, model, created, created),
            )


def simulate(
    conn: psycopg.Connection,
    schema: str,
    start: date,
    days: int,
    seed: int,
    conversations_per_day: int = 400,
    progress=None,
) -> SimulationSummary:
    """Write `days` days of traffic from `start` (UTC) into the source; idempotent per (seed, day)."""
    if days < 1:
        raise ValueError("--days must be at least 1")
    if conversations_per_day < 1:
        raise ValueError("--conversations-per-day must be at least 1")
    create_source_tables(conn, schema)
    seed_directory(conn, schema)
    total = SimulationSummary()
    for offset in range(days):
        day = start + timedelta(days=offset)
        summary = _simulate_day(conn, schema, day, seed, conversations_per_day)
        conn.commit()
        total.add(summary)
        if progress:
            progress(f"simulated {day}: {summary.conversations} conversations, {summary.messages} messages")
    with conn.cursor() as cur:
        for table in ("organizations", "bots", "conversations", "messages", "api_events"):
            cur.execute(sql.SQL("analyze {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
    conn.commit()
    return total


def _assign_bad(rng: np.random.Generator, eligible: dict[str, np.ndarray], n_rows: int) -> np.ndarray:
    """A code per row: 0 = good, i+1 = the i-th bad kind; ~BAD_SHARE of rows, every kind at least once."""
    codes = np.zeros(n_rows, dtype=np.int16)
    kinds = list(eligible)
    per_kind = max(1, int(round(n_rows * BAD_SHARE / len(kinds))))
    for i, kind in enumerate(kinds):
        pool = eligible[kind][codes[eligible[kind]] == 0]
        if len(pool) == 0:
            continue
        chosen = rng.choice(pool, size=min(per_kind, len(pool)), replace=False)
        codes[chosen] = i + 1
    return codes


def _simulate_day(
    conn: psycopg.Connection, schema: str, day: date, seed: int, per_day: int
) -> SimulationSummary:
    rng = np.random.default_rng([seed, day.toordinal()])
    day_start_us = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * US)

    # -- conversations: a daily rhythm peaking mid-afternoon UTC ----------------------------------
    n_conv = int(rng.poisson(per_day))
    hours = np.arange(24)
    weights = 1.0 + 0.8 * np.cos(2 * np.pi * (hours - 14) / 24)
    start_hour = rng.choice(24, size=n_conv, p=weights / weights.sum())
    start_us = day_start_us + start_hour * 3600 * US + rng.integers(0, 3600 * US, size=n_conv)
    bot_weights = np.array([b[3] for b in BOTS])
    bot_idx = rng.choice(len(BOTS), size=n_conv, p=bot_weights / bot_weights.sum())
    turns = 1 + rng.poisson(3, size=n_conv)
    greeting = rng.random(n_conv) < 0.05  # the bot speaks first: a reply with no earlier inbound
    n_msgs = 2 * turns + greeting
    status = rng.choice(3, size=n_conv, p=[0.72, 0.10, 0.18])
    phone_idx = rng.integers(0, 20_000, size=n_conv)

    # -- messages ---------------------------------------------------------------------------------
    conv_of_msg = np.repeat(np.arange(n_conv), n_msgs)
    first_of_conv = np.concatenate([[0], np.cumsum(n_msgs)[:-1]])
    pos = np.arange(len(conv_of_msg)) - first_of_conv[conv_of_msg]
    outbound = np.where(greeting[conv_of_msg], pos % 2 == 0, pos % 2 == 1)
    n_m = len(conv_of_msg)
    rt_ms = np.clip(rng.lognormal(mean=7.0, sigma=0.6, size=n_m), 80, 60_000).astype(np.int64)
    jitter_us = rng.integers(0, 1000, size=n_m)
    think_us = (rng.exponential(45.0, size=n_m) * US).astype(np.int64) + US
    gap_us = np.where(outbound, rt_ms * 1000 + jitter_us, think_us)
    # some customers come back hours later: long conversations, many across midnight
    returns = (~outbound) & (pos > 1) & (rng.random(n_m) < 0.03)
    gap_us = gap_us + np.where(returns, (rng.exponential(4 * 3600, size=n_m) * US).astype(np.int64), 0)
    gap_us[first_of_conv] = rng.integers(0, 5 * US, size=n_conv)
    csum = np.cumsum(gap_us)
    created_us = start_us[conv_of_msg] + csum - (csum[first_of_conv] - gap_us[first_of_conv])[conv_of_msg]
    has_prior_inbound = ~(greeting[conv_of_msg] & (pos == 0))
    app_rt = np.where(outbound & has_prior_inbound & (rng.random(n_m) >= 0.15), rt_ms, -1)
    outcome = np.where(outbound, rng.choice(4, size=n_m, p=[0.85, 0.08, 0.05, 0.02]), 3)
    kb = np.where(outbound, rng.choice(3, size=n_m, p=[0.45, 0.30, 0.25]), 2)  # 0 hit, 1 miss, 2 null
    model = np.where(outbound & (rng.random(n_m) < 0.1), rng.integers(0, len(OVERRIDE_MODELS), n_m), -1)
    prompt = np.where(outbound, 150 + rng.poisson(600, size=n_m), 0)
    completion = np.where(outbound, 20 + rng.poisson(150, size=n_m), 0)
    late = rng.random(n_m) < 0.01  # a phone that was offline syncs hours late
    updated_us = created_us + np.where(
        late, (rng.exponential(3 * 3600, size=n_m) * US).astype(np.int64), rng.integers(0, 2 * US, size=n_m)
    )

    last_msg_us = created_us[first_of_conv + n_msgs - 1]
    ended_us = np.where(status < 2, last_msg_us + (rng.exponential(120, n_conv) * US).astype(np.int64), -1)
    handoff_pick = first_of_conv + rng.integers(0, n_msgs)
    handoff = (status == 1) | ((status == 0) & (rng.random(n_conv) < 0.03))
    handoff_us = np.where(handoff, created_us[handoff_pick] + US, -1)
    rated = (status < 2) & (rng.random(n_conv) < 0.4)
    csat = np.where(rated, rng.choice([1, 2, 3, 4, 5], size=n_conv, p=[0.05, 0.08, 0.17, 0.35, 0.35]), -1)
    conv_updated_us = np.where(
        rated, ended_us + (rng.exponential(6 * 3600, n_conv) * US).astype(np.int64),
        np.maximum(ended_us, last_msg_us),
    )

    # -- bad rows, each kind of metrics.md "Bad rows" --------------------------------------------
    all_m = np.arange(n_m)
    m_bad = _assign_bad(rng, {
        "direction_unknown": all_m, "outcome_unknown": all_m[outbound],
        "conversation_missing": all_m, "created_at_null": all_m, "created_at_future": all_m,
        "response_time_negative": all_m[outbound & (app_rt >= 0)], "inbound_fields": all_m[~outbound],
        "tokens_negative": all_m[outbound],
    }, n_m)
    all_c = np.arange(n_conv)
    c_bad = _assign_bad(rng, {
        "status_unknown": all_c, "bot_missing": all_c, "organization_missing": all_c,
        "started_at_null": all_c, "started_at_future": all_c, "ended_before_started": all_c[status < 2],
        "csat_out_of_range": all_c[rated],
    }, n_conv)

    # -- api events: api calls and webhooks per organization and hour ----------------------------
    org_of_bot = np.array([b[0] for b in BOTS])
    ev_rows = []
    for org in range(len(ORGANIZATIONS)):
        for kind_code, base in ((0, 6.0), (1, 10.0)):
            counts = rng.poisson(base * weights / weights.mean() * (per_day / 400))
            n = int(counts.sum())
            hrs = np.repeat(hours, counts)
            occ = day_start_us + hrs * 3600 * US + rng.integers(0, 3600 * US, size=n)
            bots_of_org = np.flatnonzero(org_of_bot == org)
            ev_rows.append(pd.DataFrame({
                "org_idx": org, "bot_idx": rng.choice(bots_of_org, size=n), "kind": kind_code, "occ_us": occ,
            }))
    events = pd.concat(ev_rows, ignore_index=True).sort_values("occ_us", kind="stable", ignore_index=True)
    e_bad = _assign_bad(rng, {k: np.arange(len(events)) for k in BAD_EVENT_KINDS}, len(events))
    events["bad"] = e_bad

    conversations = pd.DataFrame({
        "i": all_c, "bot_idx": bot_idx, "start_us": start_us, "status": status, "ended_us": ended_us,
        "handoff_us": handoff_us, "csat": csat, "updated_us": conv_updated_us, "phone_idx": phone_idx,
        "bad": c_bad,
    })
    messages = pd.DataFrame({
        "conv": conv_of_msg, "pos": pos, "outbound": outbound.astype(np.int8), "created_us": created_us,
        "rt": app_rt, "outcome": outcome, "kb": kb, "model": model, "prompt": prompt,
        "completion": completion, "updated_us": updated_us, "bad": m_bad,
    })
    _write_day(conn, schema, day, seed, conversations, messages, events)
    bad = {}
    for prefix, kinds, codes in (("message", BAD_MESSAGE_KINDS, m_bad),
                                 ("conversation", BAD_CONVERSATION_KINDS, c_bad),
                                 ("api_event", BAD_EVENT_KINDS, e_bad)):
        for i, kind in enumerate(kinds):
            bad[f"{prefix}_{kind}"] = int((codes == i + 1).sum())
    return SimulationSummary(1, n_conv, n_m, len(events), bad)


def _copy_frame(cur: psycopg.Cursor, table: str, frame: pd.DataFrame) -> None:
    cols = ", ".join(f"{c} bigint" for c in frame.columns)
    cur.execute(f"create temp table {table} ({cols}) on commit drop")
    buf = io.StringIO()
    frame.to_csv(buf, header=False, index=False)
    with cur.copy(f"copy {table} from stdin with (format csv)") as copy:
        copy.write(buf.getvalue())


def _array_sql(values: list[str | None]) -> str:
    items = ", ".join("null" if v is None else "'" + v.replace("'", "''") + "'" for v in values)
    return f"array[{items}]::text[]"


def _write_day(conn, schema, day, seed, conversations, messages, events) -> None:
    s = sql.Identifier(schema).as_string(conn)
    key = f"{seed}:{day.isoformat()}"
    bots = _array_sql([b[1] for b in BOTS])
    orgs = _array_sql([o[0] for o in ORGANIZATIONS])
    org_of_bot = _array_sql([ORGANIZATIONS[b[0]][0] for b in BOTS])
    c = BAD_CONVERSATION_KINDS.index
    m = BAD_MESSAGE_KINDS.index
    e = BAD_EVENT_KINDS.index
    ts = "(timestamptz 'epoch' + ({}) * interval '1 microsecond')"
    with conn.cursor() as cur:
        _copy_frame(cur, "sim_conversations", conversations)
        _copy_frame(cur, "sim_messages", messages)
        _copy_frame(cur, "sim_events", events)
        cur.execute(f"""
        insert into {s}.conversations (id, organization_id, bot_id, customer_phone, status, started_at,
            ended_at, handoff_at, customer_satisfaction, updated_at)
        select md5('conv:{key}:' || i)::uuid,
          case when bad = {c('organization_missing') + 1} then md5('missing-org:{key}:' || i)::uuid
               else md5('org:' || ({org_of_bot})[bot_idx + 1])::uuid end,
          case when bad = {c('bot_missing') + 1} then md5('missing-bot:{key}:' || i)::uuid
               else md5('bot:' || ({bots})[bot_idx + 1])::uuid end,
          '+2782' || lpad(phone_idx::text, 7, '0'),
          case when bad = {c('status_unknown') + 1} then 'pending'
               else (array['resolved','escalated','active'])[status + 1] end,
          case when bad = {c('started_at_null') + 1} then null
               when bad = {c('started_at_future') + 1} then {ts.format(FUTURE_EPOCH_US)} + i * interval '1 s'
               else {ts.format('start_us')} end,
          case when bad = {c('ended_before_started') + 1} then {ts.format('start_us')} - interval '1 hour'
               when ended_us < 0 then null else {ts.format('ended_us')} end,
          case when handoff_us < 0 then null else {ts.format('handoff_us')} end,
          case when bad = {c('csat_out_of_range') + 1} then (array[0, 7])[1 + i % 2]
               when csat < 0 then null else csat end,
          least({ts.format('updated_us')}, now())  -- a rating given "later" cannot be after now
        from sim_conversations
        on conflict (id) do nothing""")
        cur.execute(f"""
        insert into {s}.messages (id, conversation_id, direction, content, created_at, response_time_ms,
            outcome, knowledge_base_hit, llm_model, prompt_tokens, completion_tokens, updated_at)
        select md5('msg:{key}:' || m.conv || ':' || m.pos)::uuid,
          case when m.bad = {m('conversation_missing') + 1} then md5('missing-conv:{key}:' || m.conv)::uuid
               else md5('conv:{key}:' || m.conv)::uuid end,
          case when m.bad = {m('direction_unknown') + 1} then 'sideways'
               when m.outbound = 1 then 'outbound' else 'inbound' end,
          case when m.outbound = 1 then 'bot reply ' || m.pos else 'customer message ' || m.pos end,
          case when m.bad = {m('created_at_null') + 1} then null
               when m.bad = {m('created_at_future') + 1} then {ts.format(FUTURE_EPOCH_US)} + m.pos * interval '1 s'
               else {ts.format('m.created_us')} end,
          case when m.bad = {m('response_time_negative') + 1} then -m.rt
               when m.rt < 0 then null else m.rt end,
          case when m.bad = {m('outcome_unknown') + 1} then 'maybe'
               when m.bad = {m('inbound_fields') + 1} then 'success'
               else (array['success','fallback','failed',null])[m.outcome + 1] end,
          case when m.bad = {m('inbound_fields') + 1} then true
               else (array[true, false, null])[m.kb + 1] end,
          case when m.model < 0 then null else ({_array_sql(OVERRIDE_MODELS)})[m.model + 1] end,
          case when m.bad = {m('tokens_negative') + 1} then -m.prompt
               when m.bad = {m('inbound_fields') + 1} then 500 else m.prompt end,
          case when m.bad = {m('inbound_fields') + 1} then 50 else m.completion end,
          least({ts.format('m.updated_us')}, now())
        from sim_messages m
        on conflict (id) do nothing""")
        lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
        cur.execute(
            f"delete from {s}.api_events where occurred_at >= %s and occurred_at < %s "
            f"and organization_id = any(select md5('org:' || n)::uuid from unnest({orgs}) n)",
            (lo, lo + timedelta(days=1)),
        )
        future_lo = FUTURE_EPOCH_US + (day.toordinal() - date(2000, 1, 1).toordinal()) * 86400 * US
        cur.execute(
            f"delete from {s}.api_events where occurred_at >= {ts.format(future_lo)} "
            f"and occurred_at < {ts.format(future_lo + 86400 * US)}"
        )
        cur.execute(f"""
        insert into {s}.api_events (organization_id, bot_id, kind, occurred_at)
        select md5('org:' || ({orgs})[org_idx + 1])::uuid, md5('bot:' || ({bots})[bot_idx + 1])::uuid,
          case when bad = {e('kind_unknown') + 1} then 'ping'
               else (array['api_call','webhook_received'])[kind + 1] end,
          case when bad = {e('occurred_at_future') + 1} then {ts.format(future_lo)} + (occ_us % 86400000000)
               * interval '1 microsecond' else {ts.format('occ_us')} end
        from sim_events order by occ_us""")


class Trickle:
    """Real-time traffic for the live feed: each `step()` writes one message with created_at = now.

    Conversations start, alternate inbound/outbound messages (replies with a lognormal response
    time, sometimes without response_time_ms) and end; every write commits on its own, as the app does.
    """

    def __init__(self, conn: psycopg.Connection, schema: str, seed: int = 0):
        self.conn = conn
        self.s = sql.Identifier(schema)
        self.rng = np.random.default_rng(seed)
        self.open: list[dict] = []
        create_source_tables(conn, schema)
        seed_directory(conn, schema)
        conn.commit()
        self.bots = [(f"bot:{b[1]}", f"org:{ORGANIZATIONS[b[0]][0]}") for b in BOTS]

    def step(self) -> tuple[str, datetime]:
        """Write one message (starting or ending a conversation when due); return its id and created_at."""
        now = datetime.now(UTC)
        if not self.open or self.rng.random() < 0.2:
            bot_key, org_key = self.bots[int(self.rng.integers(len(self.bots)))]
            row = self.conn.execute(
                sql.SQL("insert into {}.conversations (id, organization_id, bot_id, customer_phone, status, "
                        "started_at, updated_at) values (gen_random_uuid(), md5(%s)::uuid, md5(%s)::uuid, %s, "
                        "'active', %s, %s) returning id").format(self.s),
                (org_key, bot_key, f"+2783{int(self.rng.integers(0, 10**7)):07d}", now, now)).fetchone()
            self.open.append({"id": row[0], "next": "inbound"})
        conv = self.open[int(self.rng.integers(len(self.open)))]
        direction = conv["next"]
        outbound = direction == "outbound"
        rt = int(np.clip(self.rng.lognormal(7.0, 0.6), 80, 60_000)) if outbound and self.rng.random() > 0.15 else None
        outcome = str(self.rng.choice(["success", "success", "success", "fallback", "failed"])) if outbound else None
        row = self.conn.execute(
            sql.SQL("insert into {}.messages (id, conversation_id, direction, content, created_at, response_time_ms, "
                    "outcome, prompt_tokens, completion_tokens, updated_at) values (gen_random_uuid(), %s, %s, "
                    "'live', %s, %s, %s, %s, %s, %s) returning id").format(self.s),
            (conv["id"], direction, now, rt, outcome, 600 if outbound else 0, 120 if outbound else 0, now),
        ).fetchone()
        conv["next"] = "inbound" if outbound else "outbound"
        if outbound and self.rng.random() < 0.15:
            self.conn.execute(
                sql.SQL("update {}.conversations set status = 'resolved', ended_at = %s, updated_at = %s "
                        "where id = %s").format(self.s), (now, now, conv["id"]))
            self.open.remove(conv)
        self.conn.commit()
        return str(row[0]), now
