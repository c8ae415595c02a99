"""Bring the compose stack up, serve one partition through the code server, read a mart row, answer the
UI's GraphQL, log in to Superset, measure each container, and tear the stack down.

    make compose-check          (BASE_IMAGE / POSTGRES_IMAGE: docker/local/build-base-images on a machine
                                 without an image registry; BOTFLOW_COMPOSE_HOST_NETWORK=1 without a bridge)

The measurements go to docker/compose-check.json (dated); docs/deploy.md quotes them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = "botflow-check"
DAY = date.today() - timedelta(days=1)
HOUR = f"{DAY:%Y-%m-%d}-12:00"


def compose_command() -> list[str]:
    network = "host" if os.environ.get("BOTFLOW_COMPOSE_HOST_NETWORK") == "1" else "bridge"
    files = ["-f", str(HERE / "compose.yaml"), "-f", str(HERE / f"compose.{network}.yaml")]
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    base = ["docker", "compose"] if plugin else ["docker-compose"]
    return [*base, "-p", PROJECT, *files]


def check_environment() -> dict[str, str]:
    """Fresh secrets for this run; every port off the usual ones (host networking shares the host's)."""
    password = secrets.token_hex(12)
    ports = {"POSTGRES_PORT": "55432", "DAGSTER_PORT": "13000", "BOTFLOW_SUPERSET_PORT": "18088",
             "BOTFLOW_CODE_PORT": "14000", "BOTFLOW_LIVE_CODE_PORT": "14001"}
    ports = {k: os.environ.get(k, v) for k, v in ports.items()}
    return {**os.environ, **ports, "POSTGRES_PASSWORD": password,
            "BOTFLOW_SOURCE_URL": f"postgresql://postgres:{password}@postgres:{ports['POSTGRES_PORT']}/botflow_source",
            "BOTFLOW_EXTRA_DATABASES": "botflow_source", "BOTFLOW_PARTITIONS_START": f"{DAY - timedelta(days=2)}",
            "BOTFLOW_PHONE_HASH_KEY": secrets.token_hex(16), "BOTFLOW_SUPERSET_ADMIN_PASSWORD": secrets.token_hex(12),
            "BOTFLOW_SUPERSET_TENANT_KEY": secrets.token_hex(16), "BOTFLOW_SUPERSET_SECRET_KEY": secrets.token_hex(24)}


class Stack:
    def __init__(self) -> None:
        self.env = check_environment()
        self.compose = compose_command()
        self.ui = f"http://127.0.0.1:{self.env['DAGSTER_PORT']}"
        self.superset = f"http://127.0.0.1:{self.env['BOTFLOW_SUPERSET_PORT']}"

    def run(self, *args: str, capture: bool = False, timeout: float = 3600) -> str:
        result = subprocess.run([*self.compose, *args], env=self.env, text=True, timeout=timeout,
                                stdout=subprocess.PIPE if capture else None)
        if result.returncode != 0:
            raise SystemExit(f"compose-check: `{' '.join(args[:3])}` failed (exit {result.returncode})")
        return result.stdout or ""

    def down(self) -> None:
        """Remove the stack's containers and volumes (quietly: also what an interrupted check left)."""
        subprocess.run([*self.compose, "down", "-v", "--remove-orphans"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def sql(self, query: str, database: str = "botflow_warehouse") -> str:
        return self.run("exec", "-T", "postgres", "psql", "-U", "postgres", "-p", self.env["POSTGRES_PORT"],
                        "-d", database, "-Atc", query, capture=True).strip()

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.ui}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise SystemExit(f"compose-check: GraphQL errors: {answer['errors']}")
        return answer["data"]


def step(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def wait(what: str, probe, timeout: float = 600):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (OSError, urllib.error.URLError, json.JSONDecodeError) as exc:
            last = exc
        time.sleep(3)
    raise SystemExit(f"compose-check: {what} not ready after {timeout:.0f} s (last: {last})")


LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
STATUS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""


def locations_loaded(stack: Stack) -> bool:
    entries = stack.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
    loaded = {e["name"] for e in entries if (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"}
    return loaded == {"botflow", "botflow_live"}


def launch(stack: Stack, job: str, partition: str | None = None) -> str:
    tags = [{"key": "dagster/partition", "value": partition}] if partition else []
    params = {"selector": {"repositoryLocationName": "botflow", "repositoryName": "__repository__", "jobName": job},
              "runConfigData": {}, "executionMetadata": {"tags": tags}}
    result = stack.graphql(LAUNCH, {"p": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise SystemExit(f"compose-check: launching {job} failed: {result}")
    run_id = result["run"]["runId"]

    def finished():
        status = stack.graphql(STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("FAILURE", "CANCELED"):
            raise SystemExit(f"compose-check: run {run_id} of {job} ended {status}; see {stack.ui}/runs/{run_id}")
        return status == "SUCCESS"

    began = time.monotonic()
    wait(f"run {run_id} of {job}", finished, timeout=900)
    step(f"{job}{' ' + partition if partition else ''}: SUCCESS in {time.monotonic() - began:.0f} s (run {run_id})")
    return run_id


def superset_login(stack: Stack) -> bool:
    body = json.dumps({"username": "admin", "password": stack.env["BOTFLOW_SUPERSET_ADMIN_PASSWORD"],
                       "provider": "db", "refresh": False}).encode()
    request = urllib.request.Request(f"{stack.superset}/api/v1/security/login", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return "access_token" in json.loads(response.read())


def container_stats(stack: Stack) -> dict[str, dict[str, str]]:
    ids = stack.run("ps", "-q", capture=True).split()
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{json .}}", *ids],
                         capture_output=True, text=True, check=True).stdout
    stats = {}
    for line in out.splitlines():
        row = json.loads(line)
        # compose v1 names containers project_service_1, compose v2 project-service-1
        name = re.sub(r"[-_]\d+$", "", row["Name"].removeprefix(f"{PROJECT}_").removeprefix(f"{PROJECT}-"))
        stats[name] = {"memory": row["MemUsage"].split(" / ")[0], "cpu": row["CPUPerc"]}
    return stats


def mebibytes(text: str) -> float:
    units = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * units[unit]
    return float("nan")


class Peaks:
    """Each container's peak memory and CPU, sampled by `docker stats` while a run executes."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.peaks, self.stop = stack, {}, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.is_set():
            for name, row in container_stats(self.stack).items():
                peak = self.peaks.setdefault(name, {"memory_mib": 0.0, "cpu_percent": 0.0})
                peak["memory_mib"] = max(peak["memory_mib"], round(mebibytes(row["memory"]), 1))
                peak["cpu_percent"] = max(peak["cpu_percent"], float(row["cpu"].rstrip("%") or 0))

    def __enter__(self) -> Peaks:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def trust_this_machines_certificates() -> None:
    """The CAs this machine added (a TLS-inspecting proxy's) into docker/certs/, for the image build."""
    for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        target = HERE / "certs" / cert.name
        if not target.exists() or target.read_bytes() != cert.read_bytes():
            target.write_bytes(cert.read_bytes())


def main() -> int:
    trust_this_machines_certificates()
    stack = Stack()
    report: dict = {"date": f"{date.today()}", "base_image": stack.env.get("BASE_IMAGE", "python:3.11-slim"),
                    "host_network": os.environ.get("BOTFLOW_COMPOSE_HOST_NETWORK") == "1"}
    began = time.monotonic()
    try:
        step("building the images (the first build installs the dependencies: minutes)")
        stack.run("build")
        report["build_seconds"] = round(time.monotonic() - began)
        step("starting the stack")
        stack.down()
        up = time.monotonic()
        stack.run("up", "-d")
        wait("the Dagster UI with both code locations", lambda: locations_loaded(stack))
        report["up_seconds"] = round(time.monotonic() - up)
        step(f"UI answers GraphQL on {stack.ui}; botflow and botflow_live loaded ({report['up_seconds']} s)")
        stack.run("exec", "-T", "code-botflow", "botflow", "simulate", "--start", f"{DAY}", "--days", "1",
                  "--seed", "7", "--conversations-per-day", "200")
        idle = container_stats(stack)
        launch(stack, "dbt_views_job")
        run_began = time.monotonic()
        with Peaks(stack) as peaks:
            launch(stack, "hourly_partition_job", HOUR)
        report["partition_run_seconds"] = round(time.monotonic() - run_began)
        report["containers_peak_during_run"] = peaks.peaks
        row = stack.sql("select count(*), sum(messages_sent + messages_received) from marts.usage_analytics "
                        f"where hour = '{DAY} 12:00+00' having count(*) > 0")
        source = stack.sql(f"select count(*) from messages where created_at >= '{DAY} 12:00+00' "
                           f"and created_at < '{DAY} 13:00+00'", database="botflow_source")
        if not row:
            raise SystemExit(f"compose-check: marts.usage_analytics has no row for {HOUR}")
        organizations, messages = row.split("|")
        step(f"marts.usage_analytics {HOUR}: {organizations} organizations, {messages} messages "
             f"(the source holds {source} messages that hour, rows that break the contract included)")
        report["mart_row"] = row
        launch(stack, "daily_partition_job", f"{DAY}")  # the dashboards' datasets read the daily marts too
        wait("Superset's login", lambda: superset_login(stack), timeout=600)
        step(f"Superset on {stack.superset}: admin logged in through the REST API")
        stack.run("exec", "-T", "code-botflow", "botflow", "superset", "sync")
        step("botflow superset sync: datasets, charts and dashboards imported")
        report["containers_idle"] = idle
        report["containers_after_run"] = container_stats(stack)
        (HERE / "compose-check.json").write_text(json.dumps(report, indent=2) + "\n")
        step(f"compose-check passed in {time.monotonic() - began:.0f} s; measurements in docker/compose-check.json")
        return 0
    except SystemExit:
        subprocess.run([*stack.compose, "logs", "--tail", "20"], env=stack.env)  # what each service said last
        raise
    finally:
        step("tearing the stack down")
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
