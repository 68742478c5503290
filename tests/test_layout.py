"""The dependency direction of STYLE.md: cli → engine → {models, losses, postprocess, data, evaluation, visualize}
→ {structures, config}; models never import data or cli; data never imports models; only cli imports typer."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "lpsctl"
BASE = {"errors", "structures", "config", "atomic"}
FORBIDDEN = {
    "models": {"data", "cli", "engine", "evaluation"},
    "losses": {"data", "cli", "engine", "evaluation"},
    "postprocess": {"models", "cli", "engine", "losses"},
    "data": {"models", "losses", "postprocess", "cli", "engine"},
    "evaluation": {"models", "losses", "cli", "engine"},
    "engine": {"cli"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_dependency_direction():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top in {"typer", "click"} and part != "cli":
                violations.append(f"{path.relative_to(PACKAGE)} imports {name} (only cli/ may)")
            if top != "lpsctl" or name.count(".") == 0:
                continue
            target = name.split(".")[1]
            if target in FORBIDDEN.get(part, set()):
                violations.append(f"{path.relative_to(PACKAGE)} ({part}) imports {name}")
            if part in BASE and target not in BASE:
                violations.append(f"{path.relative_to(PACKAGE)} is a base module but imports {name}")
    assert not violations, "\n".join(violations)


def test_the_check_sees_imports():
    # the walker itself must find imports, or the test above could never fail
    assert "lpsctl.errors" in _imports(PACKAGE / "config.py")
