"""Connections to the source and the warehouse, with errors that name the setting to fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from dagster_project.core.settings import ConfigError, redact, scrub


@contextmanager
def connect(url: str, *, setting: str, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A psycopg connection in UTC; an unreachable database raises ConfigError naming `setting`."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, options="-c timezone=UTC", connect_timeout=10)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot connect to {setting}={redact(url)}: {scrub(reason, url)}") from None
    try:
        yield conn
    finally:
        conn.close()
