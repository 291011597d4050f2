"""The house's imports (launch/import_graph.py): no import circles, and no arrow runs back up its floors."""

import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent

# Arrows that run back up on purpose, each with its reason (none today).
KNOWN_CLIMBS: set[tuple[str, str]] = set()


def import_graph():
  spec = importlib.util.spec_from_file_location("import_graph", REPO / "launch" / "import_graph.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_the_package_has_no_import_circles_and_no_new_arrows_back_up():
  graph = import_graph()
  found = graph.measure(REPO)
  assert found["circles"] == [], found["circles"]
  climbs = {(source, target) for _, source, target in found["climbs"]}
  assert climbs <= KNOWN_CLIMBS, sorted(climbs - KNOWN_CLIMBS)


def test_the_measure_finds_a_circle_and_a_climb(tmp_path):
  """The measure can fail: a data module importing the loop is a climb, two modules importing each other a circle."""
  package = tmp_path / "hallujax"
  (package / "data").mkdir(parents=True)
  (package / "__init__.py").write_text("")
  (package / "data" / "__init__.py").write_text("")
  (package / "data" / "pipeline.py").write_text("from hallujax import loop\n")
  (package / "loop.py").write_text("from hallujax.data import pipeline\n")
  found = import_graph().measure(tmp_path)
  assert found["circles"] == [["hallujax.data.pipeline", "hallujax.loop"]]
  assert [(source, target) for _, source, target in found["climbs"]] == [("hallujax.data.pipeline", "hallujax.loop")]
