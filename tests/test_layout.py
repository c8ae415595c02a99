"""The code is laid out by stage: each stage imports only itself, `core` and the stages before it.

core -> ingest -> transform -> quality -> serve -> automation -> cli; `dev` (the simulator) imports
only `core`, and only `cli` may import it; definitions.py and live_definitions.py assemble and may
import anything. Imports inside functions count too, and no module imports itself back through a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dagster_project"
STAGES = ["core", "ingest", "transform", "quality", "serve", "automation", "cli"]
ASSEMBLERS = {"definitions", "live_definitions"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The dagster_project modules `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the project imports by absolute name"
            if node.module and node.module.startswith("dagster_project"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dagster_project")}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def stage_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def allowed(importer: str, imported: str) -> bool:
    mine, theirs = stage_of(importer), stage_of(imported)
    if mine in ASSEMBLERS or mine == theirs or theirs == "core":
        return True
    if mine == "dev":
        return False
    if mine == "cli":  # the top: it loads the code locations and runs the simulator for the demo
        return True
    return theirs in STAGES and mine in STAGES and STAGES.index(theirs) < STAGES.index(mine)


def test_every_module_lives_in_a_stage():
    loose = sorted(m for m in graph() if stage_of(m) not in {*STAGES, "dev", *ASSEMBLERS} and m != "dagster_project")
    assert loose == [], f"modules outside the stage folders: {loose}"


def test_no_stage_imports_a_later_stage():
    wrong = sorted(f"{a} imports {b}" for a, targets in graph().items() for b in targets if not allowed(a, b))
    assert wrong == [], "\n".join(wrong)


def test_no_import_cycles():
    edges = graph()
    # the importable name may be a package: map `pkg` to `pkg` (its __init__) as written
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt in edges and nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == [], "\n".join(cycles)
