"""The shape of the code base: imports form no cycle (issue 14), and sidn/ stays free of the stack."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("sidn", "pipelines")
STACK = ("prefect", "mlflow", "dvc", "boto3", "botocore")  # the rule of the README's Development section


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module this file imports, at module level or inside functions."""
    found: set[str] = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def project_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import cycles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found




def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert cycles(project_graph()) == []


def test_sidn_imports_no_orchestration_tool():
    for path in (REPO / "sidn").rglob("*.py"):
        bad = sorted(m for m in imports(path) if m.split(".")[0] in STACK)
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_the_makefile_and_the_service_stack_switch_off_the_same_telemetry():
    """The two places that cannot import pipelines.telemetry: the Makefile (the shell of dvc,
    prefect, mlflow) and infra/environment.py (standard library only, may run before the venv exists)."""
    from pipelines.telemetry import TELEMETRY_OFF

    makefile = (REPO / "Makefile").read_text()
    for key, value in TELEMETRY_OFF.items():
        assert f"export {key} := {value}" in makefile, key
    environment = ast.parse((REPO / "infra/environment.py").read_text())
    assigned = next(node.value for node in environment.body if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "TELEMETRY_OFF" for t in node.targets))
    assert ast.literal_eval(assigned).items() >= TELEMETRY_OFF.items()


def test_telemetry_switches_are_written_in_one_place():
    owners = {"pipelines/telemetry.py"}
    for pkg in PACKAGES + ("tests",):
        for path in (REPO / pkg).rglob("*.py"):
            rel = str(path.relative_to(REPO))
            if rel not in owners and rel != "tests/unit/test_layout.py":
                assert '"MLFLOW_DISABLE_TELEMETRY": "true"' not in path.read_text(), rel


def test_each_stage_has_one_name():
    """DVC stage, Prefect task, task function, task-run name and output folder are the same word (issue 14)."""
    import yaml

    from pipelines.layout import CategoryPaths
    from pipelines.orchestration import tasks

    dvc_stages = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    for stage, task in tasks.TASKS.items():
        assert stage in dvc_stages
        assert (task.name, task.fn.__name__, task.task_run_name) == (stage, stage, f"{stage}[{{category}}]")
    paths = CategoryPaths(Path("runs"), "carpet")
    folders = {"prepare": paths.prepare, "train": paths.train_dir, "evaluate": paths.evaluate_dir}
    assert {stage: folder.name for stage, folder in folders.items()} == {stage: stage for stage in folders}
    assert paths.defects.stem == "defects"
