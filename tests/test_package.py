"""The package's shape: no import cycles (function-local imports included) and no oversized module."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "simdis_jax"
MAX_LINES = 500


def modules():
  """{dotted module name: path} of every .py file under simdis_jax/."""
  found = {}
  for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        found[dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
  return found


def imported_modules(path, known):
  """The package modules a file imports anywhere (top level or inside functions)."""
  names = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(known)  # `from pkg import module`
      names.update(submodules)
      if len(submodules) < len(node.names):  # a name defined in node.module itself (its __init__ for a package)
        names.add(node.module)
  return {n for n in names if n in known}


def import_graph():
  """{module: set of package modules it imports}."""
  known = modules()
  return {name: imported_modules(path, known) - {name} for name, path in known.items()}


def find_cycle(graph):
  """One import cycle as a list of modules [a, b, ..., a], or None."""
  state = {}  # module -> 1 while on the DFS stack, 2 when done

  def visit(node, stack):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in state:
        cycle = visit(nxt, stack)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node, [])
      if cycle:
        return cycle
  return None


def test_the_cycle_finder_sees_an_import_hidden_in_a_function(tmp_path):
  module = tmp_path / "knn.py"
  module.write_text("import numpy\n\ndef f():\n  from simdis_jax import train\n  import simdis_jax.runs\n")
  known = {"simdis_jax.train": "", "simdis_jax.runs": "", "simdis_jax.evaluation.knn": ""}
  assert imported_modules(str(module), known) == {"simdis_jax.train", "simdis_jax.runs"}
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
  graph = import_graph()
  assert "simdis_jax.evaluation.knn" in graph and "simdis_jax.runs" in graph["simdis_jax.evaluation.knn"]
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_module_over_500_lines():
  sizes = {os.path.relpath(p, ROOT): sum(1 for _ in open(p, encoding="utf-8")) for p in modules().values()}
  over = {p: n for p, n in sizes.items() if n > MAX_LINES}
  assert not over, f"modules over {MAX_LINES} lines: {over}"
