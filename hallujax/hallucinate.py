"""python -m hallujax.hallucinate --workdir RUN --input PHOTO|DIR --output DIR [--mode all|largest|aligned] [--degrade]

Hallucinates the faces of real photos with a trained run (its latest
checkpoint, or --step), with --checkpoint RUN/checkpoints/STEP and --config,
or with --exported model.hlo (python -m hallujax.export; no method code):
detects faces with dlib (HOG by default, --detector=cnn), aligns each to the
method's template, feeds the method the photo's own low-resolution face (or,
with --degrade, the aligned crop degraded as in training), runs all faces of
all photos in fixed-size batches through one compiled program, and pastes the
results back (inverse similarity warp, feathered mask, colour matched to the
photo). Writes, in --output: each photo with its faces replaced (<name>.png;
a photo with no face is copied unchanged), faces/<name>_<k>.png (the method's
input | the photo's aligned face | the output), and faces.json (boxes,
landmarks, scores, what the method was fed, counts). Needs the "eval" extra
(pip install dlib-bin face-recognition-models). See docs/photos.md.

A face much larger than the model's output is a blur once pasted back: it is
counted in a warning and marked in faces.json, and --large_faces=skip leaves
such faces as they are. A model trained only on the synthetic face world is
named as such once in the log and in faces.json, with the command that trains
on real faces.
"""

from __future__ import annotations

import contextlib
import json
import logging as python_logging
import os
import shutil
import sys
import time

from absl import flags
from ml_collections import config_flags

from hallujax import run_files
from hallujax import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined only when it runs as a command (so the module imports anywhere)."""
  config_flags.DEFINE_config_file("config", None, "The run's config (default with --workdir: its config.json; "
                                  "needed with --checkpoint).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Training run whose latest checkpoint hallucinates.")
  flags.DEFINE_string("checkpoint", None, "A checkpoint directory (RUN/checkpoints/STEP) instead; needs --config.")
  flags.DEFINE_integer("step", None, "Checkpoint step of --workdir (default: the latest).")
  flags.DEFINE_string("exported", None, "A model.hlo written by python -m hallujax.export instead of a run.")
  flags.DEFINE_string("input", None, "A photo, or a folder of photos.")
  flags.DEFINE_string("output", None, "Folder for the results (created).")
  flags.DEFINE_enum("mode", "all", ["all", "largest", "aligned"],
                    "Every face, the largest face only, or inputs that are already aligned face crops.")
  flags.DEFINE_bool("degrade", False, "Feed the method a synthetic degradation of the aligned face (its training "
                    "kernel at its scale) instead of the photo's own low-resolution face.")
  flags.DEFINE_enum("detector", "hog", ["hog", "cnn"], "dlib's HOG detector (fast) or its CNN (MMOD) detector.")
  flags.DEFINE_enum("landmarks", "68", ["68", "5"], "dlib's 68- or 5-point landmark predictor.")
  flags.DEFINE_integer("upsample", -1, "Detector upsamplings (-1: by photo size, so faces of ~side/8 are found).")
  flags.DEFINE_float("min_score", 0.5, "Keep detections scoring at least this.")
  flags.DEFINE_integer("batch_size", 8, "Faces per compiled batch (the last batch is padded).")
  flags.DEFINE_integer("upscale", 0, "Scale of the output photos (0: automatic, up to the method's scale, so "
                       "small faces keep the hallucinated detail).")
  flags.DEFINE_enum("colour_match", "lowpass", ["lowpass", "mean", "none"],
                    "Match the output's colour to the photo's face: low frequencies, channel means, or not at all.")
  flags.DEFINE_string("template", "", "Alignment template (faceworld, celeba, arcface; default: from the run's "
                      "data source).")
  flags.DEFINE_integer("client", 0, "Federated runs: whose model (client index) hallucinates.")
  flags.DEFINE_enum("large_faces", "paste", ["paste", "skip"], "Faces more than 2× the model's output side: paste "
                    "the output enlarged (a blur at that size), or skip them (left as they are in the photo).")


# ----------------------------------------------------------------------------- the model of a run


def photo_function(method, clients: int = 0, client: int = 0):
  """`f(state, frozen, inputs, landmarks) -> outputs`: the method's `hallucinate` on faces only.

  `inputs` (B, in, in, C) in [-1, 1]; `landmarks` (B, 68, 2) the detected
  iBUG-300W points in the aligned crop as fractions of its side (pixel
  centres at (i + 0.5) / side; zeros when not known), written into the
  method's 68-point landmark fields (methods.LANDMARK_FIELDS) in those fields' pixels;
  every other batch field of the method's `batch_spec` is zeros (a photo has
  no target or identity); the result is the "output" column clipped to
  [-1, 1], float32. For a federated method (batch axes (clients, batch))
  every client gets the same faces and client `client`'s outputs are returned.
  """
  import jax.numpy as jnp
  from hallujax.methods import LANDMARK_FIELDS   # the contract's: Method.reads_landmarks reads the same fields
  spec = method.batch_spec

  def run(state, frozen, inputs, landmarks):
    leading = (clients,) + inputs.shape[:1] if clients else inputs.shape[:1]
    batch = {name: jnp.zeros(leading + tuple(field.shape), field.dtype) for name, field in spec.items()}
    batch["input"] = jnp.broadcast_to(inputs, leading + inputs.shape[1:]).astype(spec["input"].dtype)
    for name, grid in LANDMARK_FIELDS.items():
      if name in spec and tuple(spec[name].shape) == (68, 2):
        side = spec[grid].shape[0] if grid in spec else spec["input"].shape[0]
        points = landmarks * side - 0.5
        batch[name] = jnp.broadcast_to(points, leading + (68, 2)).astype(spec[name].dtype)
    output = method.hallucinate(state, frozen, batch)["output"]
    if clients:
      output = output.reshape((clients, -1) + output.shape[1:])[client]
    return jnp.clip(output.astype(jnp.float32), -1.0, 1.0)

  return run


def check_photo_method(method, config) -> None:
  """A method whose hallucinate makes no "output" from an RGB/grey "input" cannot do photos: say so."""
  import jax
  spec = method.batch_spec
  name = config.method
  if "input" not in spec or len(spec["input"].shape) != 3 or spec["input"].shape[-1] not in (1, 3):
    raise cli.UserError(f"Method {name!r} reads no (H, W, 1|3) 'input' image (its batch fields: "
                        f"{', '.join(spec)}), so it cannot hallucinate faces in photos.")
  leading = (1,) if method.batch_axes == ("batch",) else (max(1, int(config.data.clients)), 1)
  abstract = {k: jax.ShapeDtypeStruct(leading + tuple(v.shape), v.dtype) for k, v in spec.items()}
  state = jax.eval_shape(method.init, jax.random.key(0))
  frozen = jax.eval_shape(method.init_frozen, jax.random.key(0))
  columns = jax.eval_shape(method.hallucinate, state, frozen, abstract)
  if "output" not in columns:
    raise cli.UserError(f"Method {name!r} has no face hallucination: its hallucinate gives the columns "
                        f"{', '.join(columns)}, with no 'output' (photos need a method that makes faces, "
                        f"e.g. fhgan, ipfh, vividgan).")
  shape = columns["output"].shape
  if len(shape) != 4 or shape[1] != shape[2] or shape[-1] != 3:
    raise cli.UserError(f"Method {name!r} gives 'output' of shape {shape}; photos need square RGB faces.")


def checkpoint_location(path: str) -> tuple[str, int | None]:
  """--checkpoint RUN/checkpoints/STEP, RUN/checkpoints or RUN -> (workdir, step or None)."""
  path = os.path.normpath(path)
  if not os.path.isdir(path):
    raise cli.UserError(f"--checkpoint={path}: no such directory (expected RUN/checkpoints/STEP).")
  base = os.path.basename(path)
  if base.isdigit() and os.path.basename(os.path.dirname(path)) == "checkpoints":
    return os.path.dirname(os.path.dirname(path)), int(base)
  if base == "checkpoints":
    return os.path.dirname(path), None
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return path, None
  raise cli.UserError(f"--checkpoint={path} is not a checkpoint directory (expected RUN/checkpoints/STEP).")


SHAPE_FIELDS = ("method", "data.input_size", "data.target_size", "data.input_channels")


def field(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node.get(part) if hasattr(node, "get") else None
  return node


def check_same_config(config, workdir: str, config_name: str) -> None:
  """A config that is not the run's: one line naming the first field that differs (before restoring)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return
  saved = run_files.read_run_config(workdir, check_method=False)   # compared, never built from
  for name in SHAPE_FIELDS + tuple(f"model.{key}" for key in sorted((saved.get("model") or {}).keys())):
    if field(saved, name) != field(config, name):
      raise cli.UserError(f"The checkpoint in {workdir} is from another config: it was trained with "
                          f"{name}={field(saved, name)!r}, {config_name} has {field(config, name)!r}. Give the "
                          f"run's own config (--workdir alone reads its config.json).")


class LossWarningsOff(python_logging.Filter):
  """Drops warnings about a loss network's weights (a random VGG-19 for the perceptual loss, ...): hallucinating
  computes no loss. Warnings about networks the output depends on (a prior) still print."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return not (record.levelno == python_logging.WARNING and " loss" in record.getMessage())


@contextlib.contextmanager
def loss_warnings_off():
  from absl import logging
  logger, quiet = logging.get_absl_logger(), LossWarningsOff()
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


REAL_FACES_COMMAND = ("python -m hallujax.train --config configs/{method}.py --config.data.source=celeba_folder "
                      "--config.data.data_dir=CELEBA_DIR --workdir RUN")


def face_world_note(model) -> str | None:
  """What to say when the model learned only the synthetic face world (None otherwise)."""
  if getattr(model, "data_source", None) != "faceworld":
    return None
  return (f"{getattr(model, 'name', 'the model')} was trained only on the synthetic face world: on real photos its "
          f"faces are those of a renderer. To train on real faces: "
          + REAL_FACES_COMMAND.format(method=getattr(model, "method_name", "<method>")))


class RunModel:
  """A run's method as a photos.FaceModel: restored once, compiled once for (batch_size, in, in, C)."""

  def __init__(self, config, workdir: str, step: int | None = None, batch_size: int = 8, template: str = "",
               client: int = 0, log=print):
    import jax
    import numpy as np
    from hallujax import photos, run_setup, sharding
    run = run_setup.build(config)
    method, mesh = run.method, run.mesh
    check_photo_method(method, config)
    try:
      state, self.step = run.restore(workdir, step)
    except (ValueError, KeyError, TypeError) as error:
      raise cli.UserError(f"The checkpoint in {workdir} does not fit config.method={config.method!r} "
                          f"({cli.first_line(error)[:200]}): it is from another config.") from None
    with loss_warnings_off():
      frozen, frozen_shardings = run.frozen_networks()   # the run's own frozen key
    spec = method.batch_spec["input"]
    self.name = f"{config.method} ({os.path.basename(os.path.normpath(workdir))}, step {self.step})"
    self.method_name = config.method
    self.data_source = str(config.data.source)
    self.input_size, self.input_channels = int(spec.shape[0]), int(spec.shape[-1])
    self.downsample = str(config.data.downsample)
    self.template_name = template or photos.template_for(config)
    self.template = photos.template_points(self.template_name)
    self.batch_size = batch_size
    clients = int(config.data.clients) if method.batch_axes != ("batch",) else 0
    self.function = photo_function(method, clients, client)
    divisor = mesh.shape[sharding.DATA_AXIS]
    batch_sharding = (sharding.batch_sharding(mesh) if batch_size % divisor == 0 else sharding.replicated(mesh))
    self.reads_landmarks = method.reads_landmarks
    abstract = jax.ShapeDtypeStruct((batch_size, self.input_size, self.input_size, self.input_channels),
                                    jax.numpy.float32, sharding=batch_sharding)
    abstract_landmarks = jax.ShapeDtypeStruct((batch_size, 68, 2), jax.numpy.float32, sharding=batch_sharding)
    state_shardings = jax.tree.map(lambda leaf: leaf.sharding, state)
    start = time.perf_counter()
    self.compiled = jax.jit(self.function, in_shardings=(state_shardings, frozen_shardings, batch_sharding,
                                                         batch_sharding),
                            out_shardings=sharding.replicated(mesh)).lower(
                                state, frozen, abstract, abstract_landmarks).compile()
    self.compile_seconds = time.perf_counter() - start
    self.compiles = 1
    self.output_size = int(self.compiled.out_info.shape[1])
    self.state, self.frozen, self.mesh, self.batch_sharding = state, frozen, mesh, batch_sharding
    self.method, self.config = method, config
    self._np = np
    log(f"{self.name}: {self.input_size}² × {self.input_channels} → {self.output_size}², template "
        f"{self.template_name}, batches of {batch_size} compiled in {self.compile_seconds:.1f} s.")

  def run(self, inputs, landmarks=None):
    """(batch_size, in, in, C) float32 [, (batch_size, 68, 2) unit landmarks] -> (batch_size, out, out, 3)
    float32; the one compiled program."""
    import jax
    np = self._np
    if landmarks is None:
      landmarks = np.zeros((len(inputs), 68, 2), np.float32)
    inputs = jax.device_put(np.asarray(inputs, np.float32), self.batch_sharding)
    landmarks = jax.device_put(np.asarray(landmarks, np.float32), self.batch_sharding)
    return np.asarray(jax.device_get(self.compiled(self.state, self.frozen, inputs, landmarks)))


def load_model(workdir: str | None, checkpoint: str | None, config, config_name: str = "--config",
               step: int | None = None, batch_size: int = 8, template: str = "", client: int = 0, log=print):
  """The RunModel of --workdir (config from config.json unless given) or --checkpoint (config needed)."""
  if checkpoint:
    if config is None:
      raise cli.UserError("--checkpoint needs --config (the config the checkpoint was trained with).")
    workdir, checkpoint_step = checkpoint_location(checkpoint)
    step = checkpoint_step if step is None else step
  elif not workdir:
    raise cli.UserError("Give --workdir (a training run), or --checkpoint with --config.")
  if not os.path.isdir(workdir):
    raise cli.UserError(f"--workdir={workdir}: no such directory.")
  if config is None:
    config = run_files.read_run_config(workdir)
  else:
    check_same_config(config, workdir, config_name)
  return RunModel(config, workdir, step, batch_size, template, client, log)


# ----------------------------------------------------------------------------- the command


def output_names(paths: list[str]) -> dict[str, str]:
  """Input path -> output stem, unique (a.jpg and a.png become a and a_2)."""
  names, used = {}, set()
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0] or "photo"
    name, number = stem, 2
    while name in used:
      name, number = f"{stem}_{number}", number + 1
    used.add(name)
    names[path] = name
  return names


class Progress:
  """Photos and faces done, faces/s; a rewritten line on a terminal, a line every few seconds otherwise."""

  def __init__(self, total: int, stream=sys.stderr):
    self.total, self.stream, self.start = total, stream, time.perf_counter()
    self.tty = stream.isatty()
    self.last = 0.0
    self.shown: tuple[int, int] | None = None   # the counts of the line last written

  def update(self, photos: int, faces: int, force: bool = False) -> None:
    """`force`: the final line (written unless the last line already showed these counts)."""
    now = time.perf_counter()
    if not force and now - self.last < (0.2 if self.tty else 5.0):
      return
    if (photos, faces) == self.shown:
      if force and self.tty:
        self.stream.write("\n")
        self.stream.flush()
      return
    self.last, self.shown = now, (photos, faces)
    elapsed = max(now - self.start, 1e-9)
    width = 24
    filled = int(width * photos / max(self.total, 1))
    line = (f"[{'#' * filled}{'.' * (width - filled)}] {photos}/{self.total} photos, {faces} faces, "
            f"{faces / elapsed:.1f} faces/s")
    self.stream.write(("\r" + line) if self.tty else line + "\n")
    if self.tty and force:
      self.stream.write("\n")
    self.stream.flush()


def write_result(result, output: str, name: str, summary: dict) -> None:
  """The output photo (or the unchanged file), side-by-sides, and the photo's JSON entry."""
  from PIL import Image
  entry = result.record()
  if result.status == "unreadable":
    print(f"skipped unreadable file: {result.error}", file=sys.stderr)
    summary["unreadable"] += 1
  elif result.status == "no_face":
    target = os.path.join(output, os.path.basename(result.name))
    shutil.copyfile(result.name, target)
    entry["output"] = target
    print(f"no face found in {result.name}: copied unchanged to {target}", file=sys.stderr)
    summary["no_face"] += 1
  else:
    path = os.path.join(output, name + ".png")
    Image.fromarray(result.output).save(path)
    entry["output"] = path
    for face, grid in zip(entry["faces"], result.side_by_side):
      face["side_by_side"] = os.path.join(output, "faces", f"{name}_{face['index']}.png")
      Image.fromarray(grid).save(face["side_by_side"])
    summary["photos_with_faces"] += 1
    summary["faces"] += len(entry["faces"])
  summary["images"].append(entry)


def hallucinate_folder(model, detector, options, input_path: str, output: str, log=print) -> dict:
  """Every photo of `input_path` through `model`; writes the outputs and faces.json; returns the summary."""
  from hallujax import photos
  paths = photos.photo_files(input_path)
  if os.path.isdir(input_path) and os.path.realpath(input_path) == os.path.realpath(output):
    raise cli.UserError(f"--output={output} is the input folder; choose another folder for the results.")
  os.makedirs(os.path.join(output, "faces"), exist_ok=True)
  names = output_names(paths)
  summary = {"method": getattr(model, "name", ""), "input_mode": options.input, "mode": options.mode,
             "template": getattr(model, "template_name", ""), "batch_size": model.batch_size,
             "images": [], "photos_with_faces": 0, "faces": 0, "no_face": 0, "unreadable": 0}
  hallucinator = photos.Hallucinator(model, detector, options)
  progress = Progress(len(paths))
  done = 0
  start = time.perf_counter()
  for path, photo in photos.read_photos(paths):
    for result in hallucinator.feed(path, photo):
      write_result(result, output, names[result.name], summary)
      done += 1
    progress.update(done, hallucinator.faces_done)
  for result in hallucinator.finish():
    write_result(result, output, names[result.name], summary)
    done += 1
  progress.update(done, hallucinator.faces_done, force=True)
  seconds = time.perf_counter() - start
  summary.update(seconds=round(seconds, 3), faces_per_second=round(summary["faces"] / max(seconds, 1e-9), 3),
                 batches=hallucinator.batches, padded_faces=hallucinator.padded,
                 model_seconds=round(hallucinator.model_seconds, 3), compiles=getattr(model, "compiles", None))
  summary["images"].sort(key=lambda entry: entry["file"])
  if hallucinator.large_faces:
    summary["large_faces"] = len(hallucinator.large_faces)
    log(f"warning: {len(hallucinator.large_faces)} face(s) of up to {max(hallucinator.large_faces):.0f} px are more "
        f"than {photos.LARGE_FACE_RATIO:g}× the model's {model.output_size} px output: "
        + ("left unchanged (--large_faces=skip)." if options.large_faces == "skip" else
           "pasted enlarged, a blur at that size; --large_faces=skip leaves them as they are."))
  note = face_world_note(model)
  if note:
    summary["note"] = note
    log(f"note: {note}")
  with open(os.path.join(output, "faces.json"), "w") as f:
    json.dump(summary, f, indent=1)
  log(f"{summary['faces']} faces in {summary['photos_with_faces']} photos ({summary['no_face']} without a face, "
      f"{summary['unreadable']} unreadable) in {seconds:.1f} s: {summary['faces_per_second']:.2f} faces/s, "
      f"{hallucinator.batches} batches of {model.batch_size}, input: {options.input}. Wrote {output}/faces.json.")
  return summary


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.input or not FLAGS.output:
    raise cli.UserError("Give --input (a photo or a folder) and --output (a folder for the results).")
  if FLAGS.batch_size < 1:
    raise cli.UserError(f"--batch_size={FLAGS.batch_size}; expected a positive integer.")
  from hallujax import photos
  from hallujax.data import face_detection
  options = photos.Options(mode=FLAGS.mode, input="degrade" if FLAGS.degrade else "real", upscale=FLAGS.upscale,
                           colour_match=FLAGS.colour_match, large_faces=FLAGS.large_faces)
  paths = photos.photo_files(FLAGS.input)    # a missing input fails before any model is built
  if not paths:
    raise cli.UserError(f"--input={FLAGS.input} is an empty folder; expected photos in it.")
  try:
    detector = None if FLAGS.mode == "aligned" else face_detection.Detector(
        FLAGS.detector, int(FLAGS.landmarks), FLAGS.upsample, FLAGS.min_score)
  except ImportError as error:   # the eval extra is not installed: say how to install it
    raise cli.UserError(f"{error} (or give --mode=aligned for photos that are already aligned face crops, "
                        f"which needs no detector).") from None
  if FLAGS.template and FLAGS.template not in photos.TEMPLATES:
    raise cli.UserError(f"--template={FLAGS.template}; known templates: {', '.join(photos.TEMPLATES)}.")
  if FLAGS.exported:
    from hallujax import exported
    model = exported.load(FLAGS.exported, FLAGS.batch_size)
    if FLAGS.template:
      model.template_name, model.template = FLAGS.template, photos.template_points(FLAGS.template)
  else:
    model = load_model(FLAGS.workdir, FLAGS.checkpoint, FLAGS.config, cli.config_argument(sys.argv) or "--config",
                       FLAGS.step, FLAGS.batch_size, FLAGS.template, FLAGS.client)
  print(f"{len(paths)} file(s) from {FLAGS.input}; input: "
        + ("synthetic degradation of the aligned face (--degrade)" if FLAGS.degrade else
           "the photo's own low-resolution face (real)") + ".")
  summary = hallucinate_folder(model, detector, options, FLAGS.input, FLAGS.output)
  if summary["unreadable"] == len(paths):
    first = next(entry["error"] for entry in summary["images"] if entry.get("error"))
    raise cli.UserError(f"none of the {len(paths)} file(s) of --input={FLAGS.input} could be read as an image "
                        f"(first: {first}); nothing was hallucinated.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
