"""The dbt project as Dagster sees it: its manifest, parsed when missing or out of date."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dagster_dbt import DbtProject

from dagster_project.core.settings import DBT_PROJECT_DIR, process_environment

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def _newest_source_mtime(project_dir: Path) -> float:
    roots = [project_dir.parent / "models", project_dir / "macros", project_dir / "seeds", project_dir / "tests"]
    files = [project_dir / "dbt_project.yml"]
    for root in roots:
        files.extend(p for p in root.rglob("*") if p.is_file())
    return max(p.stat().st_mtime for p in files)


def _is_current(manifest: Path, project_dir: Path) -> bool:
    return manifest.exists() and manifest.stat().st_mtime >= _newest_source_mtime(project_dir)


def ensure_manifest(project_dir: Path = DBT_PROJECT_DIR) -> Path:
    """Run `dbt parse` if target/manifest.json is missing or older than the project's files.

    Processes that start together (pytest workers, `botflow ui`'s webserver and daemon) take turns
    under a file lock, and the manifest is parsed into a scratch folder and moved into place, so a
    reader never sees half a manifest."""
    target = project_dir / "target"
    manifest = target / "manifest.json"
    if _is_current(manifest, project_dir):
        return manifest
    target.mkdir(exist_ok=True)
    with open(target / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_current(manifest, project_dir):  # another process parsed it while this one waited
            return manifest
        scratch = Path(tempfile.mkdtemp(prefix="dbt-manifest-", dir=target))
        try:
            dbt = Path(sys.executable).with_name("dbt")
            env = {**process_environment(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
            result = subprocess.run(
                [str(dbt), "parse", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir),
                 "--target-path", str(scratch), "--log-path", str(scratch)],
                capture_output=True, text=True, env=env, check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"dbt parse failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
            os.replace(scratch / "manifest.json", manifest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return manifest
