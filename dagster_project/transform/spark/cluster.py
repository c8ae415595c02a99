"""A Spark standalone cluster on this machine: a master and workers as separate processes, and the Hive
metastore (the catalog of the Parquet tables) in PostgreSQL, so that it survives restarts and serves
every process that opens a session.

`botflow spark up` starts it and writes `$BOTFLOW_HOME/spark/conf/spark-defaults.conf`: every Spark
session BotFlow opens (the lander, dbt-spark, the publisher, `spark-sql` by hand with SPARK_CONF_DIR)
reads its settings from there, the one place they are written. `down` stops the processes; the
metastore and the Parquet files stay.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg

from dagster_project.core.settings import (
    ConfigError,
    botflow_home,
    ensure_databases,
    process_environment,
    setting,
    setting_number,
    with_database,
)

POSTGRES_JDBC_JAR = Path("/usr/share/java/postgresql.jar")  # Debian's libpostgresql-jdbc-java
METASTORE_SUFFIX = "_metastore"  # the default metastore: <warehouse database>_metastore, beside it
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def spark_home() -> Path:
    """The Spark runtime that PyPI's pyspark carries (the `spark` extra)."""
    try:
        import pyspark
    except ImportError:
        raise ConfigError("the Spark engine needs pyspark and dbt-spark: .venv/bin/pip install -e '.[spark]'") from None
    return Path(pyspark.__file__).parent


def jdbc_jar() -> Path:
    if not POSTGRES_JDBC_JAR.exists():
        raise ConfigError(f"{POSTGRES_JDBC_JAR} is missing: install Debian's libpostgresql-jdbc-java "
                          "(PostgreSQL's JDBC driver, for the metastore and the publisher)")
    return POSTGRES_JDBC_JAR


def metastore_beside(warehouse_url: str) -> str:
    """The default metastore: a database of its own per warehouse (its tables name Parquet folders that
    belong to that warehouse's marts: two warehouses must never share one)."""
    name = psycopg.conninfo.conninfo_to_dict(warehouse_url).get("dbname") or "botflow_warehouse"
    return with_database(warehouse_url, f"{name}{METASTORE_SUFFIX}")


def jdbc_url(url: str) -> tuple[str, dict[str, str]]:
    """A postgresql:// URL as a JDBC URL and its connection properties (the password stays out of the URL)."""
    parts = psycopg.conninfo.conninfo_to_dict(url)
    jdbc = f"jdbc:postgresql://{parts.get('host') or '127.0.0.1'}:{parts.get('port') or 5432}/{parts['dbname']}"
    return jdbc, {"user": str(parts.get("user") or "postgres"), "password": str(parts.get("password") or ""),
                  "driver": "org.postgresql.Driver"}


@dataclass(frozen=True)
class SparkCluster:
    home: Path  # $BOTFLOW_HOME/spark: conf/, logs/, pids, work dirs, the warehouse's Parquet files
    master_port: int
    workers: int
    worker_cores: int
    worker_memory: str
    metastore_url: str

    @classmethod
    def from_env(cls, warehouse_url: str) -> SparkCluster:
        """The cluster of the settings; its metastore defaults to a database beside the warehouse."""
        return cls(
            home=Path(setting("BOTFLOW_SPARK_DIR") or botflow_home() / "spark").resolve(),
            master_port=int(setting_number("BOTFLOW_SPARK_MASTER_PORT", int, positive=True)),
            workers=int(setting_number("BOTFLOW_SPARK_WORKERS", int, positive=True)),
            worker_cores=int(setting_number("BOTFLOW_SPARK_WORKER_CORES", int, positive=True)),
            worker_memory=setting("BOTFLOW_SPARK_WORKER_MEMORY"),
            metastore_url=setting("BOTFLOW_SPARK_METASTORE_URL")
            or metastore_beside(warehouse_url),
        )

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    @property
    def conf_dir(self) -> Path:
        return self.home / "conf"

    @property
    def warehouse_dir(self) -> Path:
        """The Parquet files of the metastore's tables: a folder per metastore."""
        return self.home / "warehouse" / psycopg.conninfo.conninfo_to_dict(self.metastore_url)["dbname"]

    def conf(self) -> dict[str, str]:
        """Every session's settings (spark-defaults.conf)."""
        jar = str(jdbc_jar())
        metastore, props = jdbc_url(self.metastore_url)
        return {
            "spark.master": self.master_url,
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.sql.session.timeZone": "UTC",  # a timestamp's UTC hour is its hour (dbt/macros/engine.sql)
            "spark.sql.warehouse.dir": str(self.warehouse_dir),
            "spark.sql.catalogImplementation": "hive",
            "spark.sql.sources.partitionOverwriteMode": "dynamic",  # insert overwrite replaces the partitions it writes
            "spark.sql.shuffle.partitions": str(max(2, self.workers * self.worker_cores * 2)),
            "spark.executor.memory": "640m" if self.worker_memory == "1g" else self.worker_memory,
            # timestamps cross JDBC as local times of the JVM: UTC, as the warehouse's sessions
            "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
            "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
            "spark.driver.extraClassPath": jar,
            "spark.executor.extraClassPath": jar,
            "spark.ui.showConsoleProgress": "false",
            "spark.ui.enabled": "false",
            "spark.hadoop.javax.jdo.option.ConnectionURL": metastore,
            "spark.hadoop.javax.jdo.option.ConnectionDriverName": props["driver"],
            "spark.hadoop.javax.jdo.option.ConnectionUserName": props["user"],
            "spark.hadoop.javax.jdo.option.ConnectionPassword": props["password"],
            "spark.hadoop.hive.metastore.schema.verification": "false",
            "spark.hadoop.datanucleus.schema.autoCreateAll": "false",  # created once by ensure_metastore
        }

    def environment(self) -> dict[str, str]:
        """What a process that opens a session needs: the conf folder, the loopback address, Spark's home."""
        return {"SPARK_CONF_DIR": str(self.conf_dir), "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_HOME": str(spark_home()), "PYSPARK_PYTHON": sys.executable}

    def write_conf(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        # it holds the metastore's password when there is one: readable by this user only, from its creation
        _write_private(self.conf_dir / "spark-defaults.conf",
                       "".join(f"{key} {value}\n" for key, value in self.conf().items()))
        (self.conf_dir / "log4j2.properties").write_text(LOG4J)

    def ensure_metastore(self) -> None:
        """Create the metastore's database and its tables, once. DataNucleus's lazy creation
        (autoCreateAll) deadlocks on PostgreSQL (a foreign key added while another connection of the same
        session holds the referenced table), so the schema is created up front, by DataNucleus's SchemaTool
        from the Hive metastore's JDO mapping, as Hive's schematool would."""
        if not setting("BOTFLOW_SPARK_METASTORE_URL"):
            name = psycopg.conninfo.conninfo_to_dict(self.metastore_url)["dbname"]
            ensure_databases(with_database(self.metastore_url, "postgres"), [name])
        with psycopg.connect(self.metastore_url) as conn:
            if conn.execute("select to_regclass('public.\"DBS\"')").fetchone()[0] is not None:
                return
        jars = spark_home() / "jars"
        metastore_jar = next(jars.glob("hive-metastore-*.jar"))
        self.home.mkdir(parents=True, exist_ok=True)
        _extract(metastore_jar, "package.jdo", self.home / "jdo")
        jdbc, props = jdbc_url(self.metastore_url)
        properties = self.home / "metastore.properties"
        _write_private(
            properties,
            f"javax.jdo.option.ConnectionURL={jdbc}\njavax.jdo.option.ConnectionDriverName={props['driver']}\n"
            f"javax.jdo.option.ConnectionUserName={props['user']}\njavax.jdo.option.ConnectionPassword={props['password']}\n"
            "datanucleus.identifierFactory=datanucleus1\ndatanucleus.rdbms.useLegacyNativeValueStrategy=true\n"
            "datanucleus.storeManagerType=rdbms\n")
        with (self.logs / "metastore-schema.log").open("w") as log:
            result = subprocess.run(["java", "-cp", f"{jars}/*:{jdbc_jar()}", "org.datanucleus.store.schema.SchemaTool",
                                     "-create", "-api", "JDO", "-props", str(properties),
                                     str(self.home / "jdo" / "package.jdo")], stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise ConfigError(f"creating the Spark metastore's tables failed; see {self.logs / 'metastore-schema.log'}")

    @property
    def logs(self) -> Path:
        path = self.home / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _pid_file(self, name: str) -> Path:
        return self.home / f"{name}.pid"

    def _start(self, name: str, args: list[str]) -> None:
        env = {**process_environment(), **self.environment(), "SPARK_LOG_DIR": str(self.logs),
               "SPARK_NO_DAEMONIZE": "1"}
        with (self.logs / f"{name}.log").open("w") as log:
            process = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], env=env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._pid_file(name).write_text(str(process.pid))

    def is_running(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(1)
            return probe.connect_ex(("127.0.0.1", self.master_port)) == 0

    @property
    def web_ui(self) -> str:
        return f"http://127.0.0.1:{self.master_port + 1000}"

    def alive_workers(self) -> int:
        """The workers the master counts alive (its web UI's JSON)."""
        try:
            with urllib.request.urlopen(f"{self.web_ui}/json/", timeout=2) as response:
                return int(json.load(response).get("aliveworkers", 0))
        except (OSError, ValueError):
            return 0

    def up(self, progress=print, timeout: float = 90) -> None:
        """Start the master and the workers (if the master is not up yet); wait until every worker registered."""
        self.write_conf()
        self.ensure_metastore()
        if self.is_running():
            progress(f"Spark master already answers on {self.master_url}")
            return
        self._start("master", [MASTER_CLASS, "--host", "127.0.0.1", "--port", str(self.master_port),
                                          "--webui-port", str(self.master_port + 1000)])
        for number in range(1, self.workers + 1):
            work = self.home / f"worker-{number}"
            work.mkdir(parents=True, exist_ok=True)
            self._start(f"worker-{number}", [WORKER_CLASS, "--host", "127.0.0.1", "--cores", str(self.worker_cores),
                                             "--memory", self.worker_memory, "--webui-port", "0",
                                             "--work-dir", str(work), self.master_url])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_running() and self.alive_workers() >= self.workers:
                progress(f"Spark master on {self.master_url} with {self.workers} workers (logs: {self.logs})")
                return
            time.sleep(0.5)
        raise ConfigError(f"the Spark cluster did not come up within {timeout:.0f} s ({self.alive_workers()} "
                          f"of {self.workers} workers registered); see {self.logs} "
                          "(BOTFLOW_SPARK_MASTER_PORT may be taken)")

    def down(self, timeout: float = 30) -> bool:
        """Stop the workers and the master; False if none was running."""
        stopped = False
        for pid_file in sorted(self.home.glob("*.pid"), reverse=True):  # workers before the master
            try:
                process = psutil.Process(int(pid_file.read_text()))
                os.killpg(process.pid, signal.SIGTERM)
                stopped = True
                process.wait(timeout)  # reaps it when this process started it (tests), else polls
            except psutil.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
            pid_file.unlink(missing_ok=True)
        return stopped


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it may hold a password), never readable by others meanwhile."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(text)


def _extract(jar: Path, member: str, folder: Path) -> None:
    import zipfile

    with zipfile.ZipFile(jar) as archive:
        archive.extract(member, folder)


LOG4J = """\
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.hive.name = org.apache.hadoop.hive
logger.hive.level = error
logger.datanucleus.name = DataNucleus
logger.datanucleus.level = error
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
"""
