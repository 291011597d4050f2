"""python -m hallujax.export --workdir RUN --output model.hlo [--step N] [--platforms cpu,cuda]

Serializes a run's batched face hallucination (the method's ``hallucinate``
on faces: ``hallujax.hallucinate.photo_function``) with ``jax.export``:
StableHLO with a symbolic batch dimension ``b``, lowered for each of
--platforms. Writes, next to each other:

  model.hlo          the serialized jax.export.Exported (inputs: the parameter
                     list, then faces (b, in, in, C) float32 in [-1, 1], and,
                     for a method that reads 68 landmarks (PCFH), (b, 68, 2)
                     points as fractions of the aligned crop's side; output:
                     faces (b, out, out, 3) float32 in [-1, 1])
  model.params.npz   the parameters it reads, in its argument order (p0000, ...)
  model.json         sizes, template, channels, the run and step, and names

``hallujax.exported.load("model.hlo")`` runs it with jax and numpy only (no
method code). Only the parameters the computation reads are kept (optimizer
states and loss-only networks are left out). The command checks the round
trip before it returns and prints the largest difference.
"""

from __future__ import annotations

import json
import os
import time

from absl import flags
from ml_collections import config_flags

from hallujax import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "The run's config (default: its config.json).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Training run to export.")
  flags.DEFINE_string("checkpoint", None, "A checkpoint directory (RUN/checkpoints/STEP) instead; needs --config.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_string("output", "model.hlo", "Path of the serialized model; parameters and metadata go beside it.")
  flags.DEFINE_list("platforms", ["cpu", "cuda"], "Platforms to lower for (cpu, cuda, rocm, tpu).")
  flags.DEFINE_string("template", "", "Alignment template recorded for the model (default: from the run's data).")


def used_leaves(function, leaves, example) -> list[bool]:
  """Which of `leaves` `function(leaves, example)` reads (a backward walk of its jaxpr; nested calls count whole)."""
  import jax
  from jax.extend.core import Var
  jaxpr = jax.make_jaxpr(function)(leaves, example).jaxpr
  used = {v for v in jaxpr.outvars if isinstance(v, Var)}
  for equation in reversed(jaxpr.eqns):
    if any(v in used for v in equation.outvars) or equation.effects:
      used.update(v for v in equation.invars if isinstance(v, Var))
  leaf_vars = jaxpr.invars[:len(jax.tree.leaves(leaves))]
  return [v in used for v in leaf_vars]


def export_model(model, output: str, platforms=("cpu",), log=print) -> dict:
  """Writes `output` (+ .params.npz, .json) for a hallucinate.RunModel; returns the metadata."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  state, frozen = jax.device_get((model.state, model.frozen))
  leaves, treedef = jax.tree.flatten((state, frozen))
  paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path((state, frozen))[0]]
  function = model.function
  size, channels = model.input_size, model.input_channels
  example = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)

  reads = bool(model.reads_landmarks)

  def on_leaves(all_leaves, inputs, landmarks=None):
    state, frozen = jax.tree.unflatten(treedef, all_leaves)
    if landmarks is None:
      landmarks = jnp.zeros(inputs.shape[:1] + (68, 2), jnp.float32)
    return function(state, frozen, inputs, landmarks)

  abstract_leaves = [jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype) for leaf in leaves]
  keep = used_leaves(on_leaves, abstract_leaves, example)
  kept = [index for index, used in enumerate(keep) if used]
  for index in kept:
    if jax.dtypes.issubdtype(leaves[index].dtype, jax.dtypes.prng_key):
      raise ValueError(f"The hallucination reads a PRNG key from the state ({paths[index]}); exporting typed keys "
                       f"is not supported.")

  def on_kept(kept_leaves, inputs, *landmarks):
    full = [jnp.zeros(np.shape(leaf), leaf.dtype) if not used else None for leaf, used in zip(leaves, keep)]
    for index, leaf in zip(kept, kept_leaves):
      full[index] = leaf
    return on_leaves(full, inputs, *landmarks)

  batch, = jax.export.symbolic_shape("b")
  start = time.perf_counter()
  arguments = [[abstract_leaves[index] for index in kept],
               jax.ShapeDtypeStruct((batch, size, size, channels), jnp.float32)]
  if reads:   # the method reads 68 landmarks (PCFH): they are the model's third argument
    arguments.append(jax.ShapeDtypeStruct((batch, 68, 2), jnp.float32))
  exported = jax.export.export(jax.jit(on_kept), platforms=tuple(platforms))(*arguments)
  from hallujax import exported as exported_lib
  refused = exported_lib.refused_custom_calls(exported)
  if refused:   # what the loader would refuse is not written (see exported.ALLOWED_CUSTOM_CALLS)
    raise ValueError(f"{model.name} lowers to custom calls the loader refuses ({', '.join(refused)}); "
                     f"hallujax.exported.ALLOWED_CUSTOM_CALLS lists the allowed ones.")
  stem = os.path.splitext(output)[0]
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, "wb") as f:
    f.write(exported.serialize())
  np.savez(stem + ".params.npz", **{f"p{number:04d}": np.asarray(leaves[index]) for number, index in enumerate(kept)})
  metadata = {
      "format": "hallujax.export/1",
      "model": os.path.basename(output), "parameters": os.path.basename(stem + ".params.npz"),
      "parameter_names": [paths[index] for index in kept],
      "method": model.method_name, "run": model.name, "step": int(model.step),
      "input_size": size, "input_channels": channels, "output_size": int(model.output_size),
      "downsample": model.downsample, "template_name": model.template_name,
      "template": np.asarray(model.template).tolist(), "value_range": [-1.0, 1.0],
      "batch_dimension": "b (symbolic)", "platforms": list(exported.platforms), "reads_landmarks": reads,
      "data_source": model.data_source,   # what the model learned from: "faceworld" gets a note wherever it runs
      "jax_version": jax.__version__,
  }
  with open(stem + ".json", "w") as f:
    json.dump(metadata, f, indent=1)
  log(f"Exported {model.name} in {time.perf_counter() - start:.1f} s: {output} "
      f"({os.path.getsize(output) / 2**10:.0f} KiB StableHLO for {', '.join(exported.platforms)}), "
      f"{len(kept)} of {len(leaves)} parameter arrays ({sum(np.size(leaves[i]) for i in kept):,} values) in "
      f"{stem}.params.npz, metadata in {stem}.json.")
  return metadata


def round_trip_difference(model, output: str, batch: int = 3, seed: int = 0) -> float:
  """Largest |exported − in-process| over `batch` random faces and landmarks (a batch size the compiled
  program never saw)."""
  import numpy as np
  from hallujax import exported as exported_lib
  loaded = exported_lib.load(output)
  rng = np.random.default_rng(seed)
  inputs = rng.uniform(-1, 1, (model.batch_size, model.input_size, model.input_size, model.input_channels))
  inputs = inputs.astype(np.float32)
  landmarks = rng.uniform(0.2, 0.8, (model.batch_size, 68, 2)).astype(np.float32)
  expected = model.run(inputs, landmarks)[:batch]
  return float(np.abs(loaded(inputs[:batch], landmarks[:batch]) - expected).max())


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  from hallujax import hallucinate, methods
  if FLAGS.config is None:
    methods.check_run_directory(FLAGS.workdir)   # config.json is data: it may name only registered methods
  known = {"cpu", "cuda", "rocm", "tpu"}
  unknown = [p for p in FLAGS.platforms if p not in known]
  if unknown:
    raise cli.UserError(f"--platforms: unknown {', '.join(unknown)}; expected some of {', '.join(sorted(known))}.")
  model = hallucinate.load_model(FLAGS.workdir, FLAGS.checkpoint, FLAGS.config,
                                 cli.config_argument(__import__("sys").argv) or "--config", FLAGS.step,
                                 batch_size=4, template=FLAGS.template)
  export_model(model, FLAGS.output, FLAGS.platforms)
  print(f"Round trip (3 random faces, exported vs in-process): max |difference| = "
        f"{round_trip_difference(model, FLAGS.output):.3g}")
  note = hallucinate.face_world_note(model)
  if note:
    print(f"note: {note} (the exported metadata's data_source says so to every loader.)")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
