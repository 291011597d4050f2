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

A reply that arrives over the network is checked before it is averaged
(`aggregate_replies`): the same number of arrays as the global model, each of
its dtype and shape, every value finite, a partition id in [0, K) that no other
reply of the round claims, and parameters no further from Θ^q (Euclidean norm
over every parameter) than `max_update_ratio` × ‖Θ^q‖. A reply that fails is
dropped with its reason (logged) and the round goes on with the others: one
client sending NaN, 1e30 or float64 arrays cannot spoil the global model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# config.federated.strategy: what each of Table 6's rows does (hallujax.methods.vpfl.Federation reads it).
STRATEGIES = {
    #              aggregate  mpr    proximal
    "vpfl":        (True,     True,  False),
    "fedavg":      (True,     False, False),
    "fedprox":     (True,     False, True),
    "local_only":  (False,    False, False),
    "fused":       (False,    False, False),
    "centralized": (False,    False, False),
}
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


# ----------------------------------------------------------------------------- replies from the network


@dataclasses.dataclass
class Reply:
  """One client's answer as the server received it, before any check."""
  sender: str                    # who sent it (a Flower node id), for the log
  partition_id: Any = None       # the partition it claims (None: absent)
  arrays: list | None = None     # its parameters, leaves in the global model's tree order (None: absent)
  problem: str = ""              # why it could not even be read (set by the transport), else ""


def reply_problem(reply: Reply, global_leaves: list[np.ndarray], global_norm: float,
                  max_update_ratio: float) -> str:
  """Why `reply`'s parameters cannot be averaged into the global model ("" when they can)."""
  if reply.problem:
    return reply.problem
  if reply.arrays is None:
    return "it holds no parameters"
  if len(reply.arrays) != len(global_leaves):
    return f"it holds {len(reply.arrays)} arrays; the global model has {len(global_leaves)}"
  squared = 0.0
  for index, (array, expected) in enumerate(zip(reply.arrays, global_leaves)):
    if not isinstance(array, np.ndarray):
      return f"array {index} is a {type(array).__name__}, not an array"
    if array.dtype != expected.dtype:
      return f"array {index} is {array.dtype}; the global model's is {expected.dtype}"
    if array.shape != expected.shape:
      return f"array {index} has shape {array.shape}; the global model's has {expected.shape}"
    finite = np.isfinite(array)
    if not finite.all():
      return f"array {index} holds {array.size - int(finite.sum())} non-finite values"
    squared += float(np.sum(np.square(array.astype(np.float64) - expected.astype(np.float64))))
  distance, bound = math.sqrt(squared), max_update_ratio * global_norm
  if not distance <= bound:
    return (f"its parameters are {distance:.4g} from the global model's (Euclidean norm), more than the bound "
            f"{bound:.4g} = {max_update_ratio:g} × the global model's norm")
  return ""


def claimed_partition(reply: Reply, num_partitions: int) -> int | None:
  """The partition id `reply` claims as an int in [0, num_partitions), else None."""
  value = reply.partition_id
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
    return None
  if not math.isfinite(float(value)) or float(value) != int(value) or not 0 <= int(value) < num_partitions:
    return None
  return int(value)


def aggregate_replies(replies: list[Reply], global_params: Any, num_partitions: int,
                      max_update_ratio: float = 1.0) -> tuple[Any, list[int], list[tuple[str, str]]]:
  """Eq. 8 over the replies that pass every check -> (Θ^{q+1} or None when none passed, their partition ids
  in order, [(sender, reason)] of the dropped ones, each also logged). See the module docstring."""
  global_leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(jax.device_get(global_params))]
  global_norm = math.sqrt(sum(float(np.sum(np.square(leaf.astype(np.float64)))) for leaf in global_leaves))
  claims: dict[int, int] = {}
  for reply in replies:
    partition = claimed_partition(reply, num_partitions)
    if partition is not None:
      claims[partition] = claims.get(partition, 0) + 1
  accepted, dropped = [], []
  for reply in replies:
    partition = claimed_partition(reply, num_partitions)
    if partition is None:
      reason = f"partition id {reply.partition_id!r} is not one of 0..{num_partitions - 1}"
    elif claims[partition] > 1:   # which of them is the partition cannot be told: none is averaged
      reason = f"partition {partition} is claimed by {claims[partition]} replies of this round"
    else:
      reason = reply_problem(reply, global_leaves, global_norm, max_update_ratio)
    if reason:
      logging.warning("Reply from %s dropped: %s.", reply.sender, reason)
      dropped.append((reply.sender, reason))
    else:
      accepted.append((partition, reply.arrays))
  if not accepted:
    return None, [], dropped
  accepted.sort(key=lambda item: item[0])
  structure = jax.tree.structure(global_params)
  stacked = stack([jax.tree.unflatten(structure, [jnp.asarray(leaf) for leaf in arrays]) for _, arrays in accepted])
  return fedavg(stacked), [partition for partition, _ in accepted], dropped
