"""Faces in real photos: detection on a real photo, paste-back only inside the face, one compile, clear errors."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hallujax import cli, hallucinate, photos, loop
from hallujax.data import face_detection
from tests.tiny import tiny_config

skimage_data = pytest.importorskip("skimage.data")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def face_config():
  """The tiny method at a face-like scale: 8² → 32², two training steps (seconds)."""
  config = tiny_config()
  config.data.update(input_size=8, target_size=32)
  config.train.update(steps=2, checkpoint_every=2, eval_every=2, image_every=2)
  return config


def trained_run(directory) -> str:
  workdir = str(directory / "run")
  loop.train(face_config(), workdir)
  return workdir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return trained_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def model(run):
  return hallucinate.load_model(run, None, None, batch_size=2)


def needs_dlib():
  pytest.importorskip("dlib", reason="face detection needs the eval extra: pip install dlib-bin face-recognition-models")
  if face_detection.importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("face detection needs the eval extra: pip install dlib-bin face-recognition-models")


@pytest.fixture(scope="module")
def detector():
  needs_dlib()
  return face_detection.Detector()


def two_face_photo() -> np.ndarray:
  """The astronaut next to a real LFW face enlarged ×4 (a second, smaller face)."""
  astronaut = skimage_data.astronaut()
  lfw = (skimage_data.lfw_subset()[0] * 255).astype(np.uint8)
  lfw = np.asarray(Image.fromarray(lfw).resize((100, 100), Image.BICUBIC))
  canvas = np.full((512, 200, 3), 200, np.uint8)
  canvas[200:300, 50:150] = lfw[..., None]
  return np.concatenate([astronaut, canvas], axis=1)


def test_folder_faces_pasted_inside_their_boxes_only_in_fixed_batches_with_one_compile(tmp_path, model, detector):
  folder = tmp_path / "in"
  folder.mkdir()
  Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.png")
  Image.fromarray(two_face_photo()).save(folder / "pair.jpg", quality=95)
  Image.fromarray(np.full((60, 90, 3), 128, np.uint8)).save(folder / "wall.png")
  (folder / "notes.jpg").write_bytes(b"not an image")
  output = tmp_path / "out"
  summary = hallucinate.hallucinate_folder(model, detector, photos.Options(upscale=1), str(folder), str(output))

  assert (summary["faces"], summary["photos_with_faces"], summary["no_face"], summary["unreadable"]) == (3, 2, 1, 1)
  # 3 faces in batches of 2: two runs of the one compiled program, the last padded by one.
  assert (summary["batches"], summary["padded_faces"], model.compiles) == (2, 1, 1)
  entries = {os.path.basename(e["file"]): e for e in json.loads((output / "faces.json").read_text())["images"]}
  assert "not an image" in entries["notes.jpg"]["error"]
  assert (output / "wall.png").read_bytes() == (folder / "wall.png").read_bytes()   # copied unchanged

  original = skimage_data.astronaut()
  result = np.asarray(Image.open(output / "astronaut.png"))
  assert result.shape == original.shape
  face, = entries["astronaut.png"]["faces"]
  left, top, right, bottom = (int(round(v)) for v in face["paste_box"])
  outside = np.ones(original.shape[:2], bool)
  outside[top:bottom, left:right] = False
  assert np.array_equal(result[outside], original[outside])
  assert np.abs(result[top:bottom, left:right].astype(int) - original[top:bottom, left:right]).mean() > 2
  # The paste region is the face: it overlaps dlib's box and is not much larger.
  box = face["box"]
  assert left < box[2] and box[0] < right and top < box[3] and box[1] < bottom
  assert (right - left) < 1.6 * (box[2] - box[0])
  assert len(face["landmarks"]) == 68 and face["score"] > 0.5 and face["input"].startswith("real")
  pair = entries["pair.jpg"]["faces"]
  assert len(pair) == 2 and pair[0]["box"][0] < 512 <= pair[1]["box"][0]       # largest first: the astronaut
  side = np.asarray(Image.open(pair[1]["side_by_side"]))
  assert side.shape[0] >= 128 and side.shape[1] >= 3 * 128


def test_feathered_colour_matched_paste_has_a_smaller_seam_than_a_hard_paste(model, detector):
  photo = skimage_data.astronaut()
  face = detector(photo)[0]
  matrix = photos.face_matrix(face.landmarks, model.template, model.output_size)
  jumps, seams = {}, {}
  for name, options in (("hard", photos.Options(hard_paste=True)), ("feathered", photos.Options())):
    hallucinator = photos.Hallucinator(model, detector, options)
    result, = hallucinator.feed("astronaut", photo) + hallucinator.finish()
    jumps[name] = photos.seam_difference(result.output, matrix, hallucinator.ellipse)
    seams[name] = photos.seam_excess(result.output, photo, matrix, hallucinator.ellipse)
  jumps["photo"] = photos.seam_difference(photo, matrix, hallucinator.ellipse)
  assert seams["feathered"] < 0.5 * seams["hard"], seams
  assert jumps["feathered"] < jumps["hard"], jumps
  assert photos.seam_excess(photo, photo, matrix, hallucinator.ellipse) == 0


def test_paste_inverts_alignment():
  """Aligning a photo and pasting the aligned crop back with a full mask gives the photo back inside the crop."""
  photo = skimage_data.astronaut().astype(np.float32)
  landmarks = np.array([[200.0, 110.0], [248.0, 112.0], [224.0, 135.0], [205.0, 160.0], [245.0, 160.0]])
  matrix = photos.alignment.similarity_transform(landmarks, photos.TEMPLATES["arcface"] * 112)
  crop = photos.alignment.warp_affine(photo, matrix, 112)
  canvas = np.zeros_like(photo)
  photos.paste(canvas, crop, np.ones((112, 112), np.float32), matrix)
  inner = photos.alignment.transform_points(photos.inverse(matrix), np.array([[20.0, 20.0], [92.0, 92.0]]))
  (left, top), (right, bottom) = inner.astype(int)
  error = np.abs(canvas[top:bottom, left:right] - photo[top:bottom, left:right]).mean()
  assert error < 4.0, error       # two bilinear resamplings of a 512² photo
  assert canvas[:top - 30].max() == 0


@dataclasses.dataclass
class FaceSizes:
  """What prepare_face reads of a face model: FH-GAN's paper sizes, 28² → 112²."""
  input_size: int = 28
  output_size: int = 112
  input_channels: int = 3
  downsample: str = "bilinear"
  reads_landmarks: bool = False


def test_small_real_face_is_fed_as_it_is_and_degrade_says_what_it_did():
  """A 25² LFW face is smaller than a 28² input, so "real" samples its own pixels; "degrade" downsamples ×4."""
  sizes = FaceSizes()
  face_image = np.repeat((skimage_data.lfw_subset()[3] * 255).astype(np.uint8)[..., None], 3, axis=-1)
  face, matrix = photos.aligned_face(face_image, photos.TEMPLATES["arcface"])
  matrix = matrix * sizes.output_size
  real = photos.prepare_face(face_image, face, matrix, sizes, "real")
  degraded = photos.prepare_face(face_image, face, matrix, sizes, "degrade")
  expected = photos.alignment.warp_affine(face_image, matrix * (28 / 112), 28)
  np.testing.assert_array_equal(real.input_image, expected)
  assert real.description.startswith("real") and "25 px" in real.description
  assert degraded.description.startswith("synthetic") and "×4" in degraded.description
  assert np.abs(real.input_image.astype(int) - degraded.input_image).mean() > 1   # blurred by the degradation
  large = np.asarray(Image.fromarray(face_image).resize((100, 100), Image.BICUBIC))
  face, matrix = photos.aligned_face(large, photos.TEMPLATES["arcface"])
  resized = photos.prepare_face(large, face, matrix * 112, sizes, "real")
  assert "100 px" in resized.description and "resized to 28² with bilinear" in resized.description


def test_method_without_an_output_column_is_refused():
  from hallujax.methods import make_method
  config = face_config()
  method = dataclasses.replace(make_method(config), hallucinate=lambda state, frozen, batch: {"target": batch["target"]})
  with pytest.raises(cli.UserError, match="has no face hallucination.*'output'"):
    hallucinate.check_photo_method(method, config)


def test_checkpoint_of_another_config_is_refused_in_one_line(run):
  other = face_config()
  other.data.target_size = 64
  with pytest.raises(cli.UserError, match="another config.*data.target_size=32"):
    hallucinate.load_model(None, os.path.join(run, "checkpoints", "2"), other, "configs/other.py")


def test_command_writes_photo_side_by_side_and_json(tmp_path, run):
  needs_dlib()
  photo = tmp_path / "astronaut.jpg"
  Image.fromarray(skimage_data.astronaut()).save(photo, quality=95)
  output = tmp_path / "out"
  command = [sys.executable, "-m", "hallujax.hallucinate", f"--workdir={run}", f"--input={photo}",
             f"--output={output}", "--mode=largest", "--degrade", "--batch_size=1", "--upscale=1"]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=REPO))
  assert done.returncode == 0, done.stderr[-2000:]
  summary = json.loads((output / "faces.json").read_text())
  assert summary["input_mode"] == "degrade" and summary["faces"] == 1 and summary["compiles"] == 1
  assert summary["images"][0]["faces"][0]["input"].startswith("synthetic")
  assert Image.open(output / "astronaut.png").size == (512, 512)
  assert (output / "faces" / "astronaut_0.png").is_file()
  missing = subprocess.run(command[:3] + [f"--input={tmp_path / 'nothing'}", f"--output={output}"], cwd=REPO,
                           capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
  assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
  assert "no such file or folder" in missing.stderr


def test_federated_run_hallucinates_with_the_chosen_clients_model(tmp_path):
  config = face_config()
  config.data.clients = 2
  loop.train(config, str(tmp_path / "run"))
  faces = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  faces = np.concatenate([faces, faces])
  outputs = [hallucinate.load_model(str(tmp_path / "run"), None, None, batch_size=4, client=k).run(faces)
             for k in (0, 1)]
  assert outputs[0].shape == (4, 32, 32, 3)
  assert np.abs(outputs[0] - outputs[1]).max() > 1e-3          # two clients, two models
  np.testing.assert_array_equal(outputs[1][:2], outputs[1][2:])  # each face on its own


def test_detected_landmarks_reach_a_method_that_reads_them_in_its_own_pixels():
  """PCFH-style `input_landmarks`: the face's 68 points, aligned, in the input's pixel grid (centres at integers)."""
  import jax
  import jax.numpy as jnp
  from hallujax.methods import make_method
  config = face_config()
  base = make_method(config)
  spec = dict(base.batch_spec, input_landmarks=jax.ShapeDtypeStruct((68, 2), jnp.float32))
  method = dataclasses.replace(base, batch_spec=spec, hallucinate=lambda state, frozen, batch: {
      "output": jnp.broadcast_to(batch["input_landmarks"][:, :3, :].reshape(-1, 1, 1, 6)[..., :3] / 10, (2, 32, 32, 3))})
  assert method.reads_landmarks and not base.reads_landmarks
  landmarks = np.random.default_rng(0).uniform(150, 250, (68, 2))
  matrix = photos.face_matrix(landmarks, photos.TEMPLATES["arcface"], 32)
  unit = photos.unit_landmarks(photos.Face((0, 0, 1, 1), 1.0, landmarks), matrix, 32)
  output = hallucinate.photo_function(method)(None, {}, jnp.zeros((2, 8, 8, 3)), jnp.stack([unit, unit]))
  aligned = photos.alignment.transform_points(matrix, landmarks)         # in the 32² crop
  expected = (aligned[:3] + 0.5) * 8 / 32 - 0.5                         # the same points on the 8² input
  np.testing.assert_allclose(np.asarray(output[0, 0, 0]) * 10, expected.reshape(-1)[:3], atol=1e-4)


def grey_photo() -> np.ndarray:
  """A real face in grey: an LFW face (grey by nature) enlarged, as a 3-channel image with equal channels."""
  lfw = (skimage_data.lfw_subset()[0] * 255).astype(np.uint8)
  return np.repeat(np.asarray(Image.fromarray(lfw).resize((64, 64), Image.BICUBIC))[..., None], 3, axis=-1)


def test_a_grey_photo_stays_grey(model):
  """The model's output is colour; pasted into a grey photo it would tint it. The pasted face is grey too."""
  photo = grey_photo()
  hallucinator = photos.Hallucinator(model, None, photos.Options(mode="aligned", upscale=1))
  result, = hallucinator.feed("grey", photo) + hallucinator.finish()
  changed = np.abs(result.output.astype(int) - photo).max(axis=-1) > 2
  assert changed.mean() > 0.1                                    # the face was replaced ...
  assert np.array_equal(result.output[..., 0], result.output[..., 1])   # ... and every pixel is grey
  assert np.array_equal(result.output[..., 1], result.output[..., 2])
  assert "grey" in result.faces[0]
  colour = np.array(photo)
  colour[..., 0] = np.clip(colour[..., 0].astype(int) + 40, 0, 255)     # a colour photo keeps the model's colour
  hallucinator = photos.Hallucinator(model, None, photos.Options(mode="aligned", upscale=1))
  result, = hallucinator.feed("colour", colour) + hallucinator.finish()
  assert "grey" not in result.faces[0]


def test_a_face_much_larger_than_the_output_is_marked_and_can_be_skipped(tmp_path, model):
  """A 64 px face from the tiny model's 32 px output would be pasted enlarged: marked, counted, or left alone."""
  folder = tmp_path / "in"
  folder.mkdir()
  big = np.asarray(Image.fromarray(grey_photo()).resize((100, 100), Image.BICUBIC))
  Image.fromarray(big).save(folder / "big.png")
  Image.fromarray(np.asarray(Image.fromarray(big).resize((32, 32), Image.BICUBIC))).save(folder / "small.png")
  said = []
  pasted = hallucinate.hallucinate_folder(model, None, photos.Options(mode="aligned", upscale=1), str(folder),
                                          str(tmp_path / "pasted"), log=said.append)
  entries = {os.path.basename(e["file"]): e for e in pasted["images"]}
  assert "pasted enlarged" in entries["big.png"]["faces"][0]["large_face"]
  assert "large_face" not in entries["small.png"]["faces"][0]
  assert pasted["large_faces"] == 1 and sum("--large_faces=skip" in line for line in said) == 1
  skipped = hallucinate.hallucinate_folder(model, None, photos.Options(mode="aligned", upscale=1, large_faces="skip"),
                                           str(folder), str(tmp_path / "skipped"))
  assert np.array_equal(np.asarray(Image.open(tmp_path / "skipped" / "big.png")), big)   # left as it was
  assert not np.array_equal(np.asarray(Image.open(tmp_path / "pasted" / "big.png")), big)
  assert "left unchanged" in {os.path.basename(e["file"]): e for e in skipped["images"]}["big.png"]["faces"][0][
      "large_face"]


def test_a_face_world_model_says_so_once_with_the_command_that_trains_on_real_faces(tmp_path, model, monkeypatch):
  folder = tmp_path / "in"
  folder.mkdir()
  Image.fromarray(grey_photo()).save(folder / "a.png")
  Image.fromarray(grey_photo()).save(folder / "b.png")
  monkeypatch.setattr(model, "data_source", "faceworld")
  said = []
  summary = hallucinate.hallucinate_folder(model, None, photos.Options(mode="aligned"), str(folder),
                                           str(tmp_path / "out"), log=said.append)
  notes = [line for line in said if "trained only on the synthetic face world" in line]
  assert len(notes) == 1 and "--config.data.source=celeba_folder" in notes[0]
  saved = json.loads((tmp_path / "out" / "faces.json").read_text())
  assert saved["note"] == summary["note"] and "python -m hallujax.train --config configs/" in saved["note"]
  assert all("note" not in entry for entry in saved["images"])      # once, not per photo


def hallucinate_command(run, *arguments, python_path=REPO):
  return subprocess.run([sys.executable, "-m", "hallujax.hallucinate", f"--workdir={run}", *arguments], cwd=REPO,
                        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=python_path))


def test_a_folder_with_nothing_readable_ends_in_one_line_and_exit_code_2(tmp_path, run):
  folder = tmp_path / "in"
  folder.mkdir()
  (folder / "a.jpg").write_bytes(b"not an image")
  done = hallucinate_command(run, f"--input={folder}", f"--output={tmp_path / 'out'}", "--mode=aligned")
  assert done.returncode == 2, done.stderr[-2000:]
  errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "none of the 1 file(s)" in errors[0] and errors[0] == done.stderr.strip().splitlines()[-1]
  assert sum("1/1 photos" in line for line in done.stderr.splitlines()) == 1   # the final progress line, once
  empty = tmp_path / "empty"
  empty.mkdir()
  done = hallucinate_command(run, f"--input={empty}", f"--output={tmp_path / 'out2'}", "--mode=aligned")
  assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "empty folder" in done.stderr


def test_missing_dlib_ends_in_one_line_and_exit_code_2(tmp_path, run):
  shadow = tmp_path / "no_dlib" / "dlib"
  shadow.mkdir(parents=True)
  (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'dlib'\")\n")   # as if not installed
  photo = tmp_path / "astronaut.png"
  Image.fromarray(skimage_data.astronaut()).save(photo)
  done = hallucinate_command(run, f"--input={photo}", f"--output={tmp_path / 'out'}",
                             python_path=f"{tmp_path / 'no_dlib'}{os.pathsep}{REPO}")
  assert done.returncode == 2, done.stderr[-2000:]
  assert done.stderr.strip().count("\n") == 0 and "pip install dlib-bin face-recognition-models" in done.stderr
