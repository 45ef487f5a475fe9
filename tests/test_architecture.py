"""The layout of harness/ is its architecture (docs/ARCHITECTURE.md): wings that import one way, no import circles, no
module reaching into another's private names, and studies that only declare."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Bottom to top: a wing imports only wings before it. errors.py and logs.py are single modules at the bottom.
WINGS = ("errors", "logs", "models", "data", "runs", "intervene", "analysis", "generation", "scorers", "study")
STUDY_MAX_LINES = 150
STUDIES_MAX_LINES = 1300


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every import in ``path``, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out += [(module, a.name, node.lineno) for a in node.names]
    return out


def harness_graph() -> dict[str, set[str]]:
    """Module -> the harness modules it imports (``from pkg import module`` counts as importing the module)."""
    files = {module_name(p): p for p in (REPO / "harness").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = set()
        for module, imported, _ in imports(path):
            target = f"{module}.{imported}" if f"{module}.{imported}" in files else module
            if target in files and target != name:
                graph[name].add(target)
    return graph


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "harness"


def test_harness_has_no_import_circles():
    graph, seen, path, circles = harness_graph(), set(), [], []

    def visit(node: str) -> None:
        if node in path:
            circles.append(path[path.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        path.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        path.pop()

    for node in sorted(graph):
        visit(node)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_wings_import_only_the_wings_below_them():
    order = {w: i for i, w in enumerate(WINGS)}
    wrong = []
    for module, targets in harness_graph().items():
        for target in targets:
            a, b = wing(module), wing(target)
            if a == "harness" or b == "harness":  # the package's own __init__ (a docstring and the version)
                continue
            assert a in order and b in order, f"{module} or {target} is in no wing of {WINGS}"
            if a != b and order[b] > order[a]:
                wrong.append(f"{module} imports {target} ({a} is below {b})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("root", ["harness", "studies"])
def test_no_module_imports_a_private_name_of_another(root):
    reach_ins = [f"{p.relative_to(REPO)}:{line} imports {imported} from {module}"
                 for p in (REPO / root).rglob("*.py") for module, imported, line in imports(p)
                 if imported.startswith("_") and not imported.startswith("__") and module.startswith("harness")]
    assert not reach_ins, "\n".join(reach_ins)


def test_the_library_never_imports_the_studies():
    upward = [f"{p.relative_to(REPO)}:{line} imports {module}" for p in (REPO / "harness").rglob("*.py")
              for module, _, line in imports(p) if module == "studies" or module.startswith("studies.")]
    assert not upward, "\n".join(upward)


def test_studies_are_declarations():
    sizes = {p.name: len(p.read_text().splitlines()) for p in sorted((REPO / "studies").glob("*.py"))}
    long = {name: n for name, n in sizes.items() if n > STUDY_MAX_LINES}
    assert not long, f"study modules over {STUDY_MAX_LINES} lines: {long}"
    assert sum(sizes.values()) <= STUDIES_MAX_LINES, f"studies/ holds {sum(sizes.values())} lines"
    own_argparse = [name for name in sizes if "argparse" in (REPO / "studies" / name).read_text()]
    assert not own_argparse, f"studies with an argparse of their own (use StudyConfig): {own_argparse}"
