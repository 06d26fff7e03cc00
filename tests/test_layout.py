"""The code's shape (issue 11): the module graph of daemon/ and store/ has no cycles, store/ stands alone, the
service never reaches into the commands, ingest never into output, and light imports never load torch.

Imports are read with ast at any depth (inside functions and `if TYPE_CHECKING:` too), relative ones resolved.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"dedupd": ROOT / "daemon", "dedupd.store": ROOT / "store"}


def module_files() -> dict[str, Path]:
    """Every module by dotted name; a package is named by its __init__."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            found[".".join((package, *parts))] = path
    return found


def imported_names(name: str, path: Path) -> set[str]:
    """Dotted names this module imports (module or module.attribute), at any depth."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def module_graph(files: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """module -> the dedupd modules it imports (an imported attribute counts as its module). Packages are nodes
    too: `from dedupd.service import sdnotify` imports both dedupd.service and dedupd.service.sdnotify."""
    files = files if files is not None else module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for imported in imported_names(name, path):
            while imported and imported not in files:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def edges(graph: dict[str, set[str]], source: str, target: str) -> list[tuple[str, str]]:
    """Imports from modules in `source` (a module or package) to modules in `target`."""

    def inside(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    return sorted((a, b) for a, bs in graph.items() for b in bs if inside(a, source) and inside(b, target))


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from .sub import b\n")
    (package / "sub" / "b.py").write_text("from ..a import f\n")
    files = {
        "pkg": package / "__init__.py",
        "pkg.sub": package / "sub" / "__init__.py",
        "pkg.a": package / "a.py",
        "pkg.sub.b": package / "sub" / "b.py",
    }
    graph = module_graph(files)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]


def test_no_import_cycles() -> None:
    assert find_cycle(module_graph()) is None


def test_every_module_is_seen() -> None:
    graph = module_graph()
    for expected in ("dedupd.cli", "dedupd.ingest.indexer", "dedupd.service.daemon", "dedupd.store.store"):
        assert expected in graph
    assert "dedupd.purge.run" in graph["dedupd.service.daemon"]


def test_store_imports_nothing_else_from_dedupd() -> None:
    graph = module_graph()
    outside = [(a, b) for a, b in edges(graph, "dedupd.store", "dedupd") if not b.startswith("dedupd.store")]
    assert outside == []


def test_the_service_never_imports_the_commands_or_the_cli() -> None:
    graph = module_graph()
    assert edges(graph, "dedupd.service", "dedupd.commands") == []
    assert edges(graph, "dedupd.service", "dedupd.cli") == []


def test_ingest_never_imports_output() -> None:
    assert edges(module_graph(), "dedupd.ingest", "dedupd.output") == []


def test_every_module_logs_to_the_one_dedupd_logger() -> None:
    names = {
        (path.name, node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None)
        for path in module_files().values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger"
    }
    # watchers.py also hooks watchdog's own loggers, by a variable name: those are not ours.
    assert {name for _, name in names} - {None} == {"dedupd"}, sorted(names, key=str)


def test_light_imports_load_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, dedupd.cli, dedupd.model.settings, dedupd.config\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_only_the_cluster_package_imports_ray() -> None:
    """Ray is an optional extra: a NAS install has none, so no module outside dedupd.cluster may import it, and in
    dedupd.cluster only ray_embed (which session.py imports only when cluster.ray_address is set)."""
    importers = sorted(
        name
        for name, path in module_files().items()
        if any(i == "ray" or i.startswith("ray.") for i in imported_names(name, path))
    )
    assert importers == ["dedupd.cluster.ray_embed"]
