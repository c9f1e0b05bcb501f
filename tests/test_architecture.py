"""The house rules of the package layout, read from the sources (every import, lazy ones and
``TYPE_CHECKING`` ones included): no import circle anywhere, each package imports only the
packages below it, nothing imports ``cli``, and no private name crosses a module boundary."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "smp_export", "smp_train", "smp_bench", "cli")
# What each package may import besides itself (modules of a package, or the whole package).
ALLOWED = {
    "runtime": set(),
    "smp_export": {"runtime"},
    "smp_bench": {"runtime", "smp_export"},
    "smp_train": {"runtime", "smp_export", "smp_bench.data", "smp_bench.errors"},
    "cli": {"runtime", "smp_export", "smp_train", "smp_bench"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> list[tuple[str, str]]:
    """(imported project module, imported name or "") for every import statement of ``module``."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(target, "") for alias in node.names if (target := _resolve(alias.name))]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                target = _resolve(f"{stem}.{alias.name}") or _resolve(stem)
                if target:
                    out.append((target, "" if target.endswith(alias.name) else alias.name))
    return out


GRAPH = {m: {t for t, _ in _imports(m, p) if t != m} for m, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _allowed(importer: str, target: str) -> bool:
    """A rule with a dot allows that module; one without, the whole package."""
    own, other = importer.split(".")[0], target.split(".")[0]
    return own == other or any(target == rule if "." in rule else other == rule for rule in ALLOWED[own])


def test_each_package_imports_only_what_sits_below_it():
    wrong = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets if not _allowed(m, t))
    assert wrong == []


def test_the_runtime_imports_no_other_project_package():
    assert sorted(f"{m} -> {t}" for m, ts in GRAPH.items() if m.split(".")[0] == "runtime"
                  for t in ts if t.split(".")[0] != "runtime") == []


def test_the_rules_would_catch_a_runtime_import_of_the_exporter():
    assert not _allowed("runtime.session", "smp_export.export")
    assert not _allowed("smp_export.export", "smp_bench.run") and not _allowed("smp_train.data", "smp_bench.run")
    assert _allowed("smp_train.data", "smp_bench.data") and _allowed("smp_bench.run", "smp_export.export")


def test_no_private_name_is_imported_across_modules():
    crossing = sorted(f"{m}: {name} from {t}" for m, p in MODULES.items() for t, name in _imports(m, p)
                      if name.startswith("_") and not name.startswith("__") and t != m)
    assert crossing == []
