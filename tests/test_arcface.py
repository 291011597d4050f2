"""The ArcFace method learns identities and follows the method contract; the margin heads behave."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import arcface as arcface_config
from hallujax.methods import get_method
from hallujax.models import recognition


def fixed_batch(num_identities=4, per_identity=2, size=32):
  rng = np.random.default_rng(0)
  patterns = rng.uniform(-1, 1, (num_identities, 4, 4, 3))
  identity = np.repeat(np.arange(num_identities), per_identity).astype(np.int32)
  images = np.kron(patterns[identity], np.ones((1, size // 4, size // 4, 1)))
  images = np.clip(images + rng.normal(0, 0.1, images.shape), -1, 1).astype(np.float32)
  return {"target": images, "identity": identity}


def test_arcface_method_fits_a_fixed_batch():
  config = arcface_config.get_config("smoke")
  config.data.num_identities = 4
  config.model.update(stage_sizes=(1, 1), widths=(8, 16))  # two stages: half the compile time
  method = get_method("arcface").make(config)
  batch = fixed_batch()
  # An "rbg" key: XLA on CPU compiles its random-number code several times faster than threefry's.
  state = jax.jit(method.init)(jax.random.key(0, impl="rbg"))
  step = jax.jit(method.steps["train"])
  losses = []
  for index in range(20):
    state, metrics = step(state, {}, batch, jax.random.PRNGKey(index))
    losses.append(float(metrics["loss_arcface"]))
  print("ArcFace smoke losses:", [round(x, 2) for x in losses])
  assert int(state.step) == 20
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
  values = jax.jit(method.eval_step)(state, {}, batch)
  assert set(values) == {"class_accuracy", "loss_arcface", "pair_cosine", "pair_same_identity"}
  assert all(v.shape == (8,) for v in values.values())
  assert float(jnp.mean(values["class_accuracy"])) == 1.0
  assert method.hallucinate(state, {}, batch)["target"].shape == (8, 32, 32, 3)


def test_additive_angular_margin_penalises_only_the_true_class():
  embeddings = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])
  class_weights = jnp.asarray([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])  # centres at 0°, 90°, 45°
  labels = jnp.asarray([2, 1])
  logits = recognition.additive_angular_margin_logits(embeddings, class_weights, labels, scale=2.0, margin=0.5)
  expected = 2.0 * np.asarray([[1.0, 0.0, np.cos(np.pi / 4 + 0.5)],
                               [0.0, np.cos(0.5), np.cos(np.pi / 4)]])
  np.testing.assert_allclose(logits, expected, atol=1e-4)
  gradient = jax.grad(lambda e: jnp.sum(recognition.additive_angular_margin_logits(
      e, class_weights, jnp.asarray([0, 0]))))(embeddings)  # θ = 0 for the first: must stay finite
  assert np.all(np.isfinite(gradient))


def test_a_softmax_follows_paper_004_psi():
  class_weights = jnp.eye(2)
  for theta in (0.3, 1.5, 2.5):  # k = 0, 0, 1 for m = 1.5 (kπ/m boundaries at 0, 2.09)
    embedding = 3.0 * jnp.asarray([[np.cos(theta), np.sin(theta)]])
    logits = recognition.a_softmax_logits(embedding, class_weights, jnp.asarray([0]), margin=1.5)
    k = np.floor(1.5 * theta / np.pi)
    psi = (-1) ** k * np.cos(1.5 * theta) - 2 * k
    np.testing.assert_allclose(logits[0], [3.0 * psi, 3.0 * np.sin(theta)], atol=1e-4)


def test_recognition_networks_reject_bad_inputs():
  with pytest.raises(ValueError, match="at least 32x32"):
    recognition.ResNetFace(stage_sizes=(1, 1, 1, 1), widths=(4, 4, 4, 4)).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(ValueError, match="1- or 3-channel"):
    recognition.LightCNN29().init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 2)))
