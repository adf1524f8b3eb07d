"""The package's layers hold: no module imports from a higher layer and no modules import each other in a
cycle, imports inside functions included (read from the source with ``ast``, so this runs without import-linter).

Layers, lowest first (``.importlinter`` states the same contract for ``lint-imports``):
errors/utils → data → vision, language, text (labeler, text metrics) → report_models → eval →
generate, demo, gallery, prepare, weights, pipeline → cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "cxr_irgen"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
LAYERS = [
    {"errors", "utils"},
    {"data"},
    {"vision", "language", "text"},
    {"report_models"},
    {"eval"},
    {"generate", "demo", "gallery", "prepare", "weights", "pipeline"},
    {"cli"},
]
TOP = {"__init__"}  # the package's own __init__ re-exports lazily; it sits above every layer


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``name`` imports anywhere in its source (module level and inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known] or [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE + ".") and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def layer(module: str) -> int | None:
    """The layer index of ``cxr_irgen.<part>....``; None for the package itself."""
    part = module.split(".")[1] if "." in module else "__init__"
    if part in TOP:
        return None
    for index, members in enumerate(LAYERS):
        if part in members:
            return index
    raise AssertionError(f"{module} is in no layer: add cxr_irgen.{part} to LAYERS here and in .importlinter")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_module_sits_in_a_layer():
    for name in modules():
        layer(name)


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{src} -> {dst}" for src, targets in import_graph().items() for dst in sorted(targets)
              if layer(src) is not None and layer(dst) is not None and layer(dst) > layer(src)]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_cycles_among_modules():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_cycles_among_packages():
    graph: dict[str, set[str]] = {}
    for src, targets in import_graph().items():
        if src == PACKAGE:
            continue
        graph.setdefault(package_of(src), set()).update(package_of(dst) for dst in targets if package_of(dst) != package_of(src))
    found = cycles(graph)
    edges = [f"{a} -> {b}" for c in found for a in c for b in sorted(graph[a]) if b in c]
    assert not found, "package cycles:\n" + "\n".join(edges)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from cxr_irgen.cli import main\n")
    assert imported("cxr_irgen.data.mod", source, {"cxr_irgen.cli", "cxr_irgen.data.mod"}) == {"cxr_irgen.cli"}


def test_no_private_names_imported_across_modules():
    """``from cxr_irgen.x import _name`` means ``_name`` is not private: make it public or keep it in its module."""
    found = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                found += [f"{name} imports {node.module}.{alias.name}" for alias in node.names if alias.name.startswith("_") and alias.name != "__version__"]
    assert not found, "private names imported:\n" + "\n".join(found)


def test_the_checker_finds_a_cycle_and_an_upward_edge():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("cxr_irgen.cli") > layer("cxr_irgen.eval.tables") > layer("cxr_irgen.report_models.model") > layer("cxr_irgen.text.labeler")
