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

Why it is off by default (measured on XLA:CPU, jax 0.10.2, docs/benchmarks.md "Rolled loops"): inside the
while loop XLA:CPU leaves the backward's kernel-gradient convolutions in their transposed dimension order
(``f01b_i01o->01bf``) instead of rewriting them to the Eigen convolution it uses outside loops, so they run
on a slow generic path. A 9-block PCFH encoder-decoder's gradient then had half the HLO ops (2,889 vs
6,224) but compiled 1.3× slower and ran 11× slower; PCFH's smoke step ran 4× slower. `rolled()` keeps
the rolled form measurable (hallujax.tools.compile_ab) for backends and versions where it may pay.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


_ROLLED = [False]


@contextlib.contextmanager
def rolled():
  """Within this context, programs traced run repeated blocks as one lax.scan (see the module docstring).

  jax caches a jitted function's trace and this switch is not part of the cache's key: trace each variant
  with its own ``jax.jit`` object.
  """
  _ROLLED[0] = True
  try:
    yield
  finally:
    _ROLLED[0] = False


def sequential_blocks(parent: nn.Module, make_block: Callable[..., nn.Module], names: list[str], x: jax.Array,
                      *args) -> jax.Array:
  """x through the blocks `make_block(name=n)(x, *args)` for n in `names`, in order, in `parent`'s compact method.

  Every block must map x to an array of x's shape and dtype and use no RNG. By default a Python loop
  (each block written into the program). Inside `rolled()`, with two or more blocks, outside init, and no
  collection of theirs mutable (BatchNorm in eval mode reads its statistics; in training mode it writes
  them, and the blocks run as the loop), the blocks run as one ``lax.scan`` over their stacked variables.
  The forward values are the same bits; gradients agree to float32 rounding (tests/test_repeat.py).
  """
  collections = {collection: tree for collection, tree in parent.variables.items()
                 if any(name in tree for name in names)}
  if (not _ROLLED[0] or len(names) < 2 or parent.is_initializing()
      or any(parent.is_mutable_collection(collection) for collection in collections)):
    for name in names:
      x = make_block(name=name)(x, *args)
    return x
  stacked = {collection: jax.tree.map(lambda *leaves: jnp.stack(leaves), *[tree[name] for name in names])
             for collection, tree in collections.items()}
  block = make_block(parent=None)   # unbound: applied to each block's variables in turn

  def body(carry, block_variables):
    return block.apply(block_variables, carry, *args), None

  return lax.scan(body, x, stacked)[0]
