"""The warehouse's raw layer: validated copies of the source rows, quarantine and repair counts."""

from __future__ import annotations

import psycopg

from dagster_project.core.tenancy import ensure_tenancy

RAW_DDL = """
create schema if not exists raw;

-- a timestamp that does not parse becomes null, and the row is rejected by the rule that needs it
create or replace function raw.try_timestamptz(v text) returns timestamptz
-- parallel restricted: an exception block cannot run in a parallel worker
language plpgsql stable parallel restricted as $$
begin
  return v::timestamptz;
exception when others then
  return null;
end $$;

-- replaced by the landing table land_organization_zones (rules.py): one scan of pg_timezone_names per load
drop function if exists raw.known_timezone(text);

create table if not exists raw.organizations (
  id uuid primary key, name text, timezone text, created_at timestamptz,
  _run_id text, _loaded_at timestamptz not null default now());

create table if not exists raw.bots (
  id uuid primary key, organization_id uuid, name text, llm_model text,
  created_at timestamptz, updated_at timestamptz,
  _run_id text, _loaded_at timestamptz not null default now());

create table if not exists raw.conversations (
  id uuid primary key, organization_id uuid not null, bot_id uuid not null,
  customer_phone_hash text, customer_phone_last4 text, status text not null,
  started_at timestamptz not null, ended_at timestamptz, handoff_at timestamptz,
  customer_satisfaction smallint, updated_at timestamptz,
  repaired_rules text[] not null default '{}',
  _run_id text, _loaded_at timestamptz not null default now());
create index if not exists conversations_started_at_idx on raw.conversations (started_at);
create index if not exists conversations_ended_at_idx on raw.conversations (ended_at);
create index if not exists conversations_handoff_at_idx on raw.conversations (handoff_at);

create table if not exists raw.messages (
  id uuid primary key, conversation_id uuid not null, direction text not null,
  created_at timestamptz not null, response_time_ms integer, outcome text, knowledge_base_hit boolean,
  llm_model text, prompt_tokens integer not null, completion_tokens integer not null,
  updated_at timestamptz, repaired_rules text[] not null default '{}',
  _run_id text, _loaded_at timestamptz not null default now());
create index if not exists messages_created_at_idx on raw.messages (created_at);
create index if not exists messages_conversation_id_idx on raw.messages (conversation_id, created_at);

create table if not exists raw.api_events (
  id bigint primary key, organization_id uuid not null, bot_id uuid, kind text not null,
  occurred_at timestamptz not null,
  _run_id text, _loaded_at timestamptz not null default now());
create index if not exists api_events_occurred_at_idx on raw.api_events (occurred_at);

-- each row's version hash, the tie-break between versions of an id with the same updated_at (rules.py)
alter table raw.conversations add column if not exists _version bigint;
alter table raw.messages add column if not exists _version bigint;
alter table raw.api_events add column if not exists _version bigint;

-- rows whose meaning is unknown: kept here with the rule they broke, never in a metric.
-- partition_hour is null for rows swept up because their timestamp is null or in the future.
create table if not exists raw.quarantine (
  source_table text not null, source_id text, rule text not null, partition_hour timestamptz,
  run_id text, quarantined_at timestamptz not null default now(), source_row jsonb);
create index if not exists quarantine_partition_idx on raw.quarantine (source_table, partition_hour);

-- rows kept after a repair, counted per rule and hourly partition
create table if not exists raw.repairs (
  source_table text not null, rule text not null, partition_hour timestamptz not null,
  repaired_rows integer not null, run_id text, counted_at timestamptz not null default now());
create index if not exists repairs_partition_idx on raw.repairs (source_table, partition_hour);

-- per source table and hour: the rows a load read and a checksum of their ids and updated_at
-- (ingest/checksums.py); reconciliation compares them with the source as it is now
create table if not exists raw.source_checksums (
  source_table text not null, hour timestamptz not null, rows bigint not null, checksum numeric not null,
  run_id text, recorded_at timestamptz not null default now(), primary key (source_table, hour));

-- hours whose marts are out of date, found by a load (a newer version moved a row out of them, a
-- bot's default model changed) or by reconciliation, with the first reason found; change capture
-- requests each one once, and the next load of the hour removes it
create table if not exists raw.stale_hours (
  hour timestamptz primary key, reason text not null, found_by text not null, run_id text,
  found_at timestamptz not null default now());

-- one row per reconciliation: what it compared and what differed
create table if not exists raw.reconciliation_log (
  checked_at timestamptz not null default now(), range_start timestamptz not null,
  range_end timestamptz not null, hours_compared integer not null, drifted_hours integer not null,
  drift jsonb not null, run_id text);

-- one row per loaded window: what was read, loaded, rejected and repaired
create table if not exists raw.ingest_log (
  window_start timestamptz not null, window_end timestamptz not null, run_id text,
  loaded_at timestamptz not null default now(), source_rows jsonb, loaded_rows jsonb,
  rejected_rows integer, repaired_rows integer);
"""


def ensure_raw_schema(conn: psycopg.Connection) -> None:
    """Create the raw layer if absent (idempotent); serialised so concurrent runs don't race."""
    conn.execute("select pg_advisory_xact_lock(hashtext('botflow.raw.ddl'))")
    conn.execute(RAW_DDL)
    ensure_tenancy(conn)  # before any mart exists: dbt's post-hooks call security.isolate()
