"""The package's folders show its architecture: each subpackage says what it holds, imports run only
downward between subpackages (in the order of LAYERS), no module imports another in a circle, the
package never imports Streamlit, and no module grows past the size a reader takes in at once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hyperrep

PACKAGE = Path(hyperrep.__file__).resolve().parent
LAYERS = ["io", "runtime", "images", "nets", "zoo", "paper", "ae", "sampling", "evaluation", "pipeline"]
TOP = "cli"  # the command line sits on top of every layer
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every hyperrep module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("hyperrep"):
            found |= {f"{node.module}.{a.name}" if node.module.count(".") < 2 else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hyperrep")}
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def resolve(name: str) -> str:
    """The module a dotted import names (`hyperrep.nets.cnn.Architecture` -> `hyperrep.nets.cnn`)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def test_every_module_lives_in_a_layer_and_every_layer_says_what_it_holds():
    loose = [m for m in MODULES if m.count(".") == 1 and layer_of(m) not in (*LAYERS, TOP)]
    assert not loose, f"modules outside the layers: {loose}"
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text())) or ""
        assert len(doc) > 80 and "import" in doc.lower(), f"hyperrep.{layer} needs a docstring saying what it holds and may import"


def test_imports_run_only_downward_between_layers():
    upward = []
    for module, path in MODULES.items():
        own = layer_of(module)
        for target in map(resolve, imports_of(path)):
            other = layer_of(target)
            if (other == TOP and own != TOP) or (own in LAYERS and other in LAYERS and LAYERS.index(other) > LAYERS.index(own)):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run upward: " + "; ".join(sorted(upward))


def test_no_module_imports_another_in_a_circle():
    graph = {m: {t for t in map(resolve, imports_of(p)) if t in MODULES and t != m and t != "hyperrep"}
             for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail)
        trail.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_the_package_never_imports_streamlit_and_modules_stay_readable():
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(name.split(".")[0] == "streamlit" for name in names), f"{module} imports streamlit"
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}: split it by concern)"
