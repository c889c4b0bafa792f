"""The import graph is layered, with no cycle, in both languages.

A module may import only modules of a lower layer, or of its own family (``_process*``,
``_files*``, the ``_bench`` subpackage) where the family's own imports stay acyclic. Imports inside
functions count like any other: they are how cycles hide. Rust modules are checked for cycles
through their ``crate::`` paths, per crate.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "ferrio"

# Lower layers first. A module not named here takes the layer of the first entry its name starts with.
LAYERS: list[tuple[str, ...]] = [
    ("_errors", "_public", "_ferrio"),  # exceptions and messages, module metadata, the compiled core
    ("_stats", "_wakers", "_chunks", "_wire", "_files_readahead"),  # small pieces over the core
    ("_limiter",),
    ("_loops",),  # event loops on threads: ferrio.run, calls into a loop, the coroutine runner
    ("_threads",),  # the thread pools; registers the hooks the core calls back
    ("_sync", "_files", "_process", "_shared", "_watchdog", "_pinned"),  # the features, each over the pools
    ("_portal",),
    ("from_thread",),
    ("__init__",),
    ("sqlite",),  # aiosqlite's API over the pinned threads, imported by name
    ("_bench", "_watch_cli"),  # tools over the public package: the benchmark, `python -m ferrio watch`
    ("pytest_plugin",),  # the pytest plugin, over the watch command's threshold parser
    ("__main__",),  # the command line
]

# Within a family, its modules' own layers, lowest first: the process pool's public API over its
# manager (the engine) over the worker-start glue and the worker's main.
FAMILY_LAYERS: dict[str, list[tuple[str, ...]]] = {
    "_process": [("_process_forkserver", "_process_worker"), ("_process_manager",), ("_process",)],
}

# Function-local imports of ferrio modules that are not hiding a cycle, each with its reason.
LOCAL_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {}


def _layer_of(module: str) -> int:
    top = module.split(".")[0]
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    for rank, names in enumerate(LAYERS):
        if any(top.startswith(name) for name in names if name.startswith("_") and name != "__init__"):
            return rank
    raise AssertionError(f"ferrio.{module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def _family(module: str) -> str:
    top = module.split(".")[0]
    for prefix in ("_process", "_files", "_bench"):
        if top.startswith(prefix):
            return prefix
    return top


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _resolve(module: str, node: ast.ImportFrom | ast.Import, path: Path) -> list[str]:
    """The ferrio modules (dotted, relative to the package) that one import statement imports."""
    if isinstance(node, ast.Import):
        return [a.name.removeprefix("ferrio.") for a in node.names if a.name.startswith("ferrio.")] + [
            "__init__" for a in node.names if a.name == "ferrio"
        ]
    if node.level == 0:
        if node.module is None or not (node.module == "ferrio" or node.module.startswith("ferrio.")):
            return []
        base = node.module.removeprefix("ferrio").removeprefix(".")
    else:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        if module == "__init__":
            package = []
        package = package[: len(package) - (node.level - 1)] if node.level > 1 else package
        base = ".".join([*package, *([node.module] if node.module else [])])
    known = _modules()
    targets = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}" if base else alias.name
        if candidate in known:
            targets.append(candidate)  # `from . import _ferrio` style: the submodule itself
        elif base:
            targets.append(base)
        else:
            targets.append("__init__" if alias.name not in ("_ferrio",) else "_ferrio")
    return [t if t != "" else "__init__" for t in targets]


def _python_edges() -> list[tuple[str, str, bool, int]]:
    """(importer, imported, inside a function, line) for every import of a ferrio module."""
    edges = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(), str(path))
        local_lines = {
            n.lineno
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
            if isinstance(n, (ast.Import, ast.ImportFrom))
        }
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, node, path):
                    if target != module:
                        edges.append((module, target, node.lineno in local_lines, node.lineno))
    return edges


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_python_modules_import_only_lower_layers_or_their_own_family() -> None:
    wrong = [
        f"ferrio.{a} (layer {_layer_of(a)}) imports ferrio.{b} (layer {_layer_of(b)}) at line {line}"
        for a, b, _, line in _python_edges()
        if _layer_of(b) > _layer_of(a) or (_layer_of(b) == _layer_of(a) and _family(a) != _family(b))
    ]
    assert not wrong, "\n".join(wrong)


def _family_layer_of(module: str) -> int:
    top = module.split(".")[0]
    for rank, names in enumerate(FAMILY_LAYERS[_family(module)]):
        if top in names:
            return rank
    raise AssertionError(f"ferrio.{module} is in no layer of its family: add it to FAMILY_LAYERS")


def test_modules_of_a_family_import_only_its_lower_modules() -> None:
    for family, layers in FAMILY_LAYERS.items():
        members = {m for m in _modules() if _family(m) == family}
        assert members == {m for names in layers for m in names}, f"FAMILY_LAYERS[{family!r}] lists {layers}"
    wrong = [
        f"ferrio.{a} imports ferrio.{b} at line {line}, not a lower module of its family"
        for a, b, _, line in _python_edges()
        if _family(a) == _family(b) in FAMILY_LAYERS and _family_layer_of(b) >= _family_layer_of(a)
    ]
    assert not wrong, "\n".join(wrong)
    assert _family_layer_of("_process_forkserver") < _family_layer_of("_process_manager") < _family_layer_of("_process")


def test_python_import_graph_has_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for a, b, _, _ in _python_edges():
        graph.setdefault(a, set()).add(b)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_function_local_import_of_a_ferrio_module() -> None:
    local = [
        f"ferrio.{a} imports ferrio.{b} inside a function at line {line}"
        for a, b, inside, line in _python_edges()
        if inside and (a, b) not in LOCAL_IMPORTS_ALLOWED
    ]
    assert not local, "\n".join(local)


def test_the_checker_sees_a_cycle_and_a_layer_violation() -> None:
    # The checks above can fail: a graph with a cycle is caught, and so is an upward import.
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
    assert _layer_of("_errors") < _layer_of("_threads") < _layer_of("_portal") < _layer_of("__init__")
    assert _layer_of("_bench._harness") == _layer_of("_bench")
    assert _layer_of("_process_manager") == _layer_of("_process")


_RUST_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_USE_GROUP = re.compile(r"\buse\s+crate::\{(.*?)\};", re.S)
_CRATE_PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def _rust_edges(src: Path) -> dict[str, set[str]]:
    modules = {p.stem for p in src.glob("*.rs")} | {p.name for p in src.iterdir() if p.is_dir()}
    graph: dict[str, set[str]] = {}
    for path in src.rglob("*.rs"):
        rel = path.relative_to(src)
        module = rel.parts[0] if len(rel.parts) > 1 else path.stem
        text = _RUST_COMMENT.sub("", path.read_text())
        names = set(_CRATE_PATH.findall(text))
        for group in _USE_GROUP.findall(text):
            depth, item = 0, ""
            for ch in group + ",":
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if ch == "," and depth == 0:
                    names.add(re.split(r"\W", item.strip(), maxsplit=1)[0])
                    item = ""
                else:
                    item += ch
        graph[module] = graph.get(module, set()) | {n for n in names if n in modules and n != module}
    return graph


@pytest.mark.parametrize("crate", sorted(p.name for p in (ROOT / "crates").iterdir() if (p / "src").is_dir()))
def test_rust_modules_of_each_crate_have_no_cycle(crate: str) -> None:
    graph = _rust_edges(ROOT / "crates" / crate / "src")
    assert graph, f"no Rust modules found for {crate}"
    assert _cycle(graph) is None, f"{crate}: " + " -> ".join(_cycle(graph) or [])


def test_every_python_exception_of_the_bindings_is_built_in_errors_rs() -> None:
    """errors.rs is the one place the bindings word their exceptions (issue 12)."""
    src = ROOT / "crates" / "ferrio-py" / "src"
    elsewhere = [
        f"{path.name}:{n}"
        for path in sorted(src.rglob("*.rs"))
        if path.name != "errors.rs"
        for n, line in enumerate(_RUST_COMMENT.sub("", path.read_text()).splitlines(), 1)
        if "::new_err(" in line
    ]
    assert not elsewhere, f"build these in errors.rs instead: {elsewhere}"
