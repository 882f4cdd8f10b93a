"""Imports run one way: node.py reaches nothing in mailpair.admin (the tools sit above the node),
and no mailpair module imports, directly or through others, a module that imports it back.

Read from the source with ast, so the check covers every module without importing any. Imports
under `if TYPE_CHECKING:` are for annotations only and do not count. Importing a submodule
(`mailpair.a.b`) runs its package's __init__ first, but a package that re-exports its own
submodules is not a cycle by that alone, so only the named module is an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mailpair"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The mailpair modules `name` imports (function bodies included, TYPE_CHECKING blocks not)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = name if is_package else name.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    out.add(sub if sub in known else base)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def reachable(g: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(g[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(g.get(m, ()))
    return seen


def test_node_imports_nothing_from_admin():
    g = graph()
    upward = sorted(m for m in reachable(g, "mailpair.node") if m.startswith("mailpair.admin"))
    assert not upward, f"mailpair.node reaches {upward}"


KNOWN_CYCLES: set[str] = set()  # none: the test fails on any cycle


def test_no_import_cycles():
    g = graph()
    cycles = {name for name in g if name in reachable(g, name)}
    assert not cycles - KNOWN_CYCLES, f"modules that import themselves back: {sorted(cycles - KNOWN_CYCLES)}"
    assert not KNOWN_CYCLES - cycles, f"no longer a cycle, drop from KNOWN_CYCLES: {sorted(KNOWN_CYCLES - cycles)}"
