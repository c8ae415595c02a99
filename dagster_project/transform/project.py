"""The dbt project as Dagster sees it: its manifest, parsed when missing or out of date."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dagster_dbt import DbtProject

from dagster_project.core.file_lock import exclusive
from dagster_project.core.settings import DBT_PROJECT_DIR, process_environment

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def scratch_target(project_dir: Path, prefix: str) -> Path:
    """A target folder of its own for one invocation (artifacts of parallel runs never mix)."""
    (project_dir / "target").mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=project_dir / "target"))


def project_args(project_dir: Path, target_path: Path) -> list[str]:
    return ["--project-dir", str(project_dir), "--profiles-dir", str(project_dir),
            "--target-path", str(target_path), "--log-path", str(target_path), "--no-send-anonymous-usage-stats"]


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
    manifest = project_dir / "target" / "manifest.json"
    if _is_current(manifest, project_dir):
        return manifest
    with exclusive(project_dir / "target" / ".manifest.lock"):
        if _is_current(manifest, project_dir):  # another process parsed it while this one waited
            return manifest
        scratch = scratch_target(project_dir, "dbt-manifest-")
        try:
            dbt = Path(sys.executable).with_name("dbt")
            result = subprocess.run([str(dbt), "parse", *project_args(project_dir, scratch)],
                                    capture_output=True, text=True, env=process_environment(), check=False)
            if result.returncode != 0:
                raise RuntimeError(f"dbt parse failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
            os.replace(scratch / "manifest.json", manifest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return manifest
