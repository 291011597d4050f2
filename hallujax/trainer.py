"""The one training loop every method runs in.

The loop owns data, jit, sharding, checkpoints, evaluation and logging; the
method (hallujax.methods) owns the math. Per step the host only dispatches:
batches are prefetched to the device, metrics stay on the device and are
fetched every ``train.log_every`` steps (and before any checkpoint, so a
checkpoint is only written once every loss before it is known finite).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from PIL import Image

from hallujax import sharding
from hallujax.checkpoint import Checkpointer, restore_state
from hallujax.data import device_render, pipeline
from hallujax.methods import get_method


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or infinite; the message names the step, the terms and the last good checkpoint."""


@dataclasses.dataclass
class TrainResult:
  state: Any                 # the final train state (device arrays)
  history: list[dict]        # one dict of host floats per logged window, with its "step"
  evaluation: dict           # the last evaluation, {} if none ran


# ----------------------------------------------------------------------------- batches


def validate_batch(batch: dict, spec: dict, batch_size: int) -> None:
  """Raises a ValueError naming the field, the shape it has and the shape expected."""
  for name, expected in spec.items():
    if name not in batch:
      raise ValueError(
          f"The batch has no field {name!r}; the method reads {sorted(spec)} and the data gives "
          f"{sorted(batch)}. Check config.data.pairing.")
    expected_shape = (batch_size, *expected.shape)
    if tuple(batch[name].shape) != expected_shape:
      raise ValueError(
          f"Batch field {name!r} has shape {tuple(batch[name].shape)}; expected {expected_shape} "
          f"(batch_size, *per-example shape from config.data). Check config.data sizes and "
          f"channels against the source.")


def zeros_batch(spec: dict, batch_size: int) -> dict:
  """A batch of zeros with the method's fields, for building the train state."""
  return {name: np.zeros((batch_size, *s.shape), s.dtype) for name, s in spec.items()}


def batch_to_devices(host_batch: dict, mesh, spec: dict, local_batch_size: int, render=None) -> dict:
  """One host batch -> the method's fields as global arrays split over the mesh's data axis.

  With `render` (config.data.render_on="device") the host batch holds face-world
  renderer parameters, and `render` makes the method's fields from them on the devices.
  """
  if render is None:
    validate_batch(host_batch, spec, local_batch_size)
    return sharding.global_batch({name: host_batch[name] for name in spec}, mesh)
  batch = render(sharding.global_batch(host_batch, mesh))
  validate_batch(batch, spec, local_batch_size * jax.process_count())  # global arrays
  return batch


def device_batches(iterator: Iterator, mesh, spec: dict, local_batch_size: int,
                   depth: int, render=None) -> Iterator[dict]:
  """Validates host batches and keeps `depth` of them in flight to the devices (see batch_to_devices)."""
  queue = collections.deque()

  def enqueue():
    queue.append(batch_to_devices(next(iterator), mesh, spec, local_batch_size, render))

  for _ in range(max(depth, 1)):
    enqueue()
  while True:
    yield queue.popleft()
    enqueue()


# ----------------------------------------------------------------------------- steps


def loss_terms(metrics: dict) -> list[str]:
  return [name for name in metrics if name.startswith("loss")]


def step_variants(method, config) -> tuple:
  """The method's step variants; (None,) for a method with one kind of step."""
  return tuple(method.step_variants(config)) if hasattr(method, "step_variants") else (None,)


def step_variant(method, config, step: int):
  return method.step_variant(config, step) if hasattr(method, "step_variants") else None


def checked_train_step(method, config, variant=None):
  """The method's step with the run's RNG folding and the non-finite guard around it."""
  variant_kwargs = {} if variant is None else {"variant": variant}

  def step(state, batch, rng_data):
    rng = jax.random.fold_in(jax.random.wrap_key_data(rng_data), state.step)
    new_state, metrics = method.train_step(state, batch, rng, config=config, **variant_kwargs)
    terms = loss_terms(metrics)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(metrics[t])) for t in terms])) if terms else True
    if config.train.on_nonfinite == "skip":
      # Keep the previous parameters, but move on to the next batch and RNG.
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
      new_state = new_state.replace(step=state.step + 1)
    metrics = dict(metrics, nonfinite=jnp.logical_not(finite).astype(jnp.float32))
    return new_state, metrics

  return step


def jit_train_step(method, config, mesh, state_shardings, variant=None):
  """`step(state, batch, rng_data) -> (state, metrics)` jitted with shardings, state donated."""
  return jax.jit(
      checked_train_step(method, config, variant),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=(0,),
  )


class TrainSteps:
  """One jitted program per step variant, compiled on first use; `steps(step, state, batch, rng)`."""

  def __init__(self, method, config, mesh, state_shardings):
    self.method, self.config = method, config
    self.jitted = {variant: jit_train_step(method, config, mesh, state_shardings, variant)
                   for variant in step_variants(method, config)}

  def __call__(self, step: int, state, batch, rng_data):
    return self.jitted[step_variant(self.method, self.config, step)](state, batch, rng_data)


def jit_eval_step(method, config, mesh, state_shardings):
  """Per-example evaluation values averaged over the batch, on device."""

  def evaluate(state, batch):
    values = method.eval_step(state, batch, config=config)
    return {name: jnp.mean(value) for name, value in values.items()}

  return jax.jit(evaluate, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


def init_train_state(method, config, mesh, rng):
  """The method's initial state, laid out over the mesh by the config's rules."""
  spec = method.batch_spec(config)
  state = method.init_state(config, rng, zeros_batch(spec, config.train.batch_size))
  shardings = sharding.state_shardings(state, mesh, config.mesh)
  return jax.device_put(state, shardings), shardings


def restore_run(config, workdir, step: int | None = None):
  """(method module, train state, step, mesh) of a run's latest (or given) checkpoint.

  The state's structure comes from `jax.eval_shape` of the method's
  init_state (nothing is computed), laid out over the mesh as training does.
  """
  method = get_method(config.method)
  batch = zeros_batch(method.batch_spec(config), config.train.batch_size)
  abstract = jax.eval_shape(lambda rng: method.init_state(config, rng, batch), jax.random.key(0))
  mesh = sharding.make_mesh(config.mesh)
  shardings = sharding.state_shardings(abstract, mesh, config.mesh)
  abstract = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                          abstract, shardings)
  state, step = restore_state(workdir, abstract, step)
  return method, state, int(step), mesh


def run_evaluation(eval_step, state, batches: list[dict]) -> dict:
  totals = collections.defaultdict(float)
  for batch in batches:
    for name, value in jax.device_get(eval_step(state, batch)).items():
      totals[name] += float(value)
  return {name: total / len(batches) for name, total in totals.items()}


# ----------------------------------------------------------------------------- images


def image_grid(columns: dict, max_rows: int = 8) -> np.ndarray:
  """Rows of examples, one column per entry (e.g. LR | bicubic | output | target), uint8 RGB."""
  columns = {name: np.asarray(images[:max_rows]) for name, images in columns.items()}
  height = max(images.shape[1] for images in columns.values())
  tiles = []
  for images in columns.values():
    images = pipeline.to_uint8(images)
    if images.shape[-1] == 1:
      images = np.repeat(images, 3, axis=-1)
    if images.shape[1] != height:
      images = np.stack([np.asarray(Image.fromarray(im).resize((height, height), Image.NEAREST))
                         for im in images])
    tiles.append(images)
  rows = [np.concatenate([tile[i] for tile in tiles], axis=1) for i in range(len(tiles[0]))]
  return np.concatenate(rows, axis=0)


class GridColumns:
  """The method's `hallucinate`, jitted, returning its columns in the order the method wrote them.

  jax returns dicts with sorted keys; the order is taken while tracing instead.
  """

  def __init__(self, method, config):
    self.order: list[str] = []

    def columns(state, batch):
      images = method.hallucinate(state, batch, config=config)
      self.order = list(images)
      return images

    self.jitted = jax.jit(columns)

  def __call__(self, state, batch) -> dict[str, np.ndarray]:
    images = jax.device_get(self.jitted(state, batch))
    return {name: images[name] for name in self.order}


def write_image_grid(workdir, step: int, grid: np.ndarray) -> str:
  directory = epath.Path(workdir) / "images"
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / f"step_{step:07d}.png"
  with path.open("wb") as f:
    Image.fromarray(grid).save(f, format="PNG")
  return str(path)


# ----------------------------------------------------------------------------- the loop


class ProgressLine:
  """Step, steps/s, ETA, input wait and losses on one terminal line per log window.

  Input wait is the share of the window's wall time the loop spent blocked on
  the next batch: with batches prefetched to the devices, that is time the
  devices had nothing to train on. Above `STARVED` (after the first window,
  which holds compilation and the pipeline's start) it says once how to feed
  the devices faster.
  """

  STARVED = 0.2

  def __init__(self, total_steps: int, start_step: int, input_hint: str):
    self.total_steps = total_steps
    self.last_step = start_step
    self.last_time = time.perf_counter()
    self.input_wait = 0.0
    self.windows = 0
    self.input_hint = input_hint

  def waited(self, seconds: float) -> None:
    self.input_wait += seconds

  def __call__(self, step: int, means: dict) -> dict[str, float]:
    now = time.perf_counter()
    window = max(now - self.last_time, 1e-9)
    steps_per_second = (step - self.last_step) / window
    input_wait = min(self.input_wait / window, 1.0)
    self.last_step, self.last_time, self.input_wait = step, now, 0.0
    self.windows += 1
    eta = (self.total_steps - step) / max(steps_per_second, 1e-9)
    losses = "  ".join(f"{name} {value:.4g}" for name, value in sorted(means.items())
                       if name != "nonfinite")
    print(f"step {step}/{self.total_steps}  {steps_per_second:.2f} steps/s  "
          f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}  input wait {input_wait:.0%}  {losses}",
          flush=True)
    if self.windows > 1 and input_wait > self.STARVED and self.input_hint:
      print(f"The devices waited for input {input_wait:.0%} of this window. {self.input_hint}", flush=True)
      self.input_hint = ""
    return {"steps_per_second": steps_per_second, "input_wait_fraction": input_wait}


def input_hint(data_config) -> str:
  """How to feed the devices faster with this data config (for ProgressLine)."""
  if data_config.source == "faceworld" and not device_render.renders_on_device(data_config):
    return ("Render the face world on the devices: --config.data.render_on=device "
            "(python -m hallujax.data.faceworld_benchmark --pipeline compares the two).")
  return ("Decode and resize in worker processes: raise --config.data.worker_count, or convert the "
          "dataset once to array_record shards (python -m hallujax.data.prepare).")


def train(config, workdir, *, devices=None) -> TrainResult:
  """Trains `config.method` for `config.train.steps` steps, resuming from `workdir` if it has a checkpoint."""
  from clu import metric_writers, parameter_overview, periodic_actions  # import tensorflow: kept out of module import

  method = get_method(config.method)
  mesh = sharding.make_mesh(config.mesh, devices)
  process_index, process_count = jax.process_index(), jax.process_count()
  local_batch_size = pipeline.local_batch_size(config.train.batch_size, process_count)
  if config.train.batch_size % mesh.shape[sharding.DATA_AXIS]:
    raise ValueError(
        f"config.train.batch_size={config.train.batch_size} does not split over the "
        f"{mesh.shape[sharding.DATA_AXIS]} devices of the data axis; use a multiple.")
  if config.train.on_nonfinite not in ("stop", "skip"):
    raise ValueError(f"config.train.on_nonfinite={config.train.on_nonfinite!r}; expected 'stop' or 'skip'.")

  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  rng_data = jax.random.key_data(train_rng)
  state, state_shardings = init_train_state(method, config, mesh, init_rng)
  spec = method.batch_spec(config)
  render = (device_render.make_renderer(config.data, mesh, fields=tuple(spec))
            if device_render.renders_on_device(config.data) else None)

  data = pipeline.IteratorStateRecorder(iter(pipeline.train_dataset(
      config, process_index=process_index, process_count=process_count)))
  checkpointer = Checkpointer(workdir, config.train.keep_checkpoints)
  last_good_step = checkpointer.latest_step()
  if last_good_step is not None:
    state, rng_data, data_state = checkpointer.restore(last_good_step, state, rng_data)
    data.restore(data_state)
    logging.info("Resumed from %s", checkpointer.path(last_good_step))
    print(f"Resuming from {checkpointer.path(last_good_step)} (step {last_good_step}).", flush=True)

  train_step = TrainSteps(method, config, mesh, state_shardings)
  eval_step = jit_eval_step(method, config, mesh, state_shardings)
  eval_batches = [batch_to_devices(b, mesh, spec, local_batch_size, render)
                  for b in pipeline.eval_batches(config, process_index=process_index,
                                                 process_count=process_count)]
  hallucinate = GridColumns(method, config)

  writer = metric_writers.create_default_writer(workdir, just_logging=process_index > 0)
  writer.write_hparams(_flatten(config.to_dict()))
  step = int(jax.device_get(state.step))
  if step == 0:
    params = getattr(state, "params", state)
    print(parameter_overview.get_parameter_overview(params, include_stats=False), flush=True)

  batches = device_batches(data, mesh, spec, local_batch_size, config.data.prefetch, render)
  progress = ProgressLine(config.train.steps, step, input_hint(config.data))
  # clu's hook writes steps/s to TensorBoard and the ETA to the work-unit notes / log.
  report_progress = periodic_actions.ReportProgress(num_train_steps=config.train.steps, writer=writer)
  total = config.train.steps
  pending: list[tuple[int, dict]] = []
  history: list[dict] = []
  evaluation: dict = {}
  consumed = 0

  def flush() -> None:
    """Fetch pending metrics, stop on a non-finite loss, log the window's means."""
    if not pending:
      return
    values = jax.device_get([metrics for _, metrics in pending])
    for (metric_step, _), metrics in zip(pending, values):
      if metrics["nonfinite"] > 0 and config.train.on_nonfinite == "stop":
        bad = {t: float(metrics[t]) for t in loss_terms(metrics) if not np.all(np.isfinite(metrics[t]))}
        checkpointer.wait()
        where = (f"{checkpointer.path(last_good_step)} (step {last_good_step})"
                 if last_good_step is not None else "none (no checkpoint was written yet)")
        raise NonFiniteLossError(
            f"Non-finite loss at step {metric_step}: "
            + ", ".join(f"{t}={v}" for t, v in bad.items())
            + f". Training stopped without saving; the last good checkpoint is {where}. "
            f"Lower the learning rate, or set --config.train.on_nonfinite=skip to skip such steps.")
    means = {name: float(np.mean([m[name] for m in values])) for name in values[-1]}
    if config.train.on_nonfinite == "skip":
      means["skipped_steps"] = float(sum(m["nonfinite"] for m in values))
    means.pop("nonfinite")
    last_step = pending[-1][0]
    means.update(progress(last_step, means))
    writer.write_scalars(last_step, means)
    history.append(dict(means, step=last_step))
    pending.clear()

  while step < total:
    waiting_since = time.perf_counter()
    batch = next(batches)
    progress.waited(time.perf_counter() - waiting_since)
    state, metrics = train_step(step, state, batch, rng_data)
    step += 1
    consumed += 1
    pending.append((step, metrics))
    report_progress(step)
    is_last = step == total
    checkpoint_now = step % config.train.checkpoint_every == 0 or is_last
    eval_now = step % config.train.eval_every == 0 or is_last
    images_now = step % config.train.image_every == 0 or is_last
    if step % config.train.log_every == 0 or checkpoint_now or eval_now or images_now:
      flush()
    if eval_now:
      evaluation = run_evaluation(eval_step, state, eval_batches)
      writer.write_scalars(step, {f"eval/{name}": value for name, value in evaluation.items()})
      print(f"eval at step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in sorted(evaluation.items())),
            flush=True)
    if images_now and process_index == 0:
      columns = hallucinate(state, eval_batches[0])
      grid = image_grid(columns)
      path = write_image_grid(workdir, step, grid)
      writer.write_images(step, {"hallucinations": grid[None]})
      logging.info("Wrote %s (columns: %s)", path, " | ".join(columns))
    if checkpoint_now:
      checkpointer.save(step, state, rng_data, data.state_after(consumed))
      last_good_step = step

  flush()
  writer.flush()
  checkpointer.close()
  return TrainResult(state=state, history=history, evaluation=evaluation)


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(_flatten(value, name + "."))
    else:
      flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
  return flat
