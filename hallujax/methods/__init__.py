"""Methods: one module per paper, each built once by ``make(config, context) -> Method``.

The contract
------------
A method module (``hallujax/methods/<name>.py``) defines ``make(config, context)``;
the context is what the run is built on (a
:class:`MakeContext`: ``context.mesh``, the run's ``jax.sharding.Mesh``, and
``context.restore(run_config, workdir, step=None) -> (state, step)``, which
restores an earlier run's checkpoint, e.g. a previous stage or an in-project
recognizer; methods never import the loop). ``hallujax.run_setup.build``
gives every method its context.
It reads the config once, builds its networks and optimizers once, and
returns a :class:`Method` whose functions close over them. Nothing below
``make`` reads the config again or rebuilds a network, and no step dispatches
on a string: the trainer chooses which named step to run, on the host.

``batch_spec``  per-example fields the steps read (no leading axes), e.g.
                ``{"input": ShapeDtypeStruct((16, 16, 3)), "target": ...}``.
``batch_axes``  the leading axes of every batch field: ``("batch",)``, or
                ``("clients", "batch")`` for a federated method whose batch is
                ``(K, B_k, ...)``. The trainer shards ``batch`` over the mesh's
                ``data`` axis and ``clients`` over its ``clients`` axis.
``init(rng) -> state``
                The initial train state: a ``flax.struct.dataclass`` with a
                scalar int32 ``step`` and the trained parameters, optimizer
                states, EMA copies. Pure (no file I/O) and ``jax.eval_shape``-able:
                the trainer jits it with ``out_shardings`` so the state is born
                sharded, and restores checkpoints into its abstract shape.
``init_frozen(rng) -> frozen``
                The networks that never train (VGG or LightCNN in a loss, a
                StyleGAN2 prior, a frozen earlier stage), randomly initialized:
                pure, like ``init``. ``{}`` when there are none.
``load_frozen(frozen) -> frozen``
                Replaces them by the files ``config.weights`` names (file I/O;
                says loudly in the log when a file is not given). The frozen
                tree is passed to every step as its own argument, is never
                donated and never written into a checkpoint; the run's
                ``config.json`` records where it came from, and a resumed run
                reloads it.
``load_pretrained(state) -> state``
                Trainable weights from files (a pretrained recognizer to
                fine-tune, an earlier run's stage). Runs once, when a run
                starts from step 0; never on resume, evaluation or sampling.
``steps``       ``{name: step(state, frozen, batch, rng) -> (state, metrics)}``.
                Pure and jittable; does every update the step needs (critic,
                generator, recognizer, policy ...), increments ``state.step``,
                returns scalar float32 metrics. Steps may report different
                metric names: the trainer averages each name over the steps
                that reported it. Names starting with ``loss`` are loss terms.
``schedule(step) -> name``
                Which named step runs step number ``step`` (a host int from 0).
                The trainer compiles one program per name: the first step's on
                first use, the others the run will reach (``Method.step_names``
                over its steps) ahead of time in the background while the
                first phase runs (``train.compile_ahead``).
                Choosing on the host beats ``lax.cond`` on ``state.step``:
                XLA:CPU runs gradients inside a conditional up to 10× slower
                (cf. jax-ml/jax#12868), and a conditional's FLOP count
                includes every branch.
``phase(step) -> name``
                The training phase for progress lines and per-phase ETAs
                (e.g. "pretrain" / "joint"); defaults to one phase. A phase
                may run several steps (StyleGAN2's lazy-regularization steps).
``eval_step(state, frozen, batch) -> {name: (batch,) array}``
                Per-example evaluation values; the trainer averages them.
``hallucinate(state, frozen, batch) -> {column: images}``
                Images in [-1, 1], NHWC, in the order of the image-grid columns
                (``hallujax.images.COLUMN_ORDER`` says the shared order). The data's own
                columns ("input", "lr", "target": ``DATA_COLUMNS``) are shown,
                never scored; every other column is a result (``"output"``
                the method's, others intermediate results evaluation scores as
                rows) unless listed in ``diagnostic_columns``.
``diagnostic_columns``
                Columns of ``hallucinate`` that are diagnostics, not faces (an
                estimated prior, an attention map): drawn in grids, never scored.
``state_rules`` sharding rules the method adds before the config's
                (``hallujax.sharding``), e.g. a stacked-clients state.

Shared helpers: :func:`phase_at` for staged methods,
``hallujax.optim.make_all`` for the one optimizer section per trained network
(``config.optim.<network>``), and ``hallujax.methods.train_state``: the
multi-network state (``TrainState``: step, ``params`` and ``opt_state`` keyed by
network) and the one way to update some of its networks (``update_networks`` /
``with_updates``).

A new method needs no trainer change: write ``make``, add one line to
``METHODS``. ``tests/tiny.py`` is a complete small example with a frozen
tree, two named steps reporting different metrics, and a client axis.
"""

from __future__ import annotations

import bisect
import dataclasses
import importlib
import os
from typing import Any, Callable, Mapping, Sequence

import jax

# name -> module path. A method is added by writing its module and one line here.
METHODS = {
    "fhgan": "hallujax.methods.fhgan",
    "arcface": "hallujax.methods.arcface",
    "ipfh": "hallujax.methods.ipfh",
    "stylegan2": "hallujax.methods.stylegan2",
    "vpgan": "hallujax.methods.vpgan",
    "vpfl": "hallujax.methods.vpfl",
    "pcfh": "hallujax.methods.pcfh",
    "pix2pix": "hallujax.methods.pix2pix",     # PCFH's Table 1 baselines (configs/pcfh.py:...,ablation=pix2pix)
    "cyclegan": "hallujax.methods.cyclegan",
    "vividgan": "hallujax.methods.vividgan",
    "expression": "hallujax.methods.expression",
    "lightcnn": "hallujax.methods.lightcnn",
}

BATCH_AXES = ("batch",)
CLIENT_BATCH_AXES = ("clients", "batch")
# Columns of `hallucinate` that carry the data, not a method's result: shown in grids, never scored.
DATA_COLUMNS = ("input", "lr", "target")
# Batch fields that carry 68 iBUG-300W landmarks a photo's detected points can fill, and the image field
# whose pixel grid they are in (PCFH's local paths read "input_landmarks").
LANDMARK_FIELDS = {"input_landmarks": "input", "landmarks": "target"}


def _no_frozen(rng) -> dict:
  del rng
  return {}


def _unchanged(tree):
  return tree


def _one_phase(step: int) -> str:
  del step
  return "train"


@dataclasses.dataclass(frozen=True)
class Method:
  """A method built once from its config (see the module docstring for each field)."""

  batch_spec: Mapping[str, jax.ShapeDtypeStruct]
  init: Callable[[jax.Array], Any]
  steps: Mapping[str, Callable]
  schedule: Callable[[int], str]
  eval_step: Callable
  hallucinate: Callable
  batch_axes: tuple[str, ...] = BATCH_AXES
  init_frozen: Callable[[jax.Array], dict] = _no_frozen
  load_frozen: Callable[[dict], dict] = _unchanged
  load_pretrained: Callable[[Any], Any] = _unchanged
  phase: Callable[[int], str] = _one_phase
  state_rules: tuple = ()
  diagnostic_columns: tuple[str, ...] = ()

  def __post_init__(self):
    if not self.steps:
      raise ValueError("A Method needs at least one named step.")
    if self.batch_axes not in (BATCH_AXES, CLIENT_BATCH_AXES):
      raise ValueError(f"Method.batch_axes={self.batch_axes!r}; expected {BATCH_AXES} or {CLIENT_BATCH_AXES}.")

  @property
  def reads_landmarks(self) -> bool:
    """Whether the batch has a 68-point landmark field (LANDMARK_FIELDS) that a photo's detected points fill."""
    return any(name in self.batch_spec and tuple(self.batch_spec[name].shape) == (68, 2)
               for name in LANDMARK_FIELDS)

  def step_names(self, start: int, stop: int) -> list[str]:
    """The named steps that steps `start` ... `stop` - 1 run, each once, in order of first use (from
    `schedule`: the one place that says which programs a run needs)."""
    names: dict[str, None] = {}
    for step in range(start, stop):
      names.setdefault(self.step_name(step))
      if len(names) == len(self.steps):   # every step seen: a long run's schedule is not read to its end
        break
    return list(names)

  def step_name(self, step: int) -> str:
    """The named step that runs step number `step`, checked against `steps`."""
    name = self.schedule(step)
    if name not in self.steps:
      raise ValueError(f"schedule({step}) = {name!r}, which is not one of the method's steps "
                       f"({', '.join(self.steps)}).")
    return name


def phase_at(boundaries: Sequence[int], names: Sequence[str], step: int) -> str:
  """The phase running step `step` when phase i ends at boundaries[i] (exclusive).

  ``phase_at((700,), ("pretrain", "joint"), 699) == "pretrain"``; the last
  name runs from the last boundary on. Zero-length phases are skipped.
  """
  if len(names) != len(boundaries) + 1:
    raise ValueError(f"{len(names)} phase names need {len(names) - 1} boundaries, got {len(boundaries)}.")
  return names[bisect.bisect_right(list(boundaries), step)]


ENTRY_POINT_GROUP = "hallujax.methods"   # installed packages register their methods here (name = module path)
METHODS_VARIABLE = "HALLUJAX_METHODS"    # environment: "name=package.module,..." methods this user registers
_registered: dict[str, str] = {}


def register_method(name: str, module: str) -> None:
  """Registers a user's method module under `name` for this process (a config file may call this)."""
  _registered[name] = module


def registered_methods() -> dict[str, str]:
  """name -> module path of every registered method: METHODS, the installed packages' entry points in group
  "hallujax.methods", $HALLUJAX_METHODS ("name=package.module,...") and register_method's."""
  from importlib import metadata
  found = dict(METHODS)
  found.update({point.name: point.value.split(":")[0] for point in metadata.entry_points(group=ENTRY_POINT_GROUP)})
  for entry in filter(None, (part.strip() for part in os.environ.get(METHODS_VARIABLE, "").split(","))):
    name, _, module = entry.partition("=")
    found[name.strip()] = (module or name).strip()
  found.update(_registered)
  return found


def check_run_method(name, where: str) -> None:
  """A run's config.json is data, not code: the method it names must be registered (registered_methods) or a
  module this process has already imported (no new code runs), else ValueError before anything is imported.
  Naming any importable module would let a run directory run that module's code (one sitting next to the run
  on sys.path, or a standard module with side effects)."""
  import sys
  registered = registered_methods()
  if isinstance(name, str) and (name in registered or name in registered.values() or name in sys.modules):
    return
  raise ValueError(f"{where} names the method {name!r}, which is not a registered method ({', '.join(sorted(METHODS))}"
                   f", an installed package's '{ENTRY_POINT_GROUP}' entry point, or ${METHODS_VARIABLE}); "
                   f"refusing to import it. Give --config for a run of your own method module.")


def check_run_directory(workdir: str | None) -> None:
  """check_run_method on `workdir`'s config.json when it has one (commands call it before loading the run)."""
  import json
  path = os.path.join(workdir or "", "config.json")
  if workdir and os.path.isfile(path):
    with open(path) as f:
      try:
        saved = json.load(f)
      except ValueError as error:
        raise ValueError(f"{path} is not JSON ({error}).") from None
    check_run_method(saved.get("method") if isinstance(saved, dict) else None, path)


def get_method(name: str):
  """The method module registered under `name` (or a user's 'package.module'), checked for `make`."""
  if name not in registered_methods() and "." not in name:
    raise ValueError(
        f"config.method={name!r} is not a known method. Known methods: {', '.join(sorted(METHODS))}; "
        f"or your own module as 'package.module'.")
  try:
    module = importlib.import_module(registered_methods().get(name, name))
  except ModuleNotFoundError as error:
    if name in METHODS and error.name == METHODS[name]:
      raise ValueError(f"config.method={name!r} is registered but its module {METHODS[name]} is not "
                       f"written yet.") from None
    raise
  if not callable(getattr(module, "make", None)):
    raise TypeError(f"Method module {module.__name__} does not define make(config, context) -> Method "
                    f"(see hallujax/methods/__init__.py).")
  return module


def no_restore(run_config, workdir, step: int | None = None):
  """The restore of a method built without a run: says how to build it with one."""
  raise ValueError(f"{workdir} is a run directory: restoring it needs the run set-up's restore (build the method "
                   f"with hallujax.run_setup.build, or give make hallujax.run_setup.make_context()).")


@dataclasses.dataclass(frozen=True)
class MakeContext:
  """What `make(config, context)` receives besides the config (see the module docstring)."""
  mesh: Any = None                          # the run's jax.sharding.Mesh (None: a method that needs one makes it)
  restore: Callable = no_restore            # restore(run_config, workdir, step=None) -> (train state, step)


def make_method(config, context: MakeContext | None = None) -> Method:
  """`config.method`'s module, built once for `config`: its `make(config, context)`."""
  method = get_method(config.method).make(config, context or MakeContext())
  if not isinstance(method, Method):
    raise TypeError(f"{config.method}.make(config, context) returned {type(method).__name__}, not a Method.")
  return method
