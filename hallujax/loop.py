"""The one training loop every method runs in.

The loop owns data, checkpoints, evaluation and logging; the run it trains
(method, mesh, state layout, keys, frozen networks, compiled programs) is
built once by ``hallujax.run_setup``; the method (``hallujax.methods``, built
once by ``make``) owns the math.
Per step the host only dispatches: batches are prefetched to the devices,
metrics stay on the devices and are fetched every ``train.log_every`` steps
(and before any checkpoint, so a checkpoint is only written once every step
before it is known finite).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import signal
import threading
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath

from hallujax import checkpoint as checkpoint_lib
from hallujax import images as images_lib
from hallujax import run_setup, sharding
from hallujax.errors import Interrupted, NonFiniteError
from hallujax.data import device_render, pipeline
from hallujax.methods import Method
from hallujax.progress import ProgressLine, clock


@dataclasses.dataclass
class TrainResult:
  state: Any                 # the final train state (device arrays)
  history: list[dict]        # one dict of host floats per logged window, with its "step"
  evaluation: dict           # the last evaluation, {} if none ran


# ----------------------------------------------------------------------------- the loop


def input_hint(data_config, platform: str | None = None) -> str:
  """How to feed the devices faster with this data config (for ProgressLine).

  Rendering the face world "on the devices" moves work off the host only when
  the devices are not the host's own CPU (`platform`, default: the first device's).
  """
  platform = platform or jax.devices()[0].platform
  if data_config.source == "faceworld" and not device_render.renders_on_device(data_config):
    if platform == "cpu":
      return ("The CPU both renders the face world and trains: raise --config.data.worker_count to render in "
              "worker processes on idle cores.")
    return ("Render the face world on the devices: --config.data.render_on=device "
            "(python -m hallujax.tools.faceworld_benchmark --pipeline compares the two).")
  return ("Decode and resize in worker processes: raise --config.data.worker_count, or convert the "
          "dataset once to array_record shards (python -m hallujax.prepare).")


def window_means(values: list[dict]) -> dict[str, float]:
  """Each metric's mean over the steps of the window that reported it (steps may report different names)."""
  sums, counts = collections.defaultdict(float), collections.defaultdict(int)
  for metrics in values:
    for name, value in metrics.items():
      sums[name] += float(value)
      counts[name] += 1
  return {name: sums[name] / counts[name] for name in sums}


def nonfinite_leaves(tree, limit: int = 5) -> list[str]:
  """Paths of the first `limit` leaves of `tree` holding NaN or inf (host check)."""
  bad = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    array = np.asarray(jax.device_get(leaf)) if getattr(leaf, "is_fully_addressable", True) else None
    if array is not None and np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
      bad.append(sharding.leaf_path(path))
      if len(bad) == limit:
        break
  return bad


# Steps dispatched to the devices and not yet known finished, at most. JAX dispatches asynchronously, so an
# unbounded host runs ahead of the devices (33 steps on a CPU smoke run), and a Ctrl-C then waited for all of
# them. With 2, one step runs while the next is queued behind it: the devices never wait for the host, and a
# stop request is served after at most the running step and the queued one.
STEPS_IN_FLIGHT = 2


class Interrupts:
  """Ctrl-C and SIGTERM ask the loop to save and stop at the next step boundary; a second Ctrl-C exits at once.

  The state is consistent between steps, so the checkpoint written then is a
  normal one and the run resumes from it with the same command. The loop keeps
  `finished_step` (the last step known finished on the devices) and
  `dispatched_step` current, so the notice can say which steps still run.
  """

  def __init__(self):
    self.requested = False
    self.previous = {}
    self.finished_step = 0
    self.dispatched_step = 0

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for number in (signal.SIGINT, signal.SIGTERM):
        self.previous[number] = signal.signal(number, self.handle)
    return self

  def handle(self, number, frame):
    if self.requested and number == signal.SIGINT:
      raise KeyboardInterrupt   # the second Ctrl-C: stop now, without saving
    self.requested = True
    running = max(self.dispatched_step - self.finished_step, 0)
    finishing = ("the step already dispatched" if running == 1 else
                 f"the {running} steps already dispatched" if running else "no step")
    print(f"\n{time.strftime('%H:%M:%S')} {signal.Signals(number).name}: finishing {finishing} (up to step "
          f"{self.dispatched_step}), then saving a checkpoint and exiting (Ctrl-C again to exit at once, "
          f"without saving).", flush=True)

  def __exit__(self, *exc):
    for number, handler in self.previous.items():
      signal.signal(number, handler)
    return False


def state_bytes(abstract) -> int:
  return int(sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract)))


def describe_run(config, method: Method, mesh, abstract, frozen) -> str:
  """One line: method, devices, mesh, data, parameter counts (what a run is before it compiles)."""
  devices = jax.devices()
  trained = sum(leaf.size for leaf in jax.tree.leaves(getattr(abstract, "params", abstract)))
  frozen_count = sum(leaf.size for leaf in jax.tree.leaves(frozen))
  d = config.data
  return (f"{config.method}: {len(devices)} × {devices[0].device_kind} ({jax.process_count()} process"
          f"{'es' if jax.process_count() > 1 else ''}), mesh {dict(mesh.shape)} | data {d.source} "
          f"({d.pairing}, {d.input_size}² → {d.target_size}²) | batch {config.train.batch_size} | "
          f"{trained / 1e6:.2f}M trained and {frozen_count / 1e6:.2f}M frozen parameters | "
          f"{config.train.compute_dtype}")


def write_run_config(config, workdir) -> None:
  """The resolved config as `config.json` (process 0), so other commands can read the run's settings."""
  if jax.process_index() != 0:
    return
  record = json.loads(config.to_json_best_effort())
  (epath.Path(workdir) / "config.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def train(config, workdir, *, devices=None) -> TrainResult:
  """Trains `config.method` for `config.train.steps` steps, resuming from `workdir` if it has a checkpoint."""
  from hallujax.summary_writer import SummaryWriter

  run = run_setup.build(config, devices=devices)
  method, mesh = run.method, run.mesh
  process_index, process_count = jax.process_index(), jax.process_count()
  local_batch_size = pipeline.local_batch_size(config.train.batch_size, process_count)
  if config.train.batch_size % mesh.shape[sharding.DATA_AXIS]:
    raise ValueError(
        f"config.train.batch_size={config.train.batch_size} does not split over the "
        f"{mesh.shape[sharding.DATA_AXIS]} devices of the data axis; use a multiple.")
  if config.train.on_nonfinite not in ("stop", "skip"):
    raise ValueError(f"config.train.on_nonfinite={config.train.on_nonfinite!r}; expected 'stop' or 'skip'.")
  del local_batch_size  # checked above; the feed slices per process

  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  # The lock first: a busy workdir is refused before anything is described or initialized.
  with checkpoint_lib.WorkdirLock(workdir), Interrupts() as interrupts:
    abstract = run.abstract
    from hallujax.run_files import check_free_space
    check_free_space(str(workdir), state_bytes(abstract))
    if process_index == 0:
      frozen_abstract = jax.eval_shape(method.init_frozen, jax.random.key(0))
      print(f"{time.strftime('%H:%M:%S')} {describe_run(config, method, mesh, abstract, frozen_abstract)}",
            flush=True)
      print(f"{time.strftime('%H:%M:%S')} initializing the networks (one compiled program) ...", flush=True)
    return _train_locked(run, workdir, process_index, process_count, SummaryWriter, interrupts)


@dataclasses.dataclass
class Session:
  """What a training session holds while its steps run: the run's parts and where the loop stands."""
  run: run_setup.Run
  workdir: epath.Path
  process_index: int
  process_count: int
  checkpointer: checkpoint_lib.Checkpointer
  data: pipeline.IteratorStateRecorder
  state: Any                       # the train state (device arrays)
  rng_data: jax.Array              # the run's base key data, a global array
  last_good_step: int | None       # the newest checkpoint known good (None: none written or restored)
  frozen: Any = None
  steps: dict = dataclasses.field(default_factory=dict)   # {name: jitted step}
  compiled_ahead: Any = None       # run_setup.StepsCompiledAhead once started (train.compile_ahead)
  eval_step: Any = None
  feed: Any = None                 # host batches -> device batches (hallujax.data.feed)
  eval_batches: list = dataclasses.field(default_factory=list)
  hallucinate: Any = None          # run_setup.GridColumns
  writer: Any = None               # SummaryWriter
  progress: Any = None             # ProgressLine
  step: int = 0                    # steps dispatched so far
  consumed: int = 0                # batches this session's steps consumed
  pending: list = dataclasses.field(default_factory=list)    # (step, metrics) not yet logged
  ran: set = dataclasses.field(default_factory=set)          # names of the steps this session dispatched
  history: list = dataclasses.field(default_factory=list)    # one dict per logged window
  evaluation: dict = dataclasses.field(default_factory=dict)
  skipped_in_a_row: int = 0

  @property
  def config(self):
    return self.run.config


def restore_or_start(run: run_setup.Run, checkpointer: checkpoint_lib.Checkpointer,
                     data: pipeline.IteratorStateRecorder, state, rng_data, process_index: int):
  """(state, rng_data, last good step) of the workdir's newest good checkpoint (the data iterator restored to
  its position), or of a new run: `state` (the method's `init`) with the method's pretrained weights."""
  config, method = run.config, run.method
  resumed = checkpointer.restore_latest_good(state, rng_data, config.train.resume_step or None)
  if resumed is None:
    state = method.load_pretrained(state)
    return run_setup.put_global(state, run.state_shardings), rng_data, None
  state, rng_data, data_state, last_good_step = resumed
  data.restore(data_state)
  if process_index == 0:
    print(f"Resuming from {checkpointer.path(last_good_step)} (step {last_good_step}).", flush=True)
  return state, rng_data, last_good_step


def open_session(run: run_setup.Run, workdir, process_index: int, process_count: int, SummaryWriter) -> Session:
  """The state (restored or new), frozen networks, compiled programs, evaluation batches and writer of a run."""
  config = run.config
  # A global (replicated) array: multi-host checkpoints can only save global arrays.
  rng_data = run_setup.put_global(jax.random.key_data(run.keys[2]), sharding.replicated(run.mesh))
  checkpointer = checkpoint_lib.Checkpointer(workdir, config.train.keep_checkpoints)
  state = run.init_state()
  data = pipeline.IteratorStateRecorder(iter(pipeline.train_dataset(
      config, process_index=process_index, process_count=process_count)))
  state, rng_data, last_good_step = restore_or_start(run, checkpointer, data, state, rng_data, process_index)
  session = Session(run=run, workdir=workdir, process_index=process_index, process_count=process_count,
                    checkpointer=checkpointer, data=data, state=state, rng_data=rng_data,
                    last_good_step=last_good_step)
  session.frozen, frozen_shardings = run.frozen_networks()
  if last_good_step is not None and jax.tree.leaves(session.frozen) and process_index == 0:
    print("Frozen networks reloaded from config.weights (they are never checkpointed).", flush=True)
  write_run_config(config, workdir)

  session.steps = run.steps(frozen_shardings)
  session.eval_step = run.eval_step(frozen_shardings)
  session.feed = feed = run.feed()
  session.eval_batches = [feed(b) for b in pipeline.eval_batches(config, process_index=process_index,
                                                                  process_count=process_count)]
  session.hallucinate = run.grid_columns(frozen_shardings)
  session.writer = SummaryWriter(workdir, enabled=process_index == 0)
  session.writer.write_hparams(_flatten(config.to_dict()))
  session.step = int(jax.device_get(state.step))
  return session


def check_finite(session: Session, metric_step: int, metrics: dict) -> None:
  """Raises NonFiniteError for a non-finite step under on_nonfinite="stop", or for more skipped steps in a row
  than train.max_skipped_steps."""
  config, checkpointer, last_good_step = session.config, session.checkpointer, session.last_good_step
  if metrics["nonfinite"] > 0 and config.train.on_nonfinite == "stop":
    checkpointer.wait()
    terms = {t: float(metrics[t]) for t in run_setup.loss_terms(metrics) if not np.isfinite(metrics[t])}
    leaves = nonfinite_leaves(session.state)
    where = (f"{checkpointer.path(last_good_step)} (step {last_good_step})"
             if last_good_step is not None else "none (no checkpoint was written yet)")
    raise NonFiniteError(
        f"Non-finite values at step {metric_step}: "
        + (", ".join(f"{t}={v}" for t, v in terms.items()) or "the loss terms are finite")
        + ("; state leaves " + ", ".join(leaves) if leaves else "")
        + f". Training stopped without saving; the last good checkpoint is {where}. "
        f"Lower the learning rate, or set --config.train.on_nonfinite=skip to skip such steps.")
  session.skipped_in_a_row = session.skipped_in_a_row + 1 if metrics["nonfinite"] > 0 else 0
  if session.skipped_in_a_row > config.train.max_skipped_steps:
    raise NonFiniteError(
        f"{session.skipped_in_a_row} steps in a row up to step {metric_step} were non-finite and skipped "
        f"(config.train.max_skipped_steps={config.train.max_skipped_steps}): the run is not training. "
        f"Lower the learning rate; the last good checkpoint is "
        f"{checkpointer.path(last_good_step) if last_good_step is not None else 'none'}.")


def flush(session: Session) -> None:
  """Fetch pending metrics, stop on a non-finite step, log the window's means."""
  pending = session.pending
  if not pending:
    return
  values = jax.device_get([metrics for _, metrics in pending])
  for (metric_step, _), metrics in zip(pending, values):
    check_finite(session, metric_step, metrics)
  means = window_means(values)
  skipped = means.pop("nonfinite") * len(values)
  if session.config.train.on_nonfinite == "skip":
    means["skipped_steps"] = skipped
  last_step = pending[-1][0]
  means.update(session.progress(last_step, means))
  session.writer.write_scalars(last_step, means)
  session.history.append(dict(means, step=last_step))
  pending.clear()


# StepsCompiledAhead's labels of the loop's programs other than the named steps (step_label).
EVALUATION = "the evaluation program"
IMAGE_GRID = "the image-grid program"


def step_label(name: str) -> str:
  return f"the {name!r} step"


def program_for(session: Session, label: str, jitted, interrupts: Interrupts):
  """The program `label` names: compiled ahead (waiting for it if its background compile still runs) or, when
  it is not compiled ahead, `jitted` (compiled on first use); None when Ctrl-C came while waiting for it."""
  ahead = session.compiled_ahead
  if ahead is None:
    return jitted
  ahead.raise_if_failed()
  for finished, seconds in ahead.newly_finished():
    session.progress.say(f"compiled {finished} in the background ({seconds:.0f} s)")
  if not ahead.holds(label):
    return jitted
  if ahead.compiling(label):
    session.progress.say(f"waiting for {label}'s compile (running in the background)")
  # Only a single-process run stops on Ctrl-C here; processes of a multi-process run stop together, at a
  # step boundary (after_step).
  return ahead.program(label, lambda: interrupts.requested and session.process_count == 1)


def step_program(session: Session, name: str, interrupts: Interrupts):
  """The program of the named step `name` (program_for); None when Ctrl-C came while waiting for it."""
  program = program_for(session, step_label(name), session.steps[name], interrupts)
  if program is session.steps[name]:   # not compiled ahead (the first step's): compiled on first use
    session.progress.compiling(name, session.steps)
  return program


def first_use(step: int, every: int, last_step: int) -> int:
  """The first step from `step` on that is a multiple of `every`, or the run's last step if that comes first:
  where after_step first runs a program it runs every `every` steps and at the end."""
  return min(-(-step // every) * every, last_step)


def start_compiling_ahead(session: Session, batch) -> None:
  """After the first step's program is compiled: the run's other programs compile in a background thread, in
  order of first use, for the arguments they will get: the other named steps (Method.step_names over the
  remaining steps; the first step's arguments), the held-out evaluation (first at the first train.eval_every
  step, else the last) and the image grid (train.image_every likewise), both for the session's first
  evaluation batch (every evaluation batch has its shape: batches drop their remainder)."""
  config, method, step = session.config, session.run.method, session.step
  step_arguments = (session.state, session.frozen, batch, session.rng_data)
  eval_arguments = (session.state, session.frozen, session.eval_batches[0])
  # After step n the loop evaluates, then writes images, then dispatches the step of index n.
  others = sorted([(first_use(step, config.train.eval_every, config.train.steps), 0, EVALUATION,
                    session.eval_step),
                   (first_use(step, config.train.image_every, config.train.steps), 1, IMAGE_GRID,
                    session.hallucinate.jitted)])
  queued, entries = set(session.ran), []
  for used_at, _, label, jitted in others + [(config.train.steps, 2, None, None)]:
    for name in method.step_names(step, used_at):   # the named steps first used before it
      if name not in queued:
        queued.add(name)
        entries.append((step_label(name), session.steps[name], step_arguments))
    if label is not None:
      entries.append((label, jitted, eval_arguments))
  session.compiled_ahead = run_setup.StepsCompiledAhead(entries)


def dispatch_step(session: Session, batches, interrupts: Interrupts, profile_from: int | None) -> dict | None:
  """Runs the scheduled named step on the next batch (tracing the profile of `train.profile_steps` steps from
  step `profile_from`); its metrics, still on the devices. None when Ctrl-C came while the step's program
  was compiling in the background (no step ran)."""
  config, method, progress, step = session.config, session.run.method, session.progress, session.step
  name = method.step_name(step)
  program = step_program(session, name, interrupts)
  if program is None:
    return None
  waiting_since = time.perf_counter()
  batch = next(batches)
  progress.waited(time.perf_counter() - waiting_since)
  if step == profile_from:
    jax.profiler.start_trace(str(session.workdir / "profile"))
  interrupts.dispatched_step = step + 1
  session.state, metrics = program(session.state, session.frozen, batch, session.rng_data)
  if profile_from is not None and step == profile_from + config.train.profile_steps - 1:
    jax.block_until_ready(session.state)
    jax.profiler.stop_trace()
    progress.say(f"Wrote a profile of steps {profile_from + 1}-{step + 1} to {session.workdir / 'profile'} "
                 f"(tensorboard --logdir {session.workdir}, Profile tab; or ui.perfetto.dev).")
  session.step += 1
  session.consumed += 1
  session.pending.append((session.step, metrics))
  session.ran.add(name)
  if config.train.compile_ahead and session.consumed == 1:   # the session's first step
    start_compiling_ahead(session, batch)
  return metrics


def wait_for_the_devices(in_flight: collections.deque, interrupts: Interrupts) -> None:
  """Bounds the host's lead over the devices to STEPS_IN_FLIGHT - 1 steps."""
  while len(in_flight) > STEPS_IN_FLIGHT - 1:
    finished, finished_metrics = in_flight.popleft()
    jax.block_until_ready(finished_metrics)
    interrupts.finished_step = finished


def evaluate_now(session: Session, interrupts: Interrupts) -> None:
  """Evaluation on the held-out batches, written to the events and the progress line (none when Ctrl-C came
  while its program compiled in the background: after_step then saves and stops)."""
  program = program_for(session, EVALUATION, session.eval_step, interrupts)
  if program is None:
    return
  session.evaluation = run_setup.run_evaluation(program, session.state, session.frozen, session.eval_batches)
  session.writer.write_scalars(session.step, {f"eval/{name}": value for name, value in session.evaluation.items()})
  session.progress.evaluation(session.step, session.evaluation)


def write_images(session: Session, interrupts: Interrupts) -> None:
  """The method's image grid of the first held-out batch, as a PNG and in the events (none when Ctrl-C came
  while its program compiled in the background: after_step then saves and stops)."""
  step = session.step
  program = program_for(session, IMAGE_GRID, session.hallucinate.jitted, interrupts)
  if program is None:
    return
  # Every process runs it (SPMD).
  columns = session.hallucinate(session.state, session.frozen, session.eval_batches[0], program)
  if session.process_index == 0:
    grid = images_lib.image_grid(columns)
    path = images_lib.write_grid(session.workdir / "images" / f"step_{step:07d}.png", grid)
    session.writer.write_images(step, {"hallucinations": grid})
    logging.info("Wrote %s (columns: %s)", path, " | ".join(columns))


def close(session: Session) -> None:
  """Writes the last events and checkpoint and stops grain's worker processes (their shared memory is released)."""
  session.writer.close()
  session.checkpointer.close()
  session.data.close()


def after_step(session: Session, interrupts: Interrupts) -> None:
  """What runs after a step: logging, evaluation, images, a checkpoint, and a stop when one is asked for."""
  config, step = session.config, session.step
  is_last = step == config.train.steps
  checkpoint_now = step % config.train.checkpoint_every == 0 or is_last
  eval_now = step % config.train.eval_every == 0 or is_last
  images_now = step % config.train.image_every == 0 or is_last
  if step % config.train.log_every == 0 or checkpoint_now or eval_now or images_now:
    flush(session)
  if eval_now:
    evaluate_now(session, interrupts)
  if images_now:
    write_images(session, interrupts)
  stop_now = (interrupts.requested if session.process_count == 1
              else session.checkpointer.manager.reached_preemption(step))
  if stop_now and not checkpoint_now:
    flush(session)
  if checkpoint_now:
    save_checkpoint(session)
  if stop_now:
    save_and_stop(session)


def save_checkpoint(session: Session) -> None:
  step = session.step
  session.checkpointer.save(step, session.state, session.rng_data, session.data.state_after(session.consumed))
  session.last_good_step = step


def save_and_stop(session: Session, while_doing: str = "") -> None:
  """Saves the state of the last step (unless it is saved already), closes the run and stops it."""
  step = session.step
  if session.last_good_step != step:
    save_checkpoint(session)
  close(session)
  raise Interrupted(f"Stopped at step {step}{while_doing}: saved {session.checkpointer.path(step)}; run the same "
                    f"command to resume.")


def stop_while_compiling(session: Session) -> None:
  """Ctrl-C while the next step's program compiled in the background: save and stop, without waiting for the
  compile."""
  flush(session)
  save_and_stop(session, " while the next step's program compiled")


def _train_locked(run: run_setup.Run, workdir, process_index, process_count, SummaryWriter,
                  interrupts: Interrupts) -> TrainResult:
  config = run.config
  session = open_session(run, workdir, process_index, process_count, SummaryWriter)
  first_step, started = session.step, time.perf_counter()
  interrupts.finished_step = interrupts.dispatched_step = session.step
  in_flight: collections.deque = collections.deque()   # (step, metrics) dispatched, not yet known finished
  batches = session.feed.prefetch(session.data, config.data.prefetch)
  session.progress = ProgressLine(config.train.steps, session.step, run.method.phase, input_hint(config.data),
                                  enabled=process_index == 0)
  profile_from = session.step + 2 if config.train.profile_steps > 0 else None   # after warm-up

  try:
    while session.step < config.train.steps:
      metrics = dispatch_step(session, batches, interrupts, profile_from)
      if metrics is None:
        stop_while_compiling(session)
      in_flight.append((session.step, metrics))
      wait_for_the_devices(in_flight, interrupts)
      after_step(session, interrupts)
  finally:
    if session.compiled_ahead is not None:
      session.compiled_ahead.stop()   # however the loop ended, no further compile starts

  flush(session)
  close(session)
  if process_index == 0:
    print(run_summary(first_step, session.step, time.perf_counter() - started, session.evaluation, workdir),
          flush=True)
  return TrainResult(state=session.state, history=session.history, evaluation=session.evaluation)


def run_summary(first_step: int, last_step: int, seconds: float, evaluation: dict, workdir) -> str:
  """The one line a finished run ends with: steps, wall time, final evaluation, where the outputs are."""
  trained = (f"steps {first_step}→{last_step}" if first_step else f"{last_step} steps")
  scores = "  ".join(f"{name} {value:.4g}" for name, value in sorted(evaluation.items())) or "none"
  return (f"{time.strftime('%H:%M:%S')} done: {trained} in {clock(seconds)} | final eval: {scores} | outputs in "
          f"{workdir}: checkpoints/, images/, TensorBoard events (tensorboard --logdir {workdir}); "
          f"python -m hallujax.evaluate --workdir {workdir} for the full table.")


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(_flatten(value, name + "."))
    else:
      flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
  return flat
