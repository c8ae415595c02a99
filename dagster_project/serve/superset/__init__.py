"""Superset: a local service, dashboards as code, read-only access and row-level security."""
