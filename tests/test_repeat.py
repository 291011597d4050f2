"""hallujax.nn.repeat: residual blocks traced once, with the same parameters and numbers as the Python loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hallujax.models import pcfh
from hallujax.nn import repeat
from hallujax.tools import hlo_report


def value_and_gradient(module, params, x):
  """(module output, gradient of Σ sin(output)), from one compiled program."""
  loss = lambda p: (lambda y: (jnp.sum(jnp.sin(y)), y))(module.apply(p, x))
  (_, value), gradient = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return value, gradient


def test_scanned_residual_blocks_keep_parameters_values_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  module = pcfh.EncoderDecoder(features=8, downsamplings=1, blocks=3)
  params = jax.jit(module.init)(jax.random.key(1), x)
  names = sorted(params["params"])
  assert [n for n in names if n.startswith("ResidualBlock")] == ["ResidualBlock_0", "ResidualBlock_1",
                                                                 "ResidualBlock_2"]
  with repeat.unrolled():
    loop_params = jax.eval_shape(module.init, jax.random.key(1), x)
    loop_value, loop_gradient = value_and_gradient(module, params, x)
  assert jax.tree.structure(loop_params) == jax.tree.structure(params)   # checkpoints and converters match
  scan_value, scan_gradient = value_and_gradient(module, params, x)
  np.testing.assert_array_equal(scan_value, loop_value)   # the forward pass is the same bits
  # Gradients: the same to float32 rounding (XLA sums the backward's terms in another order inside the loop):
  # within 1e-6 of the gradient's largest magnitude.
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(loop_gradient))
  for a, b in zip(jax.tree.leaves(scan_gradient), jax.tree.leaves(loop_gradient)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * scale)


def test_the_scanned_program_does_not_grow_with_the_blocks():
  x = jnp.ones((1, 8, 8, 3))

  def ops(blocks, unrolled):
    module = pcfh.EncoderDecoder(features=4, downsamplings=1, blocks=blocks)
    params = jax.eval_shape(module.init, jax.random.key(0), x)
    gradient = jax.jit(jax.grad(lambda p: jnp.sum(module.apply(p, x))))
    if unrolled:
      with repeat.unrolled():
        return len(hlo_report.jaxpr_ops(gradient.trace(params).jaxpr))
    return len(hlo_report.jaxpr_ops(gradient.trace(params).jaxpr))

  assert ops(2, unrolled=False) == ops(6, unrolled=False)
  assert ops(6, unrolled=True) > ops(2, unrolled=True) + 4 * 20   # the loop writes every block out
  assert ops(6, unrolled=False) < ops(6, unrolled=True)
