"""What the Spark executors run in Python (pickled by reference: the executors import this module, so it
imports nothing heavy). They run this virtualenv's Python (PYSPARK_PYTHON), psycopg included."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg


def copy_rows(rows: Iterable[Any], warehouse_url: str, statement: str) -> None:
    """An executor's share of a mart's rows (every value as text, timestamps in UTC) into the scratch table of
    the warehouse, by one COPY (publish.publish_window)."""
    with psycopg.connect(warehouse_url, options="-c timezone=UTC") as conn, conn.cursor() as cursor, \
            cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
