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


def test_an_exported_face_world_model_still_says_what_it_learned_from(tmp_path, model, monkeypatch):
  from hallujax import exported
  monkeypatch.setattr(model, "data_source", "faceworld")
  path = str(tmp_path / "model.hlo")
  export.export_model(model, path, platforms=("cpu",))
  loaded = exported.load(path, batch_size=4)
  assert loaded.data_source == "faceworld"
  assert "trained only on the synthetic face world" in hallucinate.face_world_note(loaded)


def test_export_command_one_line_errors(tmp_path):
  done = subprocess.run([sys.executable, "-m", "hallujax.export", f"--workdir={tmp_path / 'none'}",
                         f"--output={tmp_path / 'm.hlo'}"], cwd=REPO, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=REPO))
  assert done.returncode == cli.EXIT_USAGE and "no such directory" in done.stderr
  assert done.stderr.strip().count("\n") == 0


# ----- hostile model files: the loader refuses each with one line, before compiling anything

CALLBACK = "xla_ffi_python_cpu_callback"


def write_model(directory, function=None, disabled=(), **metadata_changes):
  """A hand-made exported model: (b, 4, 4, 3) faces -> (b, 8, 8, 3), one parameter; returns model.hlo's path."""
  import jax
  import jax.numpy as jnp
  from hallujax import exported
  function = function or (lambda params, faces: jnp.repeat(jnp.repeat(faces, 2, 1), 2, 2) * params[0])
  batch, = jax.export.symbolic_shape("b")
  model = jax.export.export(jax.jit(function), platforms=("cpu",), disabled_checks=list(disabled))(
      [jax.ShapeDtypeStruct((), jnp.float32)], jax.ShapeDtypeStruct((batch, 4, 4, 3), jnp.float32))
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "model.hlo")
  with open(path, "wb") as f:
    f.write(model.serialize())
  np.savez(os.path.join(directory, "model.params.npz"), p0000=np.float32(1.0))
  metadata = {"format": exported.FORMAT, "parameters": "model.params.npz", "run": "hand-made", "method": "none",
              "input_size": 4, "input_channels": 3, "output_size": 8, "downsample": "bicubic",
              "template_name": "arcface", "template": [[0.3, 0.4]] * 5}
  metadata.update(metadata_changes)
  with open(os.path.join(directory, "model.json"), "w") as f:
    json.dump(metadata, f)
  return path


def callback_model(directory):
  import jax
  call = lambda params, faces: jnp_repeat(jax.ffi.ffi_call(CALLBACK, jax.ShapeDtypeStruct(faces.shape, faces.dtype))(
      faces)) * params[0]
  return write_model(directory, call, disabled=[jax.export.DisabledSafetyCheck.custom_call(CALLBACK)])


def jnp_repeat(faces):
  import jax.numpy as jnp
  return jnp.repeat(jnp.repeat(faces, 2, 1), 2, 2)


def garbage(name, content):
  def make(directory):
    path = write_model(directory)
    with open(os.path.join(directory, name), "wb") as f:
      f.write(content)
    return path
  return make


def outside_parameters(directory):
  path = write_model(directory, parameters="../elsewhere.npz")
  np.savez(os.path.join(os.path.dirname(directory), "elsewhere.npz"), p0000=np.float32(1.0))
  return path


HOSTILE_MODELS = {
    "host callback": (callback_model, CALLBACK),
    "garbage model.hlo": (garbage("model.hlo", b"\x00garbage" * 50), "not a model written by"),
    "empty model.hlo": (garbage("model.hlo", b""), "not a model written by"),
    "garbage model.json": (garbage("model.json", b"{not json"), "not a model description"),
    "json list": (garbage("model.json", b"[1, 2]"), "format"),
    "parameters outside": (outside_parameters, "file name in the model's folder"),
    "absolute parameters": (lambda d: write_model(d, parameters="/etc/passwd"), "file name in the model's folder"),
    "parameters not a string": (lambda d: write_model(d, parameters=["x"]), "file name in the model's folder"),
    "pickled parameters": (garbage("model.params.npz", b"\x80\x04K\x01."), "not the model's parameters"),
    "missing field": (lambda d: write_model(d, input_size=None), "garbles a field"),
}


@pytest.mark.parametrize("name", list(HOSTILE_MODELS))
def test_hostile_model_files_are_refused_in_one_line(tmp_path, name):
  from hallujax import exported
  make, expected = HOSTILE_MODELS[name]
  path = make(str(tmp_path / "model"))
  with pytest.raises(exported.ExportedModelError) as error:
    exported.load(path)
  assert expected in str(error.value) and "\n" not in str(error.value)


def test_the_hand_made_model_itself_loads_and_runs(tmp_path):
  from hallujax import exported
  model = exported.load(write_model(str(tmp_path / "model")))
  assert model(np.zeros((2, 4, 4, 3), np.float32) + 0.5).shape == (2, 8, 8, 3)
