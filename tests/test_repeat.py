"""hallujax.nn.repeat: residual blocks rolled into one lax.scan keep the loop's parameters and numbers."""

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
  loop_value, loop_gradient = value_and_gradient(module, params, x)
  with repeat.rolled():
    scan_params = jax.eval_shape(module.init, jax.random.key(1), x)
    scan_value, scan_gradient = value_and_gradient(module, params, x)
  assert jax.tree.structure(scan_params) == jax.tree.structure(params)   # checkpoints and converters match
  np.testing.assert_array_equal(scan_value, loop_value)   # the forward pass is the same bits
  # Gradients: the same to float32 rounding (XLA sums the backward's terms in another order inside the loop):
  # within 1e-6 of the gradient's largest magnitude.
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(loop_gradient))
  for a, b in zip(jax.tree.leaves(scan_gradient), jax.tree.leaves(loop_gradient)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * scale)


def test_the_scanned_program_does_not_grow_with_the_blocks():
  x = jnp.ones((1, 8, 8, 3))

  def ops(blocks, rolled):
    module = pcfh.EncoderDecoder(features=4, downsamplings=1, blocks=blocks)
    params = jax.eval_shape(module.init, jax.random.key(0), x)
    gradient = jax.jit(jax.grad(lambda p: jnp.sum(module.apply(p, x))))
    if rolled:
      with repeat.rolled():
        return len(hlo_report.jaxpr_ops(gradient.trace(params).jaxpr))
    return len(hlo_report.jaxpr_ops(gradient.trace(params).jaxpr))

  assert ops(2, rolled=True) == ops(6, rolled=True)
  assert ops(6, rolled=False) > ops(2, rolled=False) + 4 * 20   # the loop writes every block out
  assert ops(6, rolled=True) < ops(6, rolled=False)


def test_recognizers_scan_their_stages_in_eval_and_keep_training_mode_as_before():
  from hallujax.models import recognition, vgg
  x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3), minval=-1, maxval=1)
  for module in (recognition.ResNetFace(stage_sizes=(1, 3, 1, 1), widths=(4, 4, 4, 4), embedding_dim=4),
                 vgg.ResNet50Features(stage_sizes=(3, 1, 1, 1), width=2)):
    variables = jax.jit(module.init)(jax.random.key(1), x)
    loss = lambda p: (lambda y: (jnp.sum(jnp.sin(y)), y))(module.apply({**variables, "params": p}, x))
    # A fresh jit per variant: jax caches a function's trace, and rolled() is not part of its key.
    loop = jax.jit(jax.value_and_grad(loss, has_aux=True)).trace(variables["params"])
    with repeat.rolled():
      scan = jax.jit(jax.value_and_grad(loss, has_aux=True)).trace(variables["params"])
    assert len(hlo_report.jaxpr_ops(scan.jaxpr)) < len(hlo_report.jaxpr_ops(loop.jaxpr))
    (_, loop_value), loop_gradient = loop.lower().compile()(variables["params"])
    (_, scan_value), scan_gradient = scan.lower().compile()(variables["params"])
    np.testing.assert_array_equal(scan_value, loop_value)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(loop_gradient))
    for a, b in zip(jax.tree.leaves(scan_gradient), jax.tree.leaves(loop_gradient)):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * scale)
    # Training mode writes BatchNorm statistics: the blocks run as the loop, statistics for every block.
    with repeat.rolled():
      _, updates = jax.eval_shape(lambda v: module.apply(v, x, train=True, mutable=["batch_stats"]), variables)
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(variables["batch_stats"])


def test_loop_conv_gradients_equal_lax_and_stay_canonical_inside_a_scan():
  import re
  from jax import lax
  from hallujax.nn import loop_conv
  for size, kernel_size, stride, padding in [(9, 3, 2, "SAME"), (8, 4, 2, [(1, 1), (1, 1)]), (9, 3, 2, "VALID")]:
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 3, 5))
    numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, loop_conv.CANONICAL)
    loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k, (stride, stride), padding,
                                                         dimension_numbers=numbers)))
    expected = jax.jit(jax.grad(loss(lax.conv_general_dilated), (0, 1)))(x, kernel)
    for got, want in zip(jax.jit(jax.grad(loss(loop_conv.conv_general_dilated), (0, 1)))(x, kernel), expected):
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(want))))

  def rolled_gradient_labels(conv):
    kernels = jax.random.normal(jax.random.key(2), (3, 3, 3, 4, 4))
    def loss(kernels):
      body = lambda h, k: (jnp.tanh(conv(h, k, (1, 1), "SAME", dimension_numbers=loop_conv.CANONICAL)), None)
      return jnp.sum(lax.scan(body, jnp.ones((1, 6, 6, 4)), kernels)[0])
    text = jax.jit(jax.grad(loss)).lower(kernels).compile().as_text()
    return set(re.findall(r"convolution\(.*?dim_labels=([^,\s]+)", text))
  assert rolled_gradient_labels(loop_conv.conv_general_dilated) == {"b01f_01io->b01f"}
  assert rolled_gradient_labels(lax.conv_general_dilated) != {"b01f_01io->b01f"}   # what loop_conv avoids
