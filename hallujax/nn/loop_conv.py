"""A 2-D convolution whose gradients are convolutions in XLA:CPU's fast layout, inside loops too.

jax differentiates ``lax.conv_general_dilated`` into convolutions with permuted
dimension numbers (the kernel gradient reads the input as ``f01b`` and writes
``01bf``; the input gradient reads the kernel as ``01oi``). Outside loops,
XLA:CPU rewrites them into its Eigen convolution (``b01f_01io->b01f``) with
explicit transposes; inside a while loop (``lax.scan``) it does not, and they
run on a generic path: a 9-block encoder-decoder's gradient ran 11× slower
rolled than unrolled (docs/benchmarks.md, "Rolled loops"). Here the backward
pass writes the transposes and the canonical convolutions itself. Forward:
the same ``lax.conv_general_dilated`` call (same bits); gradients: the same
sums in another order (float32 rounding).

``conv_general_dilated`` takes ``lax.conv_general_dilated``'s arguments, so it
drops into ``flax.linen.Conv(conv_general_dilated=...)`` with the parameter
tree unchanged; cases it does not cover (dilation, groups, other layouts) go
to ``lax.conv_general_dilated`` as they are.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

CANONICAL = ("NHWC", "HWIO", "NHWC")


def _canonical(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=CANONICAL)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, strides, padding):
  return _canonical(x, kernel, strides, padding)


def _conv_forward(x, kernel, strides, padding):
  return _canonical(x, kernel, strides, padding), (x, kernel)


def _pad_or_crop(x, axis, before, after):
  """Zero-pad (negative: crop) one axis."""
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (before, after, 0)
  return lax.pad(x, jnp.zeros((), x.dtype), config)


def _conv_backward(strides, padding, residuals, gradient):
  x, kernel = residuals
  kernel_size = kernel.shape[:2]
  output_size = gradient.shape[1:3]
  # Input gradient: the output gradient, dilated by the strides, correlated with the flipped kernel
  # (input and output channels swapped), padded so the result has the input's size.
  input_padding = []
  for axis in range(2):
    low = kernel_size[axis] - 1 - padding[axis][0]
    high = x.shape[1 + axis] + kernel_size[axis] - 2 - (output_size[axis] - 1) * strides[axis] - low
    input_padding.append((low, high))
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  input_gradient = lax.conv_general_dilated(gradient, flipped, (1, 1), input_padding, lhs_dilation=strides,
                                            dimension_numbers=CANONICAL)
  # Kernel gradient: Σ over batch and output positions of input patches × output gradient: a convolution
  # with the input's channels as its batch, the batch as its features and the (dilated) output gradient
  # as its kernel.
  padded = x
  for axis in range(2):
    used = (output_size[axis] - 1) * strides[axis] + kernel_size[axis]   # padded rows the forward read
    padded = _pad_or_crop(padded, 1 + axis, padding[axis][0], used - x.shape[1 + axis] - padding[axis][0])
  kernel_gradient = lax.conv_general_dilated(jnp.transpose(padded, (3, 1, 2, 0)), jnp.transpose(gradient, (1, 2, 0, 3)),
                                             (1, 1), [(0, 0), (0, 0)], rhs_dilation=strides,
                                             dimension_numbers=CANONICAL)
  return input_gradient.astype(x.dtype), jnp.transpose(kernel_gradient, (1, 2, 0, 3)).astype(kernel.dtype)


_conv.defvjp(_conv_forward, _conv_backward)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
  """``lax.conv_general_dilated`` with canonical-layout gradients for plain NHWC/HWIO 2-D convolutions."""
  plain = (lhs.ndim == 4 and feature_group_count == 1 and batch_group_count == 1 and precision is None
           and preferred_element_type is None and all(d in (None, 1) for d in (lhs_dilation or [1]))
           and all(d in (None, 1) for d in (rhs_dilation or [1])) and _is_canonical(dimension_numbers, lhs, rhs))
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count, precision,
                                    preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  return _conv(lhs, rhs, tuple(int(s) for s in window_strides), tuple((int(a), int(b)) for a, b in padding))


def _is_canonical(dimension_numbers, lhs, rhs) -> bool:
  if dimension_numbers is None:
    return False
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == \
      lax.conv_dimension_numbers(lhs.shape, rhs.shape, CANONICAL)
