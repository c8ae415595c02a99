"""The Spark engine (docs/spark.md): a standalone cluster, raw landed as Parquet, the dbt models on
Spark, and the marts published into PostgreSQL for serving."""
