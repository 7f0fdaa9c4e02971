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

# Lowest first: each may import only those before it.
LAYERS = (
    "config",
    "errors",
    "bounds",
    "sse",
    "api_client",
    "state",
    "openai_errors",
    "db",
    "store",
    "auth",
    "providers",
    "webhooks",
    "agents",
    "datasets",
    "jobs",
    "models",
    "exports",
    "inference",
    "evals",
    "openai_compat",
    "worker",
    "web",
    "app",
    "cli",
)

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


def _is_node(name: str) -> bool:
    return (PACKAGE_ROOT / name).is_dir() or (PACKAGE_ROOT / f"{name}.py").is_file()


def package_graph() -> dict[str, set[str]]:
    """Which top-level packages (and top-level modules) each one imports."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE_ROOT.rglob("*.py"):
        if "migrations" in path.parts or path == PACKAGE_ROOT / "__init__.py":
            continue
        source = _node(".".join(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts))
        if source is None:
            continue
        targets = {_node(imported) for imported in _imports(path)}
        graph[source] |= {t for t in targets if t and t != source and _is_node(t)}
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


def test_packages_import_only_the_layers_below_them() -> None:
    """The order docs/architecture.md draws; a new package takes its place here."""
    graph = package_graph()
    assert set(graph) <= set(LAYERS), f"place {sorted(set(graph) - set(LAYERS))} in LAYERS"
    rank = {name: index for index, name in enumerate(LAYERS)}
    upward = [
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if rank[target] > rank[source] and (source, target) not in ALLOWED_CYCLE_EDGES
    ]
    assert upward == []


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
        module
        for module in loaded
        if any(module == name or module.startswith(f"{name}.") for name in FORBIDDEN_IN_TRAINER)
    ]
    assert forbidden == []


def test_importing_the_app_loads_no_torch_or_transformers() -> None:
    """They load on the first local training or inference: imported by the app, they made
    ``tuneforge serve`` take half a minute to answer ``/health``."""
    probe = "import json, sys\nimport tuneforge.app\nprint(json.dumps(sorted(sys.modules)))\n"
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], check=True, capture_output=True, text=True
        ).stdout
    )
    assert [module for module in loaded if module.split(".")[0] in ("torch", "transformers")] == []
