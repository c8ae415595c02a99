"""The marts' columns, in the order metrics.md gives them, and how to compare them with the oracle."""

from __future__ import annotations

from conftest import fetch_table

CONVERSATION_METRICS = [
    "id", "conversation_id", "bot_id", "organization_id", "started_at", "ended_at", "duration_seconds",
    "total_messages", "user_messages", "bot_messages", "avg_response_time_ms", "p50_response_time_ms",
    "p95_response_time_ms", "p99_response_time_ms", "successful_responses", "failed_responses",
    "fallback_responses", "handoff_triggered", "knowledge_base_hits", "knowledge_base_misses",
    "tokens_used", "estimated_cost_usd", "resolution_status", "customer_satisfaction",
    # Service metrics (second edition)
    "first_response_time_ms", "first_response_business_ms", "resolution_time_secs", "resolution_business_secs",
    "sla_first_response_met",
]
BOT_PERFORMANCE_METRICS = [
    "id", "bot_id", "organization_id", "date", "total_conversations", "total_messages",
    "active_conversations", "avg_response_time_ms", "p50_response_time_ms", "p95_response_time_ms",
    "p99_response_time_ms", "success_rate", "error_rate", "fallback_rate", "handoff_rate",
    "knowledge_base_hit_rate", "avg_tokens_per_conversation", "total_tokens_used", "total_cost_usd",
    "cost_per_conversation_usd", "avg_conversation_duration_secs", "avg_messages_per_conversation",
    "customer_satisfaction_avg",
    # Service metrics (second edition)
    "first_response_p50_ms", "first_response_p95_ms", "sla_met_rate",
]
BOT_PERFORMANCE_METRICS_LOCAL = [*BOT_PERFORMANCE_METRICS, "timezone"]
USAGE_ANALYTICS = [
    "id", "organization_id", "hour", "messages_sent", "messages_received", "conversations_started",
    "conversations_ended", "active_users", "bots_active", "most_active_bot_id", "api_calls_made",
    "webhook_calls_received", "tokens_used", "estimated_cost_usd",
]
RESPONSE_TIME_HISTOGRAM = ["bot_id", "organization_id", "hour", "bucket_lower_ms", "bucket_upper_ms", "replies"]
METRIC_ANOMALIES = ["bot_id", "organization_id", "date", "metric", "value", "baseline_median", "threshold",
                    "direction"]
MARTS = {
    "marts.conversation_metrics": (CONVERSATION_METRICS, ("conversation_id",)),
    "marts.bot_performance_metrics": (BOT_PERFORMANCE_METRICS, ("bot_id", "date")),
    "marts.bot_performance_metrics_local": (BOT_PERFORMANCE_METRICS_LOCAL, ("bot_id", "date")),
    "marts.usage_analytics": (USAGE_ANALYTICS, ("organization_id", "hour")),
    "marts.response_time_histogram": (RESPONSE_TIME_HISTOGRAM, ("bot_id", "hour", "bucket_lower_ms")),
    "marts.metric_anomalies": (METRIC_ANOMALIES, ("bot_id", "date", "metric")),
}


def mart_rows(warehouse_url: str, table: str) -> dict:
    columns, key = MARTS[table]
    rows = fetch_table(warehouse_url, table, ", ".join(key))
    if rows:
        assert list(rows[0].keys()) == columns, f"{table} columns differ from the contract's order"
    keyed = {}
    for row in rows:
        k = row[key[0]] if len(key) == 1 else tuple(row[c] for c in key)
        assert k not in keyed, f"{table}: duplicate key {k}"
        keyed[k] = row
    return keyed


def assert_equal_to_oracle(table: str, actual: dict, expected: dict) -> int:
    """Every row and every column equal; returns the number of values compared."""
    missing = sorted(map(str, set(expected) - set(actual)))[:5]
    extra = sorted(map(str, set(actual) - set(expected)))[:5]
    assert not missing and not extra, f"{table}: rows missing {missing}, unexpected {extra}"
    mismatches = []
    compared = 0
    for key, exp in expected.items():
        act = actual[key]
        for column in MARTS[table][0]:
            compared += 1
            if act[column] != exp[column]:
                mismatches.append(f"{key} {column}: mart={act[column]!r} oracle={exp[column]!r}")
    assert not mismatches, f"{table}: {len(mismatches)} values differ:\n" + "\n".join(mismatches[:20])
    return compared
