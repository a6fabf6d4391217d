"""Imports run one way: engine <- ops / data / models <- stages <- orchestration <- command line.

Read from the source with ``ast``, so the check costs nothing at run time and
catches an import however deeply it is nested.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("irnet_moana", "deeplab")
ENGINE, LIBRARY, STAGES, ORCHESTRATION, COMMAND_LINE = range(5)
LAYER_NAMES = ("engine", "ops / data / models", "stages", "orchestration", "command line")

# Modules by layer; a package prefix ending in "." covers its modules.
LAYERS: dict[str, int] = {
    "irnet_moana": ENGINE,
    **{f"irnet_moana.{m}": ENGINE for m in ("config", "io", "distributed", "precision", "run", "training",
                                             "outputs", "sampling")},
    **{f"irnet_moana.{m}": LIBRARY for m in ("crf", "relations", "random_walk", "instances", "metrics", "evaluation",
                                              "instance_eval", "coco_export", "wsol", "wsol.boxes", "wsol.evaluation",
                                              "wsol.metadata", "wsol.data", "figures.drawing")},
    "irnet_moana.data.": LIBRARY,
    "irnet_moana.models.": LIBRARY,
    "deeplab": LIBRARY,
    "deeplab.model": LIBRARY,
    "deeplab.build": LIBRARY,
    "deeplab.smp_net": LIBRARY,
    "deeplab.predict": LIBRARY,
    "irnet_moana.stages.": STAGES,
    "irnet_moana.figures.": STAGES,
    "deeplab.train": STAGES,
    "deeplab.evaluate": STAGES,
    "irnet_moana.pipeline": ORCHESTRATION,
    "irnet_moana.cli": COMMAND_LINE,
}
STAGE_MODULES = ("irnet_moana.stages.", "deeplab.train", "deeplab.evaluate")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def layer_of(module: str) -> int:
    if module in LAYERS:
        return LAYERS[module]
    prefixes = [p for p in LAYERS if p.endswith(".") and (module + ".").startswith(p)]
    if not prefixes:
        raise AssertionError(f"{module} has no layer: add it to LAYERS in {Path(__file__).name}")
    return LAYERS[max(prefixes, key=len)]


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported project module, line, nested in a function) for every import of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nested = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            # "from pkg import mod" imports the module pkg.mod where there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in PACKAGES:
                found.append((target, node.lineno, id(node) in nested))
    return found


GRAPH = {module: _imports(module) for module in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_or_sideways(module: str) -> None:
    own = layer_of(module)
    upward = [f"line {line}: {target} ({LAYER_NAMES[layer_of(target)]})" for target, line, _ in GRAPH[module]
              if layer_of(target) > own]
    assert not upward, f"{module} ({LAYER_NAMES[own]}) imports from a higher layer: {upward}"


def test_stages_do_not_import_each_other() -> None:
    def is_stage(name: str) -> bool:
        return name.startswith(STAGE_MODULES) and name != "irnet_moana.stages"

    crossing = [f"{module} -> {target}" for module, imports in GRAPH.items() if is_stage(module)
                for target, _, _ in imports if is_stage(target) and target != module]
    assert not crossing


def test_no_import_cycle() -> None:
    edges = {m: {t for t, _, _ in imports if t in MODULES and t != m} for m, imports in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])


def test_deferred_imports_say_why() -> None:
    """A function-level import is kept only for an optional or slow dependency, with a comment above it."""
    unexplained = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                is_import = isinstance(node, (ast.Import, ast.ImportFrom))
                if is_import and not lines[node.lineno - 2].strip().startswith("#"):
                    unexplained.append(f"{module}:{node.lineno}")
    assert not unexplained, f"deferred imports without a comment saying why: {unexplained}"


def test_the_library_does_not_read_from_the_command_line_folders() -> None:
    offending = [f"{module}" for module, path in MODULES.items()
                 if '"pipelines"' in path.read_text() or '"tools"' in path.read_text()]
    assert not offending
