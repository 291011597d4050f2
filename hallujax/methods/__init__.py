"""Methods: one module per paper, each a handful of pure functions.

A method module (``hallujax/methods/<name>.py``) defines:

``batch_spec(config) -> dict[str, jax.ShapeDtypeStruct]``
    The per-example fields it reads from a batch (no batch dimension), e.g.
    ``{"input": (28, 28, 3) float32, "target": (112, 112, 3) float32}``. The
    trainer checks every batch against it and names the field, the shape it
    got and the shape it expected.

``init_state(config, rng, batch) -> state``
    Builds the whole train state: a ``flax.struct.dataclass`` pytree with a
    scalar int32 field ``step`` and everything else the method trains
    (parameters, optimizer states, EMA copies, frozen networks). ``batch`` is
    a sample batch (host arrays) for shape inference.

``train_step(state, batch, rng, *, config[, variant]) -> (state, metrics)``
    Pure and jittable. Does every update one step needs (critic, generator,
    recognizer, policy ...), increments ``state.step`` and returns scalar
    float32 metrics. Metric names starting with ``loss`` are loss terms: the
    trainer stops (or skips the step) when one is not finite.

Optional, for methods whose steps differ with the step number (training
phases, lazy regularization every k steps):

``step_variants(config) -> tuple[str, ...]`` and ``step_variant(config, step) -> str``
    The names of the different steps, and which one runs step number `step`
    (a host int, counted from 0). The trainer compiles one program per
    variant, on first use, and passes ``variant=`` to ``train_step``; every
    variant must return the same state structure and metric names. Choosing
    on the host beats ``lax.cond`` on ``state.step``: XLA:CPU runs gradients
    inside a conditional up to 10× slower (cf. jax-ml/jax#12868), and a
    conditional's FLOP count includes every branch.

``eval_step(state, batch, *, config) -> dict[str, jax.Array]``
    Per-example evaluation values of shape (batch,), e.g. ``psnr`` and
    ``psnr_bicubic``. The trainer averages them over the held-out split.

``hallucinate(state, batch, *, config) -> dict[str, jax.Array]``
    Images in [-1, 1], NHWC, in the column order of the image grid the trainer
    writes, e.g. ``{"lr": ..., "bicubic": ..., "output": ..., "target": ...}``.

Optimizers are rebuilt from the config inside ``train_step`` (optax
transformations are functions, not data), so the state holds only arrays.
"""

from __future__ import annotations

import importlib
import types

# name -> module path. A method is added by writing its module and one line here.
METHODS = {
    "fhgan": "hallujax.methods.fhgan",
    "arcface": "hallujax.methods.arcface",
    "ipfh": "hallujax.methods.ipfh",
    "stylegan2": "hallujax.methods.stylegan2",
}

REQUIRED_FUNCTIONS = ("batch_spec", "init_state", "train_step", "eval_step", "hallucinate")


def get_method(name: str) -> types.ModuleType:
  """The method module registered under `name`, checked for the contract above."""
  if name not in METHODS and "." not in name:
    raise ValueError(
        f"config.method={name!r} is not a known method. Known methods: {', '.join(sorted(METHODS))}; "
        f"or your own module as 'package.module'."
    )
  module = importlib.import_module(METHODS.get(name, name))
  missing = [f for f in REQUIRED_FUNCTIONS if not callable(getattr(module, f, None))]
  if missing:
    raise TypeError(f"Method module {module.__name__} does not define {', '.join(missing)}.")
  return module
