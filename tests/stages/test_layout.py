"""The layout of ``stages/``: one sub-package per stage, imports that go downward only.

Every ``import`` of a ``stages`` module (module-level, inside functions, and under
``TYPE_CHECKING``) is an edge; the graph must have no cycle, and the top-level plumbing must
not import a stage sub-package (``cli`` names the stages' ``run`` as strings, imported on use).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ROOT / "stages"
SUBPACKAGES = ("prepare", "import_teacher", "train", "precompute", "distill", "report")


def _modules() -> dict[str, Path]:
    out = {}
    for p in STAGES.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
                    break  # the most specific module that exists
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_stages_has_one_subpackage_per_stage() -> None:
    for sub in SUBPACKAGES:
        assert (STAGES / sub / "__init__.py").is_file(), sub
        assert (STAGES / sub / "config.py").is_file(), sub  # each stage's options beside it
    top = sorted(p.stem for p in STAGES.glob("*.py"))
    assert len(top) <= 12, top  # plumbing only at the top


def test_no_import_circle_in_stages() -> None:
    graph = _edges(_modules())
    assert sum(len(v) for v in graph.values()) > 50  # the graph was read
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_top_imports_no_stage_subpackage() -> None:
    graph = _edges(_modules())
    for name, targets in graph.items():
        if name.count(".") == 1 and name != "stages.cli":
            down = [t for t in targets if t.split(".")[1] in SUBPACKAGES]
            assert not down, f"{name} imports {down}"


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_stage_module_imports_on_its_own() -> None:
    """Each module imported first, in a fresh interpreter (one process for all, each import
    in a clean sys.modules): an import-order dependency would fail here."""
    names = sorted(_modules())
    code = (
        "import importlib, sys\n"
        f"names = {names!r}\n"
        "base = set(sys.modules)\n"
        "for n in names:\n"
        "    for k in [k for k in sys.modules if k.startswith('stages') and k not in base]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module(n)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
