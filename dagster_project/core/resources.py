"""Resources: the source (app) database, the warehouse, and dbt. All configured from the environment."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg

from dagster_project.core.db import connect


class SourceDatabase(dg.ConfigurableResource):
    """BotFlow's app database; the warehouse only ever reads it."""

    url: str
    schema_name: str = "public"
    phone_hash_key: str

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with connect(self.url, setting="BOTFLOW_SOURCE_URL") as conn:
            yield conn


class WarehouseDatabase(dg.ConfigurableResource):
    """The analytics warehouse (raw, staging, intermediate, marts schemas)."""

    url: str

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with connect(self.url, setting="BOTFLOW_WAREHOUSE_URL") as conn:
            yield conn


def database_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "source": SourceDatabase(
            url=dg.EnvVar("BOTFLOW_SOURCE_URL"),
            schema_name=dg.EnvVar("BOTFLOW_SOURCE_SCHEMA"),
            phone_hash_key=dg.EnvVar("BOTFLOW_PHONE_HASH_KEY"),
        ),
        "warehouse": WarehouseDatabase(url=dg.EnvVar("BOTFLOW_WAREHOUSE_URL")),
    }
