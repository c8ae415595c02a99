"""The Spark session of this process, on the cluster `botflow spark up` started."""

from __future__ import annotations

from typing import Any

from dagster_project.core.settings import publish
from dagster_project.transform.spark.cluster import SparkCluster


def spark_session(cluster: SparkCluster, app_name: str = "botflow") -> Any:
    """This process's session (one per process: dbt-spark's `session` method finds the same one). Its
    settings come from the cluster's spark-defaults.conf, read when the JVM starts."""
    if not cluster.is_running():
        from dagster_project.core.settings import ConfigError

        raise ConfigError(f"no Spark master answers on {cluster.master_url}: start it with `botflow spark up`")
    publish(cluster.environment())  # read by the JVM that pyspark launches now
    from pyspark.sql import SparkSession

    session = SparkSession.builder.appName(app_name).enableHiveSupport().getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
