"""dbt in the run's own process: the project is parsed once per process, every build reuses it.

`dbt build` as a subprocess (dagster-dbt's DbtCliResource) pays, per invocation, the start-up of a
Python that imports dbt (~4 s here), `dbt --version`, and a (partial) parse of the project: about
9 s of fixed cost for an hourly partition whose models run in ~2 s. Here dbt runs through its
programmatic entry point (`dbtRunner`) in the process that already imported it with the code
location, and the parsed manifest is kept for the next invocation of the same process (a `botflow
run`, the in-process executor, a test session). Nothing in the parsed project depends on the
window: the models read it at compile time (macros/window.sql), the tests' `where` tokens are
replaced at run time (get_where_subquery).

dbt's structured events go through dagster-dbt's own conversion (`DbtCoreCliEventMessage`), so the
assets yield the same Outputs, check results and metadata as with the CLI resource.
"""

import os
import shutil
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator
from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

from dagster_project.core.settings import process_environment, scoped_environment
from dagster_project.core.window import DBT_WINDOW_ENV, Window
from dagster_project.transform.project import project_args, scratch_target

_LOCK = threading.Lock()  # dbt's in-process state (flags, adapters) allows one invocation at a time
# (project dir, warehouse) -> dbt's parsed Manifest, for this process: the nodes carry the target
# database's name, so another warehouse (a test's) needs its own parse
_MANIFESTS: dict[tuple[Path, str, str, str], Any] = {}
RESULT_EVENTS = frozenset({"LogSeedResult", "LogModelResult", "LogSnapshotResult", "LogTestResult"})


class DbtBuildFailed(dg.Failure):
    pass


def keep_partial_parse(target_path: Path, project_dir: Path) -> None:
    """Copy an invocation's partial_parse.msgpack to the project's target folder (atomically), so
    the next process parses only the files that changed."""
    state = target_path / "partial_parse.msgpack"
    if state.exists():
        shared = project_dir / "target"
        shared.mkdir(exist_ok=True)
        tmp = shared / f".partial_parse.{os.getpid()}.tmp"
        shutil.copyfile(state, tmp)
        tmp.replace(shared / "partial_parse.msgpack")


def parsed_manifest(project_dir: Path) -> Any:
    """dbt's Manifest of the project, parsed on first use in this process (partial parsing from
    the project's target folder), then kept."""
    env = process_environment()
    key = (project_dir, *(env.get(f"BOTFLOW_DBT_{part}", "") for part in ("HOST", "PORT", "DBNAME")))
    if key not in _MANIFESTS:
        from dbt.cli.main import dbtRunner

        target = scratch_target(project_dir, "dbt-parse-")
        try:
            shared_state = project_dir / "target" / "partial_parse.msgpack"
            if shared_state.exists():
                shutil.copyfile(shared_state, target / "partial_parse.msgpack")
            result = dbtRunner().invoke(["parse", *project_args(project_dir, target)])
            if not result.success:
                raise DbtBuildFailed(description=f"dbt parse of {project_dir} failed: {result.exception}")
            keep_partial_parse(target, project_dir)
        finally:
            shutil.rmtree(target, ignore_errors=True)
        _MANIFESTS[key] = result.result
    return _MANIFESTS[key]


def _failures(result: Any) -> str:
    """The nodes that errored or failed, with dbt's message, for the run's failure description."""
    lines = []
    for node_result in getattr(result.result, "results", None) or []:
        status = str(node_result.status)
        if status in ("error", "fail", "runtime error"):
            lines.append(f"{node_result.node.unique_id}: {status}: {(node_result.message or '').strip()[:500]}")
    if result.exception is not None:
        lines.append(f"{type(result.exception).__name__}: {result.exception}")
    return "\n".join(lines) or "dbt reported failure (see the dbt log lines of this step)"


def dbt_build(
    context: dg.AssetExecutionContext,
    project_dir: Path,
    manifest: Mapping[str, Any],
    translator: DagsterDbtTranslator,
    args: list[str],
    window: Window | None = None,
) -> Iterator[Any]:
    """`dbt build` of the step's selected dbt assets over `window`, in this process; yields the
    Dagster events of every model, seed and test result, then fails the step if dbt failed."""
    from dbt.cli.main import dbtRunner
    from dbt_common.events.functions import msg_to_dict

    params = get_updated_cli_invocation_params_for_context(
        context=context, manifest=manifest, dagster_dbt_translator=translator, runtime_excludes=["test_type:unit"])
    if params.dbt_project is not None and Path(params.dbt_project.project_dir) != project_dir:
        raise DbtBuildFailed(description="the selection needs a generated dbt selector, which the in-process "
                             "dbt runner does not support: select fewer than 200 dbt resources per step")
    indirect = ["--indirect-selection", params.indirect_selection] if params.indirect_selection else []
    raw_events: list[dict[str, Any]] = []
    with _LOCK:
        target = scratch_target(project_dir, f"dbt-{context.run.run_id[:8]}-")
        try:
            with scoped_environment(window.dbt_env() if window else {}, unset=DBT_WINDOW_ENV):  # unset: all of history
                runner = dbtRunner(manifest=parsed_manifest(project_dir),
                                   callbacks=[lambda event: event.info.name in RESULT_EVENTS
                                              and raw_events.append(msg_to_dict(event))])
                result = runner.invoke(["build", *args, *params.selection_args, *indirect,
                                        *project_args(project_dir, target)])
            for raw in raw_events:
                yield from DbtCoreCliEventMessage(raw_event=raw, event_history_metadata={}).to_default_asset_events(
                    manifest=params.manifest, dagster_dbt_translator=params.dagster_dbt_translator,
                    context=context, target_path=target)
        finally:
            shutil.rmtree(target, ignore_errors=True)
    if isinstance(result.exception, KeyboardInterrupt | dg.DagsterExecutionInterruptedError):
        raise result.exception  # the run was terminated: dbt caught the interrupt, the step must not retry it
    if not result.success:
        window_text = f" for window {window}" if window else ""
        raise DbtBuildFailed(description=f"dbt build{window_text} failed:\n{_failures(result)}")
