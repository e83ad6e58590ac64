"""The package layout: every import points down (no cycle), no slimfg import hides inside
a function outside the CLI, and the torch-free entry points stay torch-free."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import slimfg

ROOT = Path(slimfg.__file__).parent
# cli.py imports each command's job inside the command, so `slimfg --help` and
# `slimfg predict` start without torch; nothing else may hide a slimfg import.
LAZY_OK = {"slimfg.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imported(node: ast.AST) -> list[str]:
    """slimfg modules an import statement loads (a `from pkg import name` loads pkg.name
    when that is a module, else pkg)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "slimfg"]
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "slimfg":
        subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
        return subs or [node.module]
    return []


def with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1)]


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """(module -> modules its top level imports, [(module, lazily imported module)])."""
    graph, lazy = {}, []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top = {n for stmt in tree.body for n in imported(stmt)}
        everything = {n for node in ast.walk(tree) for n in imported(node)}
        lazy += [(name, m) for m in sorted(everything - top)]
        # a module's own ancestors are already initialising when it runs: not an edge
        graph[name] = {
            p for m in top for p in with_parents(m) if p in MODULES and not (name + ".").startswith(p + ".")
        }
    return graph, lazy


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_imports_point_one_way():
    graph, _ = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # the layers of docs/design: base modules import nothing above them
    assert graph["slimfg.runtime"] <= {"slimfg.errors"} and graph["slimfg.io"] <= {"slimfg.errors"}
    assert not graph["slimfg.errors"] and not graph["slimfg.launch"] and not graph["slimfg.card"]
    assert not {m for m in graph["slimfg.train"] if m.startswith(("slimfg.pipeline", "slimfg.cli"))}
    assert not {m for m, deps in graph.items() for d in deps if d in ("slimfg.cli", "slimfg.pipeline")} - {
        "slimfg.cli",
        "slimfg.__main__",
    }


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_hidden_slimfg_imports():
    _, lazy = import_graph()
    assert [(m, dep) for m, dep in lazy if m not in LAZY_OK] == []


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, then fail if torch, torchvision or timm got imported."""
    check = (
        "\nimport sys\nbad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm')]"
    )
    check += "\nassert not bad, bad[:5]\nprint('torch-free')"
    return subprocess.run([sys.executable, "-c", code + check], capture_output=True, text=True)


def cli_code(*args: str) -> str:
    """Python that runs `slimfg ARGS` in-process and expects exit status 0."""
    call = f"main({list(args)!r})"
    return f"from slimfg.cli import main\ntry:\n    {call}\nexcept SystemExit as e:\n    assert e.code == 0"


@pytest.mark.parametrize(
    "code", ["import slimfg.runtime", "import slimfg", cli_code("--help"), cli_code("predict", "--help")]
)
def test_entry_points_do_not_import_torch(code):
    proc = run_without_torch(code)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("torch-free"), proc.stderr[-2000:]


def test_public_api_resolves():
    for name in slimfg.__all__:
        assert getattr(slimfg, name) is not None, name
    with pytest.raises(AttributeError):
        slimfg.no_such_name  # noqa: B018
