"""Start the Dagster daemon (schedules, sensors, run queue) for this code location as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster_project.core.settings import REPO_ROOT, Settings, process_environment


def start_daemon(settings: Settings, log_path: Path) -> subprocess.Popen:
    """`dagster-daemon run -w workspace.yaml` with the exported settings; output to `log_path`."""
    settings.export()
    settings.prepare_dagster_home()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    executable = Path(sys.executable).with_name("dagster-daemon")
    log = log_path.open("w")
    return subprocess.Popen(
        [str(executable), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
        cwd=REPO_ROOT, env=process_environment(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_daemon(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
