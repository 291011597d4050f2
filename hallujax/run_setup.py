"""A run built once: method, mesh, state layout, keys, frozen networks, feed and compiled programs.

Training (``hallujax.loop``), evaluation, ``hallucinate``, ``sample``,
``benchmark`` and the tools all start the same way: the config's method built
once (``make``), the mesh, the state's abstract shape and shardings (what
``init`` would make, from ``jax.eval_shape``: computed once per run), the
run's keys, the frozen networks, the feed and the jitted programs. They call
:func:`build` (a new run) or :func:`restore_run` (a run's checkpoint) and use
the :class:`Run` it returns instead of repeating those steps.

A method that reads an earlier run (IPFH's earlier stages, an in-project
LightCNN, ArcFace or StyleGAN2 run) gets :func:`restore_state` as
``context.restore`` from ``make``: methods never import the loop.
"""

from __future__ import annotations

import atexit
import collections
import contextvars
import dataclasses
import functools
import os
import sys
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hallujax import checkpoint as checkpoint_lib
from hallujax import images as images_lib
from hallujax import sharding
from hallujax.errors import named_first_line
from hallujax.data import feed as feed_lib
from hallujax.methods import MakeContext, Method, make_method


def put_global(tree, shardings):
  """Host (or device) arrays -> global arrays with `shardings`; every process passes the same values."""
  def put(leaf, leaf_sharding):
    leaf = np.asarray(jax.device_get(leaf)) if not isinstance(leaf, jax.Array) or not leaf.is_fully_addressable \
        else leaf
    if isinstance(leaf, jax.Array):
      return jax.device_put(leaf, leaf_sharding)
    return jax.make_array_from_callback(leaf.shape, leaf_sharding, lambda index: leaf[index])
  return jax.tree.map(put, tree, shardings)


def abstract_state(method: Method, config, mesh):
  """(abstract state with shardings, shardings): what `init` would make, computed without running it."""
  shapes = jax.eval_shape(method.init, jax.random.key(0))
  shardings = sharding.state_shardings(shapes, mesh, config.mesh, method.state_rules)
  abstract = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                          shapes, shardings)
  return abstract, shardings


def run_keys(config) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init, frozen, train) keys of a run, from config.seed: every command that rebuilds a run uses them."""
  return tuple(jax.random.split(jax.random.key(config.seed), 3))


# ----------------------------------------------------------------------------- compiled programs


def loss_terms(metrics: dict) -> list[str]:
  return [name for name in metrics if name.startswith("loss")]


def all_finite(tree) -> jax.Array:
  """True when every floating leaf of `tree` is finite (one fused reduction per leaf)."""
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def checked_step(step_fn, on_nonfinite: str):
  """A method step with the run's RNG folding and the non-finite guard around it.

  The guard checks the loss terms and every updated floating leaf of the
  state (parameters, optimizer moments, EMA copies) in the same program. With
  ``on_nonfinite="skip"`` a failing step leaves the previous state whole (only
  the step counter moves on, so data and RNG advance); with "stop" the loop
  stops before any checkpoint of the bad state is written.
  """

  def step(state, frozen, batch, rng_data):
    rng = jax.random.fold_in(jax.random.wrap_key_data(rng_data), state.step)
    new_state, metrics = step_fn(state, frozen, batch, rng)
    finite = jnp.logical_and(all_finite({t: metrics[t] for t in loss_terms(metrics)}), all_finite(new_state))
    if on_nonfinite == "skip":
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
      new_state = new_state.replace(step=state.step + 1)
    metrics = {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}
    metrics["nonfinite"] = jnp.logical_not(finite).astype(jnp.float32)
    return new_state, metrics

  return step


def jit_steps(method: Method, config, mesh, state_shardings, frozen_shardings) -> dict:
  """One jitted program per named step (compiled on first use), state donated, frozen not."""
  batch_sharding = sharding.batch_sharding(mesh, method.batch_axes)
  return {name: jax.jit(checked_step(fn, config.train.on_nonfinite),
                        in_shardings=(state_shardings, frozen_shardings, batch_sharding, sharding.replicated(mesh)),
                        out_shardings=(state_shardings, sharding.replicated(mesh)),
                        donate_argnums=(0,))
          for name, fn in method.steps.items()}


def abstract_arguments(tree):
  """ShapeDtypeStructs of `tree`'s arrays (shape, dtype, sharding, weak type): what a jitted call specializes on.

  The arrays' own shardings are kept, not left to the program's `in_shardings`: an array's abstract value
  carries its mesh, and tracing with or without it gives different programs (with it, JAX adds `reshard`
  ops and `out_sharding`s), so a structure without it lowered to another module than a call with the arrays
  does. The two then had different persistent-cache keys, and a resumed run compiled again a step its first
  run had compiled ahead (issue 30, item 3).
  """
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                        sharding=getattr(leaf, "sharding", None),
                                                        weak_type=bool(getattr(leaf, "weak_type", False))), tree)


COMPILE_THREAD_NAME = "hallujax-compile-ahead"


def wait_for_background_compiles() -> None:
  """At exit: waits for a StepsCompiledAhead compile still running (see there why); Ctrl-C exits at once."""
  running = [thread for thread in threading.enumerate() if thread.name == COMPILE_THREAD_NAME and thread.is_alive()]
  if not running:
    return
  print("Waiting for a background compile to end before exiting (XLA cannot stop a compile midway; Ctrl-C "
        "exits at once) ...", file=sys.stderr, flush=True)
  try:
    for thread in running:
      thread.join()
  except KeyboardInterrupt:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


class CompileAheadError(RuntimeError):
  """A program's ahead-of-time compile failed in the background thread (the cause is chained)."""


class StepsCompiledAhead:
  """A run's later programs compiled ahead of time, one after another, in a background thread.

  The loop compiles its first step's program the usual way (on first use, so
  that step is not slowed), then starts this with `entries`: (label, jitted
  function, arguments) for every other program the run will reach, in order of
  first use: the other named steps (with the first step's arguments: the
  state it returned, the frozen tree, its batch, the key), the held-out
  evaluation and the image grid (with the session's evaluation batch). The
  label names the program in messages ("the 'joint' step", "the evaluation
  program"). Each is lowered for its arguments' abstract values (shapes,
  dtypes, shardings, weak types: `abstract_arguments`) with the same jitted
  function (`jax.jit(...).lower(...).compile()`: the same donation and
  shardings, so the same program; the persistent compilation cache is read
  and written as for a call, and a later process that calls the step finds it
  there). ``program(label)`` returns the compiled
  program, waiting for its compile if it is still running (a program is
  compiled once: the jitted function is not called for these labels). A
  compile that fails is raised in the main thread by ``program`` or
  ``raise_if_failed`` as one CompileAheadError naming the program.

  ``stop()`` (the loop calls it when it ends, however it ends) starts no
  further compile. XLA cannot stop a compile midway, and a process that exits
  while one runs aborts (the interpreter's shutdown kills the thread inside
  XLA: "FATAL: exception not rethrown", exit 134, measured with a Ctrl-C
  during FH-GAN's background `joint` compile). So at exit the process waits
  for a compile still running, saying so; Ctrl-C then exits at once
  (`os._exit(130)`, after the checkpoint the loop already wrote).
  """

  def __init__(self, entries: list[tuple[str, Any, tuple]]):
    self.jitted = {label: jitted for label, jitted, _ in entries}
    self.names = [label for label, _, _ in entries]
    self.compiled: dict = {}                 # label -> jax.stages.Compiled
    self.seconds: dict[str, float] = {}      # label -> seconds its compile took in the background
    self.failure: tuple[str, BaseException] | None = None
    self.finished = {label: threading.Event() for label in self.names}
    self.announced: set[str] = set()
    self.stopped = False
    # Shapes only, taken now in the main thread: the thread holds no arrays the loop donates or replaces.
    abstract = {label: abstract_arguments(arguments) for label, _, arguments in entries}
    context = contextvars.copy_context()     # the main thread's context variables, as a call there would see
    self.thread = threading.Thread(target=context.run, args=(self.compile_all, abstract), daemon=True,
                                   name=COMPILE_THREAD_NAME)
    # Registered again at each start, so it runs before exit handlers registered since (atexit runs the last
    # registered first), e.g. those that shut JAX's backends down.
    atexit.unregister(wait_for_background_compiles)
    atexit.register(wait_for_background_compiles)
    self.thread.start()

  def stop(self) -> None:
    """Starts no further compile (the one running ends on its own)."""
    self.stopped = True

  def compile_all(self, abstract: dict) -> None:
    for label in self.names:
      if self.stopped:
        for event in self.finished.values():
          event.set()
        return
      started = time.perf_counter()
      try:
        self.compiled[label] = self.jitted[label].lower(*abstract[label]).compile()
        self.seconds[label] = time.perf_counter() - started
      except BaseException as error:   # noqa: BLE001 - handed to the main thread, which raises it
        self.failure = (label, error)
        for event in self.finished.values():
          event.set()
        return
      finally:
        self.finished[label].set()

  def raise_if_failed(self) -> None:
    if self.failure is not None:
      label, error = self.failure
      raise CompileAheadError(
          f"Compiling {label} ahead of time failed: {named_first_line(error)} "
          f"(--config.train.compile_ahead=False compiles each program on first use instead).") from error

  def holds(self, label: str) -> bool:
    """Whether `label` is one of the programs compiled here."""
    return label in self.finished

  def compiling(self, label: str) -> bool:
    """Whether `label` is compiled here and its compile has not finished."""
    return self.holds(label) and not self.finished[label].is_set()

  def program(self, label: str, stop_waiting: Callable[[], bool] = lambda: False):
    """The compiled program of `label` (one of the entries; waiting for its compile), or None when
    `stop_waiting()` turned true while waiting (e.g. Ctrl-C)."""
    while not self.finished[label].wait(timeout=0.2):
      if stop_waiting():
        return None
    self.raise_if_failed()
    return self.compiled[label]

  def newly_finished(self) -> list[tuple[str, float]]:
    """(label, compile seconds) of the compiles finished since the last call, in order."""
    done = [(label, self.seconds[label]) for label in self.names
            if label in self.seconds and label not in self.announced]
    self.announced.update(label for label, _ in done)
    return done


def jit_eval_step(method: Method, mesh, state_shardings, frozen_shardings):
  """Per-example evaluation values averaged over the batch, on device."""

  def evaluate(state, frozen, batch):
    return {name: jnp.mean(value) for name, value in method.eval_step(state, frozen, batch).items()}

  return jax.jit(evaluate, in_shardings=(state_shardings, frozen_shardings,
                                         sharding.batch_sharding(mesh, method.batch_axes)),
                 out_shardings=sharding.replicated(mesh))


def run_evaluation(eval_step, state, frozen, batches: list[dict]) -> dict:
  totals = collections.defaultdict(float)
  for batch in batches:
    for name, value in jax.device_get(eval_step(state, frozen, batch)).items():
      totals[name] += float(value)
  return {name: total / len(batches) for name, total in totals.items()}


class GridColumns:
  """The method's `hallucinate`, jitted with replicated outputs, returning columns in the shared order.

  Every process runs the same program (SPMD); the outputs are replicated, so
  any process can fetch them and process 0 writes the grid.
  """

  def __init__(self, method: Method, mesh, state_shardings, frozen_shardings):
    self.order: list[str] = []

    def columns(state, frozen, batch):
      images = method.hallucinate(state, frozen, batch)
      self.order = list(images_lib.order_columns(images))
      return images

    self.jitted = jax.jit(columns, in_shardings=(state_shardings, frozen_shardings,
                                                 sharding.batch_sharding(mesh, method.batch_axes)),
                          out_shardings=sharding.replicated(mesh))

  def __call__(self, state, frozen, batch, program=None) -> dict[str, np.ndarray]:
    """The columns of `batch`; `program` is the jitted function compiled ahead (StepsCompiledAhead), whose
    lowering traced `columns` and so set `order`."""
    images = jax.device_get((self.jitted if program is None else program)(state, frozen, batch))
    return {name: images[name] for name in self.order}


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Run:
  """What every command builds first, once: the config's method on a mesh, with its state's layout and keys.

  The state's layout (`abstract`, `state_shardings`) is computed on first use, once: `train` takes the
  workdir's lock before anything is shaped, so a busy workdir is refused at once.
  """

  config: Any
  method: Method
  mesh: jax.sharding.Mesh
  keys: tuple              # (init, frozen, train): run_keys(config)

  @functools.cached_property
  def layout(self) -> tuple[Any, Any]:
    """(abstract state, shardings): the state as `init` would make it (ShapeDtypeStructs carrying their
    shardings), from one `jax.eval_shape`."""
    return abstract_state(self.method, self.config, self.mesh)

  @property
  def abstract(self):
    return self.layout[0]

  @property
  def state_shardings(self):
    return self.layout[1]

  def init_state(self, rng=None):
    """The method's initial state, born sharded (init jitted with out_shardings); the run's init key unless
    `rng` is given."""
    rng = self.keys[0] if rng is None else rng
    return jax.jit(self.method.init, out_shardings=self.state_shardings)(rng)

  def restore(self, workdir, step: int | None = None):
    """(state, step) of the checkpoint of `workdir` at `step` (default: the latest), laid out as training
    lays it out. Only the checkpoint is read: frozen networks come from `frozen_networks`."""
    state, restored_step = checkpoint_lib.restore_state(workdir, self.abstract, step)
    return state, int(restored_step)

  def frozen_networks(self, rng=None, load: bool = True):
    """(frozen tree, shardings): random init, then (with `load`) the method's files, laid out by the rules.

    The random initialization uses the run's frozen key unless `rng` is given, so a frozen network that no
    file replaces is the same in training, evaluation and inference.
    """
    rng = self.keys[1] if rng is None else rng
    shapes = jax.eval_shape(self.method.init_frozen, rng)
    shardings = sharding.state_shardings(shapes, self.mesh, self.config.mesh)
    frozen = jax.jit(self.method.init_frozen, out_shardings=shardings)(rng)
    if not load:
      return frozen, shardings
    loaded = self.method.load_frozen(frozen)
    if loaded is not frozen:
      frozen = put_global(loaded, shardings)
    return frozen, shardings

  def feed(self) -> feed_lib.Feed:
    """Host batches -> global device batches laid out by the method's batch axes."""
    return feed_lib.feed_for(self.config, self.mesh, self.method)

  def steps(self, frozen_shardings) -> dict:
    return jit_steps(self.method, self.config, self.mesh, self.state_shardings, frozen_shardings)

  def eval_step(self, frozen_shardings):
    return jit_eval_step(self.method, self.mesh, self.state_shardings, frozen_shardings)

  def grid_columns(self, frozen_shardings) -> GridColumns:
    return GridColumns(self.method, self.mesh, self.state_shardings, frozen_shardings)


def make_context(mesh=None) -> MakeContext:
  """What `make(config, context)` receives: the run's mesh and `restore_state` (a test building a method by
  hand that restores an earlier run passes this too)."""
  return MakeContext(mesh=mesh, restore=restore_state)


def build(config, *, devices=None, mesh=None) -> Run:
  """The run of `config`: its method built once (given the mesh and `restore_state`)."""
  mesh = sharding.make_mesh(config.mesh, devices) if mesh is None else mesh
  return Run(config=config, method=make_method(config, make_context(mesh)), mesh=mesh, keys=run_keys(config))


def restore_run(config, workdir, step: int | None = None) -> tuple[Run, Any, int]:
  """(run, train state, step) of `workdir`'s latest (or given) checkpoint of `config`."""
  run = build(config)
  state, restored_step = run.restore(workdir, step)
  return run, state, restored_step


def restore_state(run_config, workdir, step: int | None = None) -> tuple[Any, int]:
  """(train state, step) of an earlier run's checkpoint: the `restore` methods get from `make`'s context."""
  _, state, restored_step = restore_run(run_config, workdir, step)
  return state, restored_step
