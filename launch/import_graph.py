"""The house drawn from its imports: layers, arrows that run back up, import circles, the biggest files.

    python launch/import_graph.py [REPOSITORY_ROOT]     # default: this checkout

Reads every ``hallujax/**.py`` with ``ast`` (nothing is imported), takes each
``import hallujax...`` / ``from hallujax... import ...`` as an arrow from the
importing module to the imported one (imports inside functions count too: a
lazy import still ties the two modules together), and places every module on
a floor of ``LAYERS`` below, lowest first. An arrow from a module to one on a
higher floor "runs back up". Arrows inside one floor are allowed. Circles are
the strongly connected components of the module graph with more than one
module. Exit status 0 always: this measures, tests decide (tests/test_layering.py).
"""

from __future__ import annotations

import ast
import fnmatch
import pathlib
import sys

# Floors, lowest first; a module takes the first floor with a matching pattern (fnmatch on dotted names).
# Commands (user-facing `python -m` entry points and the tools) are the top floor: nothing imports them.
LAYERS = (
    ("ground", ("hallujax", "hallujax.errors")),
    ("foundations", ("hallujax.images", "hallujax.config_base", "hallujax.optim", "hallujax.progress",
                     "hallujax.sharding", "hallujax.summary_writer", "hallujax.hlo_text", "hallujax.nn",
                     "hallujax.nn.*")),
    ("data", ("hallujax.data", "hallujax.data.*", "hallujax.photos")),
    ("models", ("hallujax.models", "hallujax.models.*")),
    # metrics above models: LPIPS is defined on a network's features (VGG-16), so the metric reads the network.
    ("metrics", ("hallujax.metrics", "hallujax.metrics.*")),
    ("convert", ("hallujax.convert", "hallujax.convert.*")),
    # run_files reads a run's saved config and checks its method against the registry (hallujax.methods), and
    # methods read earlier runs' configs with it: the registry's floor.
    ("methods", ("hallujax.methods", "hallujax.methods.*", "hallujax.federated", "hallujax.federated.aggregation",
                 "hallujax.federated.partition", "hallujax.run_files")),
    ("run", ("hallujax.checkpoint", "hallujax.run_setup", "hallujax.run.*", "hallujax.run", "hallujax.trainer",
             "hallujax.loop", "hallujax.evaluation", "hallujax.scoring", "hallujax.sampling",
             "hallujax.generator_samples", "hallujax.performance",
             "hallujax.benchmarking", "hallujax.exported", "hallujax.federated.flower")),
    ("commands", ("hallujax.cli", "hallujax.prepare", "hallujax.train", "hallujax.evaluate", "hallujax.sample",
                  "hallujax.benchmark", "hallujax.export", "hallujax.hallucinate", "hallujax.demo",
                  "hallujax.experiments",
                  "hallujax.results", "hallujax.results.*", "hallujax.tools", "hallujax.tools.*", "hallujax.federated.*")),
)
FLOOR_NAMES = ("ground", "foundations", "data", "models", "metrics", "convert", "methods", "run", "commands")


def floor_of(module: str) -> int:
  for name, patterns in LAYERS:
    if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
      return FLOOR_NAMES.index(name)
  raise ValueError(f"{module} is on no floor: add it to LAYERS in {__file__}.")


def module_files(root: pathlib.Path) -> dict[str, pathlib.Path]:
  files = {}
  for path in sorted((root / "hallujax").rglob("*.py")):
    parts = path.relative_to(root).with_suffix("").parts
    files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return files


def imports(path: pathlib.Path, modules) -> set[str]:
  """The hallujax modules `path` imports (`from hallujax.x import y` is module x.y when y is a module)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("hallujax"):
      for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        found.add(submodule if submodule in modules else node.module)
    elif isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names if alias.name.startswith("hallujax"))
  return {name for name in found if name in modules}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan's algorithm)."""
  index, low, on_stack, stack, found = {}, {}, set(), [], []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for target in sorted(graph[node]):
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

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return sorted(found)


def measure(root: pathlib.Path) -> dict:
  files = module_files(root)
  graph = {module: imports(path, files) - {module} for module, path in files.items()}
  climbs = sorted((floor_of(target) - floor_of(source), source, target)
                  for source, targets in graph.items() for target in targets
                  if floor_of(target) > floor_of(source))
  lines = sorted(((len(path.read_text().splitlines()), str(path.relative_to(root))) for path in files.values()),
                 reverse=True)
  return {"graph": graph, "climbs": climbs, "circles": circles(graph), "biggest": lines[:10]}


def short(module: str) -> str:
  return module.removeprefix("hallujax.") if module != "hallujax" else module


def main(argv) -> None:
  root = pathlib.Path(argv[1] if len(argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
  found = measure(root)
  graph = found["graph"]
  print(f"{len(graph)} modules, {sum(map(len, graph.values()))} import arrows")
  for number, name in enumerate(FLOOR_NAMES):
    members = sorted(short(module) for module in graph if floor_of(module) == number)
    print(f"floor {number} {name} ({len(members)}): {' '.join(members)}")
  print(f"\narrows that run back up: {len(found['climbs'])}")
  for _, source, target in found["climbs"]:
    print(f"  {short(source)} ({FLOOR_NAMES[floor_of(source)]}) -> {short(target)} "
          f"({FLOOR_NAMES[floor_of(target)]})")
  print(f"\nimport circles: {len(found['circles'])}")
  for component in found["circles"]:
    print("  " + " <-> ".join(short(module) for module in component))
  print("\nbiggest files (lines):")
  for count, path in found["biggest"]:
    print(f"  {count:5d} {path}")


if __name__ == "__main__":
  main(sys.argv)
