"""The train state of a method with several trained networks, and the one way to update some of them.

Every method keeps its trained networks in two dicts keyed by network name, ``params`` and
``opt_state`` (one optax state per network, ``config.optim.<network>``). :class:`TrainState` is that
state when nothing else is kept; a method that keeps more (BatchNorm statistics, an EMA copy) defines its
own dataclass with the same two fields, and :func:`with_updates` serves both.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax
import jax
import optax

from hallujax import optim


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict      # {network: parameters}
  opt_state: dict   # {network: optax state}, the same keys


def update_networks(optimizers: Mapping[str, optax.GradientTransformation], params: dict, opt_state: dict,
                    gradients: Mapping[str, Any]) -> tuple[dict, dict]:
  """One optimizer update of each network in `gradients` ({network: gradient}), in that order: new
  ``params`` and ``opt_state`` dicts, the other networks' entries unchanged."""
  params, opt_state = dict(params), dict(opt_state)
  for name, gradient in gradients.items():
    params[name], opt_state[name] = optim.apply_update(optimizers[name], params[name], opt_state[name], gradient)
  return params, opt_state


def with_updates(state, optimizers: Mapping[str, optax.GradientTransformation], gradients: Mapping[str, Any]):
  """`state` (any dataclass with ``params`` and ``opt_state`` dicts) after :func:`update_networks`; the step
  count is the caller's."""
  params, opt_state = update_networks(optimizers, state.params, state.opt_state, gradients)
  return state.replace(params=params, opt_state=opt_state)
