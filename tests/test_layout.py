"""Package layout: the import graph of embedkit/ (built with ``ast``, every import statement anywhere in a
module, including ones inside functions; importing ``a.b.c`` also counts as importing the packages
``a`` and ``a.b``, which run first) has no cycles, and the runtime registry imports nothing heavy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "embedkit"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The embedkit module an import of ``name`` loads (``a.b.c`` -> itself, else its nearest parent)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _ancestors(mod: str) -> set[str]:
    parts = mod.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # `from pkg import name`: name may be a submodule or an attribute of pkg
                targets = [f"{prefix}.{a.name}" for a in node.names] or [prefix]
            for t in targets:
                dep = _resolve(t, modules)
                # importing a.b.c runs a/__init__ and a/b/__init__ first: edges to those packages too,
                # except to the importer's own packages (already imported before it runs)
                while dep is not None:
                    if dep != mod and dep not in _ancestors(mod):
                        graph[mod].add(dep)
                    dep = _resolve(dep.rpartition(".")[0], modules)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_graph_builder_sees_relative_function_level_and_package_imports():
    g = import_graph()
    assert "embedkit.runtimes" in g["embedkit.encoder"]  # from .runtimes import ...
    assert "embedkit.runtimes.pooling" in g["embedkit.encoder"]  # from .runtimes.pooling import ...
    assert "embedkit.runtimes.onnx_export" in g["embedkit.runtimes.onnx_runtime"]  # from .onnx_export import
    assert "embedkit.runtimes.calibration" in g["embedkit.runtimes.onnx_export"]  # inside a function
    assert "embedkit.errors" in g["embedkit.runtimes"]  # from ..errors import InputError
    # and the cycle finder finds a planted cycle
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_in_embedkit():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles in embedkit/: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_runtime_registry_is_lazy():
    code = ("import sys, embedkit.runtimes as r; "
            "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'sentence_transformers', 'transformers') "
            "if m in sys.modules]; print(heavy, r.RUNTIME_NAMES)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    heavy, _, names = out.stdout.strip().partition("] ")
    assert heavy == "[", out.stdout
    assert "'torch'" in names and "'openvino-int8'" in names
