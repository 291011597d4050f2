"""jax.export of the batched face hallucination: round trip, any batch size, a loader without method code."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hallujax import cli, export, hallucinate
from tests.test_hallucinate import trained_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOADER = """
import sys
import numpy as np
from hallujax import exported
model = exported.load(sys.argv[1])
inputs = np.load(sys.argv[2])
np.save(sys.argv[3], model(inputs))
np.save(sys.argv[4], model(inputs[:2]))
leaked = sorted(name for name in sys.modules if name.startswith(("hallujax.methods", "hallujax.models", "flax")))
print("leaked:" + ",".join(leaked))
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  return hallucinate.load_model(trained_run(tmp_path_factory.mktemp("tiny")), None, None, batch_size=4)


def test_exported_model_matches_the_in_process_function_for_any_batch_without_method_code(tmp_path, model):
  path = str(tmp_path / "model.hlo")
  metadata = export.export_model(model, path, platforms=("cpu", "cuda"))
  assert metadata["platforms"] == ["cpu", "cuda"] and metadata["output_size"] == 32
  stored = json.loads((tmp_path / "model.json").read_text())
  assert stored["input_size"] == 8 and len(stored["template"]) == 5
  # Only what the hallucination reads is saved: the upsampler's 4 arrays, not the optimizer state.
  assert all(name.startswith("[0].params") for name in stored["parameter_names"]), stored["parameter_names"]

  inputs = np.random.default_rng(1).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
  expected = model.run(inputs)
  np.save(tmp_path / "inputs.npy", inputs)
  done = subprocess.run([sys.executable, "-c", LOADER, path, str(tmp_path / "inputs.npy"),
                         str(tmp_path / "four.npy"), str(tmp_path / "two.npy")],
                        cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == "leaked:"       # no method, model or flax module was imported
  four, two = np.load(tmp_path / "four.npy"), np.load(tmp_path / "two.npy")
  assert four.shape == (4, 32, 32, 3) and two.shape == (2, 32, 32, 3)
  np.testing.assert_allclose(four, expected, atol=1e-6)
  np.testing.assert_allclose(two, expected[:2], atol=1e-6)
  assert export.round_trip_difference(model, path) <= 1e-6


def test_exported_model_hallucinates_photos_like_the_run(tmp_path, model):
  """The photos pipeline takes the exported file as its face model and gives the run's faces."""
  from hallujax import exported, photos
  path = str(tmp_path / "model.hlo")
  export.export_model(model, path, platforms=("cpu",))
  loaded = exported.load(path, batch_size=4)
  face = np.random.default_rng(2).integers(0, 256, (40, 40, 3)).astype(np.uint8)
  results = {}
  for name, face_model in (("run", model), ("exported", loaded)):
    hallucinator = photos.Hallucinator(face_model, None, photos.Options(mode="aligned"))
    results[name], = hallucinator.feed("face", face) + hallucinator.finish()
  assert results["run"].output.shape == (40, 40, 3)    # automatic upscale: 40 px already beyond 32² output
  assert np.abs(results["run"].output.astype(int) - results["exported"].output).max() <= 1
  assert loaded.compiles == 1


def test_export_command_one_line_errors(tmp_path):
  done = subprocess.run([sys.executable, "-m", "hallujax.export", f"--workdir={tmp_path / 'none'}",
                         f"--output={tmp_path / 'm.hlo'}"], cwd=REPO, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=REPO))
  assert done.returncode == cli.EXIT_USAGE and "no such directory" in done.stderr
  assert done.stderr.strip().count("\n") == 0
