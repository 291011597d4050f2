"""FedAvg (Eq. 8), the MPR term (Eq. 9), FedProx's proximal term and optimizer state between rounds.

One implementation for both ways of running a federation: the one-program
method (hallujax.methods.vpfl: the K clients stacked on a leading axis, the
round's global copy in the state) and the Flower apps (hallujax.federated.flower:
the ServerApp stacks the clients' replies and calls the same `fedavg`).

Paper 000, §3.2:
  Eq. 8  Θ^q = (1/K) Σ_k Θ_k^q — a plain mean over the clients (not FedAvg's
         sample-size weighting), of every trained parameter: the encoder and the
         discriminator. VPGAN's trained networks hold no normalization statistics
         (no batch norm; StyleGAN2's discriminator has none), so parameters are
         the whole trained state; a method with statistics would pass them too.
  Eq. 9  L_k = L_gen,k + λd (‖w − w^q‖² + Σ_i ‖F_i − F_i^q‖²), w^q and F_i^q
         computed by the round's global model Θ^q on the same input ("the
         proximity of latent codes from the current local model and the initial
         global model"), held constant (stop-gradient).
FedProx (Li et al. 2020, Eq. 2): h_k(Θ) = F_k(Θ) + μ/2 ‖Θ − Θ^q‖², Θ^q the round's
global model, constant.

A client that does not report in a round (Flower: no reply, an error reply)
is left out of that round's mean: `fedavg` takes per-client weights, and the
round's Θ^q is the mean of the clients that reported (weights 1/K' each).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

OPTIMIZER_STATE_RULES = ("keep", "reset", "average")


def fedavg(stacked: Any, weights: jax.Array | None = None) -> Any:
  """Eq. 8: the mean over the leading (clients) axis of every leaf; `weights` (K,) ≥ 0 to leave clients out."""
  if weights is None:
    return jax.tree.map(lambda leaf: jnp.mean(leaf, axis=0), stacked)
  weights = jnp.asarray(weights, jnp.float32)
  weights = weights / jnp.sum(weights)
  return jax.tree.map(lambda leaf: jnp.tensordot(weights, leaf.astype(jnp.float32), axes=1).astype(leaf.dtype),
                      stacked)


def broadcast(tree: Any, clients: int) -> Any:
  """`tree` repeated on a new leading clients axis of size `clients` (deploying Θ^q to every client)."""
  return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf[None], (clients, *leaf.shape)), tree)


def stack(trees: list) -> Any:
  """A list of per-client trees -> one tree with a leading clients axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def squared_distance(tree: Any, other: Any) -> jax.Array:
  """Σ over every leaf and element of (tree − other)², in float32."""
  return sum(jnp.sum(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))
             for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(other)))


def fedprox_term(params: Any, global_params: Any, mu: float) -> jax.Array:
  """FedProx: μ/2 ‖Θ − Θ^q‖² over every parameter, Θ^q held constant."""
  return 0.5 * mu * squared_distance(params, jax.lax.stop_gradient(global_params))


def code_distance(local: jax.Array, global_: jax.Array, reduction: str) -> jax.Array:
  """‖a − b‖² per example averaged over the batch ("sum", the paper's squared norm), or the per-element mean."""
  difference = jnp.square(local.astype(jnp.float32) - jax.lax.stop_gradient(global_).astype(jnp.float32))
  if reduction == "sum":
    return jnp.mean(jnp.sum(difference.reshape(difference.shape[0], -1), axis=1))
  if reduction == "mean":
    return jnp.mean(difference)
  raise ValueError(f"config.federated.mpr_reduction={reduction!r}; expected 'sum' (‖·‖² per example, the "
                   f"paper's Eq. 9) or 'mean' (per element).")


def mpr_term(local_encoded: dict, global_encoded: dict, weight: float, reduction: str = "sum") -> jax.Array:
  """Eq. 9: λd (‖w − w^q‖² + Σ_i ‖F_i − F_i^q‖²); `*_encoded` are VPGANEncoder outputs ("w" absent w/o VP)."""
  total = jnp.zeros((), jnp.float32)
  if "w" in local_encoded:
    total = total + code_distance(local_encoded["w"], global_encoded["w"], reduction)
  for local, global_ in zip(local_encoded["features"], global_encoded["features"]):
    total = total + code_distance(local, global_, reduction)
  return weight * total


def _is_float(leaf) -> bool:
  return jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)


def optimizer_state_between_rounds(stacked_opt_state: Any, rule: str) -> Any:
  """The clients' optimizer states (leading clients axis) after an aggregation, by `rule`.

  "keep"     each client keeps its own moments (a silo's optimizer lives across rounds);
  "reset"    moments (floating leaves) to zero, step counters (integer leaves) kept, so learning-rate
             schedules keep their place and Adam's bias correction stays that of the count;
  "average"  moments averaged over the clients like the parameters, counters kept.
  """
  if rule == "keep":
    return stacked_opt_state
  if rule == "reset":
    return jax.tree.map(lambda leaf: jnp.zeros_like(leaf) if _is_float(leaf) else leaf, stacked_opt_state)
  if rule == "average":
    return jax.tree.map(
        lambda leaf: jnp.broadcast_to(jnp.mean(leaf, axis=0, keepdims=True), leaf.shape) if _is_float(leaf) else leaf,
        stacked_opt_state)
  raise ValueError(f"config.federated.optimizer_state={rule!r}; expected one of {', '.join(OPTIMIZER_STATE_RULES)}.")
