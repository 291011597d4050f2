"""Small, fast stand-ins used by the trainer tests: a data source and a method.

They exercise the real trainer (sharding, checkpoints, logging) without the
compile time of a full paper method. Both are loaded the way a user's own
would be: ``config.data.source="tests.tiny:TinyFaces"``, ``config.method="tests.tiny"``.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hallujax.config_base import base_config


class TinyFaces:
  """Smooth random RGB images, one colour pattern per identity; "input" is the 4×4 block mean."""

  def __init__(self, data_config, split):
    self.size = data_config.target_size
    self.factor = data_config.target_size // data_config.input_size
    self.num_identities = data_config.num_identities
    self.length = data_config.train_size if split == "train" else data_config.eval_size
    self.offset = {"train": 0, "validation": 10**6, "test": 2 * 10**6}[split]

  def __len__(self):
    return self.length

  def __getitem__(self, index):
    identity = index % self.num_identities
    pattern = np.random.default_rng(identity).uniform(0, 255, (4, 4, 3))
    noise = np.random.default_rng(self.offset + index).uniform(-20, 20, (4, 4, 3))
    coarse = np.clip(pattern + noise, 0, 255)
    target = np.kron(coarse, np.ones((self.size // 4, self.size // 4, 1))).astype(np.uint8)
    low = target.reshape(self.size // self.factor, self.factor, self.size // self.factor, self.factor, 3)
    return {"input": low.mean(axis=(1, 3)).astype(np.uint8), "target": target,
            "identity": np.int32(identity)}


class Upsampler(nn.Module):
  @nn.compact
  def __call__(self, x, scale):
    x = nn.Conv(8, (3, 3))(x)
    x = jax.image.resize(x, (x.shape[0], x.shape[1] * scale, x.shape[2] * scale, x.shape[3]), "nearest")
    return nn.Conv(3, (3, 3))(nn.relu(x))


@flax.struct.dataclass
class TinyState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState


def scale(config):
  return config.data.target_size // config.data.input_size


def batch_spec(config):
  d = config.data
  return {"input": jax.ShapeDtypeStruct((d.input_size, d.input_size, 3), jnp.float32),
          "target": jax.ShapeDtypeStruct((d.target_size, d.target_size, 3), jnp.float32)}


def init_state(config, rng, batch):
  params = Upsampler().init(rng, jnp.asarray(batch["input"]), scale(config))["params"]
  return TinyState(step=jnp.zeros((), jnp.int32), params=params,
                   opt_state=optax.adam(config.train.learning_rate).init(params))


def loss_fn(params, batch, config):
  output = Upsampler().apply({"params": params}, batch["input"], scale(config))
  return jnp.mean(jnp.square(output - batch["target"]))


def train_step(state, batch, rng, *, config):
  noise = config.train.input_noise * jax.random.normal(rng, batch["input"].shape)
  batch = dict(batch, input=batch["input"] + noise)
  loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, config)
  # A configured step makes the loss NaN, to test the trainer's guard.
  loss = jnp.where(state.step + 1 == config.train.nan_at_step, jnp.nan, loss)
  updates, opt_state = optax.adam(config.train.learning_rate).update(grads, state.opt_state)
  params = optax.apply_updates(state.params, updates)
  return TinyState(step=state.step + 1, params=params, opt_state=opt_state), {"loss_pixel": loss}


def eval_step(state, batch, *, config):
  output = Upsampler().apply({"params": state.params}, batch["input"], scale(config))
  return {"mse": jnp.mean(jnp.square(output - batch["target"]), axis=(1, 2, 3))}


def hallucinate(state, batch, *, config):
  # Not in alphabetical order, so the tests see that the grid keeps the method's column order.
  return {"output": Upsampler().apply({"params": state.params}, batch["input"], scale(config)),
          "lr": batch["input"],
          "target": batch["target"]}


def tiny_config() -> ml_collections.ConfigDict:
  c = base_config()
  c.method = "tests.tiny"
  c.data.update(source="tests.tiny:TinyFaces", input_size=4, target_size=16, num_identities=8,
                train_size=64, eval_size=16)
  c.train.update(batch_size=8, steps=4, log_every=2, eval_every=4, eval_batches=2, image_every=4,
                 checkpoint_every=2, keep_checkpoints=2)
  c.train.learning_rate = 1e-2
  c.train.input_noise = 0.1
  c.train.nan_at_step = -1
  return c
