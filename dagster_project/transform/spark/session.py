"""The Spark session of this process, on the cluster `botflow spark up` started."""

from __future__ import annotations

from typing import Any

from dagster_project.core.settings import ConfigError, publish
from dagster_project.transform.spark.cluster import SparkCluster

METASTORE_KEY = "spark.hadoop.javax.jdo.option.ConnectionURL"


def spark_session(cluster: SparkCluster, app_name: str = "botflow") -> Any:
    """This process's session (one per process: dbt-spark's `session` method finds the same one), with the
    cluster's settings (SparkCluster.conf: the metastore and the Parquet folder of this warehouse)."""
    if not cluster.is_running():
        raise ConfigError(f"no Spark master answers on {cluster.master_url}: start it with `botflow spark up`")
    publish(cluster.environment())  # read by the JVM that pyspark launches now
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    active = SparkContext._active_spark_context
    if active is not None:  # refused before the builder's settings reach the existing session
        _refuse_another_metastore(active.getConf().get(METASTORE_KEY), cluster.conf()[METASTORE_KEY])

    builder = SparkSession.builder.appName(app_name).enableHiveSupport()
    for key, value in cluster.conf().items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    _refuse_another_metastore(session.sparkContext.getConf().get(METASTORE_KEY), cluster.conf()[METASTORE_KEY])
    session.sparkContext.setLogLevel("ERROR")
    return session


def _refuse_another_metastore(metastore: str | None, wanted: str) -> None:
    if metastore != wanted:
        raise ConfigError(f"this process's Spark session uses the metastore {metastore}, not {wanted}: "
                          "one warehouse per process on the Spark engine")


def stop_session() -> None:
    """Stop this process's Spark session, if one was started, so that its executors leave the cluster before
    the workers stop."""
    import sys

    pyspark = sys.modules.get("pyspark")
    if pyspark is not None and pyspark.SparkContext._active_spark_context is not None:
        pyspark.SparkContext._active_spark_context.stop()
