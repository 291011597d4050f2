"""The separable/polyphase upfirdn2d equals the grouped-convolution form, in value and gradient."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hallujax.nn import stylegan_layers as layers

# (up, down, pad) of every blur StyleGAN2 runs, for its 3×3 and 1×1 kernels.
STYLEGAN2_CASES = {
    "upsample_2x": (2, 1, (2, 1)),
    "blur_before_downsample_k3": (1, 1, (2, 2)),
    "blur_before_downsample_k1": (1, 1, (1, 1)),
    "blur_after_transposed_conv_k3": (1, 1, (1, 1)),
}


def both_forms(x, kernel, up, down, pad):
  return (layers.upfirdn2d(x, kernel, up, down, pad), layers.upfirdn2d_grouped(x, kernel, up, down, pad))


def random_input(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("name", sorted(STYLEGAN2_CASES))
def test_stylegan2_blurs_equal_grouped_form_in_value_and_gradient(name):
  up, down, pad = STYLEGAN2_CASES[name]
  kernel = layers.make_blur_kernel(gain=1.0 if "downsample" in name else 4.0)
  x = random_input((2, 8, 8, 5))
  cotangent = random_input((2, 8 * up + pad[0] + pad[1] - 3, 8 * up + pad[0] + pad[1] - 3, 5), seed=1)

  def loss(function, x):
    return jnp.sum(function(x, kernel, up, down, pad) * cotangent)

  separable, grouped = jax.jit(lambda x: both_forms(x, kernel, up, down, pad))(x)
  assert separable.shape == grouped.shape == cotangent.shape
  np.testing.assert_allclose(separable, grouped, rtol=0, atol=1e-6)
  assert float(jnp.max(jnp.abs(separable))) > 0.5
  gradients = [jax.jit(jax.grad(lambda x, f=f: loss(f, x)))(x) for f in (layers.upfirdn2d, layers.upfirdn2d_grouped)]
  np.testing.assert_allclose(gradients[0], gradients[1], rtol=0, atol=1e-5)
  assert float(jnp.max(jnp.abs(gradients[0]))) > 0.1


def test_every_up_down_pad_combination_equals_grouped_form():
  """Up 1-3, down 1-2, crops and pads on both sides, odd and even kernels, non-square inputs."""
  x = random_input((2, 7, 6, 3))
  cases = [(up, down, (pad0, pad1), taps)
           for up, down, pad0, pad1, taps in itertools.product((1, 2, 3), (1, 2), (-1, 0, 3), (-2, 0, 1),
                                                               ((1, 3, 3, 1), (1, 2, 1), (1, 4, 6, 4, 1)))
           if 6 * up + pad0 + pad1 >= len(taps)]

  @jax.jit
  def all_cases(x):   # one program: compiling each case on its own is slower than the check
    return [both_forms(x, layers.make_blur_kernel(taps, gain=up * up), up, down, pad)
            for up, down, pad, taps in cases]

  for case, (separable, grouped) in zip(cases, all_cases(x)):
    assert separable.shape == grouped.shape, case
    np.testing.assert_allclose(separable, grouped, rtol=0, atol=1e-6, err_msg=str(case))
  assert len(cases) > 100


def test_bfloat16_input_stays_bfloat16_and_close_to_float32():
  x = random_input((2, 8, 8, 4))
  kernel = layers.make_blur_kernel(gain=4.0)
  low = layers.upfirdn2d(x.astype(jnp.bfloat16), kernel, up=2, pad=(2, 1))
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(low.astype(jnp.float32), layers.upfirdn2d(x, kernel, up=2, pad=(2, 1)), atol=0.05)


def test_separable_factors_reproduce_the_kernel_and_reject_rank_two():
  kernel = layers.make_blur_kernel(gain=4.0)
  column, row = layers.separable_factors(kernel)
  np.testing.assert_allclose(np.outer(column, row), kernel, rtol=1e-7)
  rank_two = np.array([[1.0, 0.0], [0.0, 1.0]])
  assert layers.separable_factors(rank_two) is None
  assert layers.separable_factors(np.zeros((3, 3))) is None


def test_non_separable_kernel_takes_the_grouped_form():
  kernel = np.array([[0.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 0.0]], np.float32)
  x = random_input((1, 6, 6, 2))
  got = layers.upfirdn2d(x, kernel, up=1, down=2, pad=(1, 1))
  # A true convolution with a symmetric cross: the centre pixel gets 2·x plus its four neighbours.
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  expected = (2 * padded[:, 1:-1, 1:-1] + padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2]
              + padded[:, 1:-1, 2:])[:, ::2, ::2]
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_output_that_would_be_empty_is_a_one_line_error():
  with pytest.raises(ValueError, match="no output"):
    layers.upfirdn2d(random_input((1, 2, 2, 1)), layers.make_blur_kernel(), pad=(-1, -1))
