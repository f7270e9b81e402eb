"""Layout rules of the monorepo that a reader relies on: no import cycles between modules of a package (module-
level or inside functions; ``if TYPE_CHECKING:`` imports excluded), one training loop, no cli.py logic."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = [
    ROOT / "shared_attention" / "src",
    *sorted((ROOT / "packages").glob("*/src")),
    ROOT / "apps" / "serve" / "src",
]


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements outside ``if TYPE_CHECKING:`` blocks."""
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _graph(root: Path) -> dict[str, set[str]]:
    files = {_module_name(root, f): f for f in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target, *(f"{target}.{a.name}" for a in node.names)]
            else:
                names = [a.name for a in node.names]
            deps |= {n for n in names if n in files and n != mod}
        graph[mod] = {d for d in deps if not d.startswith(mod + ".") and not mod.startswith(d + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    seen: set[str] = set()
    stack: list[str] = []

    def dfs(u: str) -> None:
        seen.add(u)
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if v in stack:
                found.append([*stack[stack.index(v) :], v])
            elif v not in seen:
                dfs(v)
        stack.pop()

    for mod in sorted(graph):
        if mod not in seen:
            dfs(mod)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = [" -> ".join(c) for root in SOURCE_ROOTS for c in _cycles(_graph(root))]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_one_training_loop() -> None:
    """``def fit`` and ``optimizer.step()`` exist only in the engine."""
    hits = []
    for root in SOURCE_ROOTS:
        for path in root.rglob("*.py"):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"def fit\b|optimizer\.step\(\)", line):
                    hits.append(f"{path.relative_to(ROOT)}:{i}")
    assert hits and all(h.startswith("shared_attention/src/shared_attention/engine/trainer.py") for h in hits), hits


def test_package_clis_are_generated() -> None:
    """Every package's console script is its Domain's generated CLI; ``cli.py`` is only a deprecated alias."""
    for pkg in sorted((ROOT / "packages").iterdir()):
        name = pkg.name
        toml = (pkg / "pyproject.toml").read_text(encoding="utf-8")
        assert f'sa-{name} = "sa_{name}.domain:main"' in toml, name
        assert f'{name} = "sa_{name}.domain:DOMAIN"' in toml, name
        cli = pkg / "src" / f"sa_{name}" / "cli.py"
        if cli.exists():
            assert "def " not in cli.read_text(encoding="utf-8"), f"{cli}: logic belongs in domain.py / evaluate.py"
