"""The dbt project as Dagster sees it: its manifest, parsed when missing or out of date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dagster_dbt import DbtProject

from dagster_project.core.settings import DBT_PROJECT_DIR, REPO_ROOT, process_environment

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def _newest_source_mtime() -> float:
    roots = [REPO_ROOT / "models", DBT_PROJECT_DIR / "macros", DBT_PROJECT_DIR / "seeds", DBT_PROJECT_DIR / "tests"]
    files = [DBT_PROJECT_DIR / "dbt_project.yml"]
    for root in roots:
        files.extend(p for p in root.rglob("*") if p.is_file())
    return max(p.stat().st_mtime for p in files)


def ensure_manifest() -> Path:
    """Run `dbt parse` if target/manifest.json is missing or older than the project's files."""
    manifest = dbt_project.manifest_path
    if manifest.exists() and manifest.stat().st_mtime >= _newest_source_mtime():
        return manifest
    dbt = Path(sys.executable).with_name("dbt")
    env = {**process_environment(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    result = subprocess.run(
        [str(dbt), "parse", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)],
        capture_output=True, text=True, env=env, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dbt parse failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return manifest
