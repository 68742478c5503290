"""The dependency direction of STYLE.md, walked over the real source with `ast`:

    cli → engine → {models, losses, postprocess, data, evaluation, visualize} → leaf modules

A part imports only parts of a lower layer (and itself); the middle parts never import each other; the leaf modules
(structures, config, labels and the small file/parallel helpers) import nothing but leaf modules; no cycle between
parts; typer, click and rich are imported, `print` called and the process exited only in cli/.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "lpsctl"
LEAF = {
    "structures",
    "config",
    "labels",
    "errors",
    "atomic",
    "jsonfile",
    "imagefile",
    "parallel",
    "threads",
    "__init__",
}
MIDDLE = {"models", "losses", "postprocess", "data", "evaluation", "visualize"}
LAYER = {**dict.fromkeys(LEAF, 0), **dict.fromkeys(MIDDLE, 1), "engine": 2, "cli": 3, "__main__": 4}
CLI_ONLY_MODULES = {"typer", "click", "rich"}
EXITS = {("sys", "exit"), ("os", "_exit")}


def part_of(path: Path, package: Path = PACKAGE) -> str:
    """The layer part a file belongs to: its top folder under lpsctl/, or its module name at the top."""
    relative = path.relative_to(package)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module an (absolute) import statement names, at any depth (inside functions and TYPE_CHECKING too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module if node.level == 0 else f"lpsctl.<relative>.{node.module}")
            names.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "lpsctl")
    return names


def cli_only_calls(tree: ast.AST) -> list[str]:
    """`print(...)`, `sys.exit(...)`, `os._exit(...)`, `exit(...)`, `quit(...)` and `raise SystemExit` in a tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Name) and function.id in {"print", "exit", "quit"}:
                found.append(f"{function.id}() at line {node.lineno}")
            if (
                isinstance(function, ast.Attribute)
                and isinstance(function.value, ast.Name)
                and (function.value.id, function.attr) in EXITS
            ):
                found.append(f"{function.value.id}.{function.attr}() at line {node.lineno}")
        if isinstance(node, ast.Raise) and node.exc is not None:
            raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(raised, ast.Name) and raised.id == "SystemExit":
                found.append(f"raise SystemExit at line {node.lineno}")
    return found


def layering_violations(package: Path = PACKAGE) -> tuple[list[str], dict[str, set[str]]]:
    """Every broken rule under `package`, and the part → imported parts graph."""
    violations: list[str] = []
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        part, name = part_of(path, package), path.relative_to(package)
        tree = ast.parse(path.read_text())
        if part not in LAYER:
            violations.append(f"{name}: part '{part}' has no layer (add it to tests/test_layout.py and STYLE.md)")
            continue
        for module in sorted(imported_modules(tree)):
            top = module.split(".")[0]
            if top in CLI_ONLY_MODULES and part not in {"cli", "__main__"}:
                violations.append(f"{name} imports {module}: only cli/ may")
            if top != "lpsctl" or module == "lpsctl":
                continue
            target = module.split(".")[1]
            if module.count(".") == 1 and target not in LAYER and target != "<relative>":
                target = "__init__"  # `from lpsctl import __version__`: a name of the package itself
            if target == "<relative>":
                violations.append(f"{name}: relative import of {module.split('.', 2)[2]} (use lpsctl.…)")
                continue
            if target == part:
                continue
            graph.setdefault(part, set()).add(target)
            if not allowed(part, target):
                violations.append(f"{name} ({part}, layer {LAYER[part]}) imports {module} (layer {LAYER.get(target)})")
        if part not in {"cli", "__main__"}:
            violations += [f"{name}: {call} (only cli/ prints or exits)" for call in cli_only_calls(tree)]
    return violations + [f"import cycle: {' → '.join(cycle)}" for cycle in cycles(graph)], graph


def allowed(part: str, target: str) -> bool:
    """Whether `part` may import `target`: leaf modules only each other (kept acyclic by `cycles`), every other part
    only lower layers."""
    if target not in LAYER:
        return False
    return LAYER[target] == 0 if LAYER[part] == 0 else LAYER[target] < LAYER[part]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected loop found by depth-first search (empty for an acyclic graph)."""
    found, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target, 0) == 1:
                found.append([*stack[stack.index(target) :], target])
            elif state.get(target, 0) == 0:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    return found


def test_lpsctl_follows_the_dependency_direction() -> None:
    violations, graph = layering_violations()
    assert not violations, "\n".join(violations)
    assert {"models", "losses", "postprocess", "data"} <= graph["engine"]  # the walk saw the engine's imports


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "lpsctl"
    for name, text in {"__init__.py": "", "config.py": "import lpsctl.errors\n", "errors.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_an_upward_import_fails(tmp_path: Path) -> None:
    package = _package(tmp_path, {"models/net.py": "def f():\n    from lpsctl.engine.train import train\n"})
    violations, _ = layering_violations(package)
    assert violations == ["models/net.py (models, layer 1) imports lpsctl.engine.train (layer 2)"]


def test_a_sideways_import_and_a_leaf_importing_up_fail(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {"models/net.py": "from lpsctl.losses import solov2\n", "structures.py": "import lpsctl.models.net\n"},
    )
    violations, _ = layering_violations(package)
    assert "models/net.py (models, layer 1) imports lpsctl.losses (layer 1)" in violations
    assert "structures.py (structures, layer 0) imports lpsctl.models.net (layer 1)" in violations
    assert len(violations) == 2


def test_a_cycle_is_named() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_printing_exiting_and_rich_outside_cli_fail(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "engine/run.py": "import sys\nfrom rich.console import Console\nprint('x')\nsys.exit(1)\n",
            "data/x.py": "def f():\n    raise SystemExit(2)\n",
            "cli/app.py": "import typer\nprint('fine here')\n",
        },
    )
    violations, _ = layering_violations(package)
    assert sorted(violations) == [
        "data/x.py: raise SystemExit at line 2 (only cli/ prints or exits)",
        "engine/run.py imports rich.console: only cli/ may",
        "engine/run.py: print() at line 3 (only cli/ prints or exits)",
        "engine/run.py: sys.exit() at line 4 (only cli/ prints or exits)",
    ]
