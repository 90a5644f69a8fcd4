"""No import cycle in the library (issue 22): the modules of ``ei_snn_jax`` form a DAG.

Imports are read with ``ast``, at module level and inside functions alike (a function-level
import that dodges a cycle still counts). ``from P import x`` is an edge to ``P.x`` where that
is a module of the package, else to ``P``; importing a submodule is not counted as importing
its parent package.
"""

from __future__ import annotations

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ei_snn_jax"


def module_name(path: pathlib.Path) -> str:
  """ei_snn_jax/data/cifar.py -> 'ei_snn_jax.data.cifar'; a package's __init__ -> the package."""
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
  """Module -> the modules of the package it imports (anywhere in its body)."""
  files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in files.items():
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
          base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
          full = f"{base}.{alias.name}"
          targets.add(full if full in files else base)
    graph[name] = {t for t in targets if t in files and t != name}
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan), each sorted."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
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
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_the_cycle_finder_sees_a_function_level_cycle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert cycles(graph) == [["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
  graph = import_graph()
  assert "ei_snn_jax.data.registry" in graph and graph["ei_snn_jax.data.cifar"]
  assert cycles(graph) == [], "import cycles among these modules"
