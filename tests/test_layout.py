"""The package's shape: no import circles (function-level imports included), stages in order.

A module may import only modules of the stages before it (DESIGN.md's one-way data flow).
The walk reads the source with `ast`, so it sees the lazy imports inside functions too.
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'ptlm_jax'


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join(parts)


def import_graph() -> dict[str, set[str]]:
  """module -> the ptlm_jax modules it imports anywhere in its source."""
  paths = sorted(PACKAGE.rglob('*.py'))
  modules = {_module_name(p) for p in paths}
  graph = {}
  for path in paths:
    name = _module_name(path)
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        edges.update(a.name for a in node.names if a.name in modules)
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        for alias in node.names:
          sub = f'{node.module}.{alias.name}'
          if sub in modules:
            edges.add(sub)
          elif node.module in modules:
            edges.add(node.module)
    edges.discard(name)
    graph[name] = edges
  return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
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

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_the_circle_finder_finds_circles():
  graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}, 'e': {'f'}, 'f': set()}
  assert circles(graph) == [['a', 'b', 'c']]
  assert circles({'a': {'b'}, 'b': set()}) == []


def test_the_package_has_no_import_circles():
  graph = import_graph()
  assert 'ptlm_jax.training.train' in graph and graph['ptlm_jax.training.train']
  assert circles(graph) == []


# The stages in data-flow order; a module imports only from its own stage or earlier ones.
STAGES = (
    ('ptlm_jax.errors',),
    ('ptlm_jax.families',),
    ('ptlm_jax.config_lib', 'ptlm_jax.flops'),
    ('ptlm_jax.data',),
    ('ptlm_jax.objectives',),
    ('ptlm_jax.models',),
    ('ptlm_jax.hf',),
    ('ptlm_jax.peft',),
    ('ptlm_jax.training',),
    ('ptlm_jax.estimate',),
    ('ptlm_jax.decoding',),
    ('ptlm_jax.finetune',),
    ('ptlm_jax.main',),
)


def _stage(module: str) -> int:
  for i, prefixes in enumerate(STAGES):
    if any(module == p or module.startswith(p + '.') for p in prefixes):
      return i
  raise AssertionError(f'{module} belongs to no stage: add it to STAGES')


def test_modules_import_only_earlier_stages():
  backwards = [f'{m} -> {d}' for m, deps in import_graph().items() for d in deps
               if m != 'ptlm_jax' and d != 'ptlm_jax' and _stage(d) > _stage(m)]
  assert backwards == []
