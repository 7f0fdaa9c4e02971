"""The package import graph runs one way, and the training child stays light.

Top-level packages of ``tuneforge`` (``jobs``, ``worker``, ...; a top-level module such as
``errors.py`` counts as its own node) may import each other only without a cycle, so each
layer can be read, tested and changed without the ones that use it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import tuneforge

PACKAGE_ROOT = Path(tuneforge.__file__).parent

# Deliberate exceptions, each with its reason: none today.
ALLOWED_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset()

# What the training child must never load: the database, the web stack, the dataset code
# and the OpenAI tokenizers. It imports only the provider contract and the trainer.
FORBIDDEN_IN_TRAINER = (
    "tuneforge.jobs",
    "tuneforge.datasets",
    "tuneforge.db",
    "tuneforge.web",
    "sqlalchemy",
    "fastapi",
    "bpe_openai",
)


def _node(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "tuneforge" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    module_parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module_parts[: len(module_parts) - node.level]
                base = ".".join(package + ((node.module,) if node.module else ()))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE_ROOT.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        source = _node(".".join(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts))
        if source is None:
            continue
        graph[source]
        for imported in _imports(path):
            target = _node(imported)
            if (target is not None and target != source and (PACKAGE_ROOT / target).exists()) or (
                target is not None and (PACKAGE_ROOT / f"{target}.py").exists() and target != source
            ):
                graph[source].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of packages as a path that returns to its start, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if (node, target) in ALLOWED_CYCLE_EDGES:
                continue
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_import_graph_has_no_cycle() -> None:
    graph = package_graph()
    assert {"jobs", "worker", "providers", "inference", "web"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_training_child_loads_no_database_web_or_dataset_code() -> None:
    probe = (
        "import json, sys\n"
        "import tuneforge.providers.local.process\n"
        "import tuneforge.providers.local.trainer\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], check=True, capture_output=True, text=True
        ).stdout
    )
    forbidden = [
        m
        for m in loaded
        if m.split(".")[0] in FORBIDDEN_IN_TRAINER
        or m.startswith(tuple(f"{prefix}." for prefix in FORBIDDEN_IN_TRAINER))
        or m in FORBIDDEN_IN_TRAINER
    ]
    assert forbidden == []
