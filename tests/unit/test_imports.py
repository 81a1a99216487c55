"""The import graph and import side effects, checked so that they stay true.

Layering: ``miscord_client`` imports none of the server packages; ``sfu``
imports neither ``signaling`` nor ``diagnostics``; ``diagnostics`` does not
import ``signaling``. No module imports itself back through others: not at run
time, not for type checking, not inside a function. And importing everything
changes nothing in aiortc or aioice until ``install()`` is called.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("miscord_client", "sfu", "signaling", "diagnostics")
#: package -> the project packages it must never import
FORBIDDEN = {
    "miscord_client": {"sfu", "signaling", "diagnostics"},
    "sfu": {"signaling", "diagnostics"},
    "diagnostics": {"signaling"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module ``name`` imports, wherever the import statement is
    (top level, ``if TYPE_CHECKING``, a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a import b``: the module a.b when it is one, else a
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]  # a name inside a module
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_package_and_its_imports():
    graph = import_graph()
    assert {name.split(".")[0] for name in graph} == set(PACKAGES)
    assert len(graph) > 60
    # a few edges known to exist: the reader must not miss relative imports
    assert "sfu.publication" in graph["sfu.participant"]
    assert "miscord_client.protocol" in graph["signaling.protocol"]
    assert "sfu.native" in graph["sfu.fastpath"]


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


def test_a_cycle_is_found_where_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_layers_import_only_downwards():
    wrong = [
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        for target in targets
        if target.split(".")[0] in FORBIDDEN.get(name.split(".")[0], set())
    ]
    assert wrong == []


#: run in a fresh interpreter: every attribute of aiortc's and aioice's modules
#: and classes before and after importing the project, then after install()
SNAPSHOT = """
import importlib, json, pkgutil, sys
import aioice, aiortc

def load(package):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)

def snapshot():
    state = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in ("aioice", "aiortc"):
            continue
        for attr, value in vars(module).items():
            state[f"{name}.{attr}"] = id(value)
            if isinstance(value, type) and value.__module__ == name:
                for key, member in vars(value).items():
                    state[f"{name}.{attr}.{key}"] = id(member)
    return state

load(aioice)
load(aiortc)
before = snapshot()
for package in sys.argv[1:]:
    load(importlib.import_module(package))
imported = snapshot()
import miscord_client.ice
miscord_client.ice.install()
installed = snapshot()

def changed(a, b):
    return sorted(k for k in a if k in b and a[k] != b[k])

print(json.dumps({"imported": changed(before, imported),
                  "installed": changed(imported, installed)}))
"""


def test_importing_changes_nothing_in_aiortc_or_aioice_until_install():
    out = subprocess.run(
        [sys.executable, "-c", SNAPSHOT, *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    changes = json.loads(out.stdout.strip().splitlines()[-1])
    assert changes["imported"] == []
    assert changes["installed"] == ["aiortc.rtcicetransport.Connection"]
