"""Blocks of one shape applied in sequence, traced once (``lax.scan``) with their parameter tree unchanged.

A Python loop over N residual blocks puts N copies of the block, forward and
backward, into the step's program; XLA's compile time grows with them (issue
30). ``nn.scan`` would trace the block once but stack the blocks' parameters
into one array per leaf, which changes the parameter tree (checkpoints and the
PyTorch converters name ``ResidualBlock_0`` … ``ResidualBlock_{N-1}``). Here
each block keeps its own subtree: ``init`` builds them with the Python loop,
and ``apply`` stacks the N subtrees inside the step and scans one unbound copy
of the block over them. The stack is a copy of the blocks' parameters per call
(small next to the blocks' activations); its gradient is sliced back into each
block's subtree by autodiff.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


_UNROLLED = [False]


@contextlib.contextmanager
def unrolled():
  """Within this context, programs traced use the Python loop (before/after measurements, equality tests)."""
  _UNROLLED[0] = True
  try:
    yield
  finally:
    _UNROLLED[0] = False


def sequential_blocks(parent: nn.Module, make_block: Callable[..., nn.Module], names: list[str],
                      x: jax.Array) -> jax.Array:
  """x through the blocks `make_block(name=n)` for n in `names`, in order, inside `parent`'s compact method.

  Every block must map x to an array of x's shape and dtype and read only its own "params" (no mutable
  collections, no RNG). With two or more blocks, outside init, the blocks run as one ``lax.scan`` over
  their stacked parameters (inside `unrolled()`, as a Python loop). The forward values are the same
  bits; gradients agree to float32 rounding (tests/test_repeat.py).
  """
  if _UNROLLED[0] or len(names) < 2 or parent.is_initializing():
    for name in names:
      x = make_block(name=name)(x)
    return x
  params = parent.variables["params"]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[params[name] for name in names])
  block = make_block(parent=None)   # unbound: applied to each block's parameters in turn

  def body(carry, block_params):
    return block.apply({"params": block_params}, carry), None

  return lax.scan(body, x, stacked)[0]
