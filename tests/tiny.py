"""Small, fast stand-ins used by the trainer tests: a data source and a complete example method.

They exercise the real trainer (sharding, checkpoints, logging) without the
compile time of a paper method, and show the Method contract in one page: a
frozen tree (a fixed "colour" network the loss reads), two named steps that
report different metrics (a warm-up step and a main step, chosen by the
schedule), and, with ``config.data.clients > 0``, a declared client axis
(batches ``(K, B_k, ...)``, one model per client trained by a vmapped step).
Loaded the way a user's own would be: ``config.data.source="tests.tiny:TinyFaces"``,
``config.method="tests.tiny"``.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hallujax import optim
from hallujax.config_base import base_config
from hallujax.methods import CLIENT_BATCH_AXES, Method, phase_at


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
            "identity": np.int32(identity), "index": np.int32(index)}


class Upsampler(nn.Module):
  scale: int

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3))(x)
    x = jax.image.resize(x, (x.shape[0], x.shape[1] * self.scale, x.shape[2] * self.scale, x.shape[3]), "nearest")
    return nn.Conv(3, (3, 3))(nn.relu(x))


class ColourFeatures(nn.Module):
  """The frozen network: a fixed 1×1 projection the loss compares outputs through."""

  @nn.compact
  def __call__(self, x):
    return nn.Conv(4, (1, 1), use_bias=False)(x)


@flax.struct.dataclass
class TinyState:
  step: jax.Array
  params: dict
  opt_state: dict


def make(config, context=None) -> Method:
  """The tiny method, built once: networks and optimizer are closed over; the config is read only here."""
  d, t = config.data, config.train
  upsampler = Upsampler(scale=d.target_size // d.input_size)
  colour = ColourFeatures()
  optimizer = optim.make(config.optim.upsampler, "config.optim.upsampler")
  clients = int(d.clients)
  sample_input = jnp.zeros((1, d.input_size, d.input_size, 3))

  def init_one(rng):
    params = upsampler.init(rng, sample_input)["params"]
    return params, optimizer.init(params)

  def init(rng):
    if clients:
      params, opt_state = jax.vmap(init_one)(jax.random.split(rng, clients))
    else:
      params, opt_state = init_one(rng)
    return TinyState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)

  def init_frozen(rng):
    return {"colour": colour.init(rng, jnp.zeros((1, 4, 4, 3)))["params"]}

  def loss_fn(params, frozen, batch, colour_weight):
    output = upsampler.apply({"params": params}, batch["input"])
    pixel = jnp.mean(jnp.square(output - batch["target"]))
    features = lambda images: colour.apply({"params": frozen["colour"]}, images)
    colour_loss = jnp.mean(jnp.square(features(output) - features(batch["target"])))
    return pixel + colour_weight * colour_loss, (pixel, colour_loss)

  def update(params, opt_state, frozen, batch, rng, colour_weight):
    noise = t.input_noise * jax.random.normal(rng, batch["input"].shape)
    batch = dict(batch, input=batch["input"] + noise)
    (_, (pixel, colour_loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, frozen, batch, colour_weight)
    params, opt_state = optim.apply_update(optimizer, params, opt_state, grads)
    return params, opt_state, pixel, colour_loss

  def make_step(colour_weight, with_colour_metric):
    def step(state, frozen, batch, rng):
      if clients:
        keys = jax.random.split(rng, clients)
        params, opt_state, pixel, colour_loss = jax.vmap(update, in_axes=(0, 0, None, 0, 0, None))(
            state.params, state.opt_state, frozen, batch, keys, colour_weight)
        pixel, colour_loss = jnp.mean(pixel), jnp.mean(colour_loss)
      else:
        params, opt_state, pixel, colour_loss = update(state.params, state.opt_state, frozen, batch, rng,
                                                       colour_weight)
      # A configured step makes the parameters NaN, to test the trainer's guard.
      poison = jnp.where(state.step + 1 == t.nan_at_step, jnp.nan, 0.0)
      params = jax.tree.map(lambda p: p + poison, params)
      metrics = {"loss_pixel": pixel}
      if with_colour_metric:
        metrics["loss_colour"] = colour_loss
      return TinyState(step=state.step + 1, params=params, opt_state=opt_state), metrics
    return step

  def outputs(state, batch):
    if clients:
      return jax.vmap(lambda p, x: upsampler.apply({"params": p}, x))(state.params, batch["input"])
    return upsampler.apply({"params": state.params}, batch["input"])

  def eval_step(state, frozen, batch):
    error = jnp.square(outputs(state, batch) - batch["target"])
    return {"mse": jnp.mean(error, axis=tuple(range(error.ndim - 3, error.ndim)))}

  def hallucinate(state, frozen, batch):
    images = {"output": outputs(state, batch), "lr": batch["input"], "target": batch["target"]}
    return {k: v.reshape(-1, *v.shape[-3:]) for k, v in images.items()}

  spec = {"input": jax.ShapeDtypeStruct((d.input_size, d.input_size, 3), jnp.float32),
          "target": jax.ShapeDtypeStruct((d.target_size, d.target_size, 3), jnp.float32)}
  phase = lambda step: phase_at((t.warmup_steps,), ("warmup", "main"), step)
  return Method(
      batch_spec=spec, init=init, init_frozen=init_frozen,
      steps={"warmup": make_step(0.0, False), "main": make_step(t.colour_weight, True)},
      schedule=phase, phase=phase, eval_step=eval_step, hallucinate=hallucinate,
      batch_axes=CLIENT_BATCH_AXES if clients else ("batch",),
      state_rules=((r"^(params|opt_state)/", ("clients",)),) if clients else ())


def tiny_config() -> ml_collections.ConfigDict:
  c = base_config()
  c.method = "tests.tiny"
  c.data.update(source="tests.tiny:TinyFaces", input_size=4, target_size=16, num_identities=8,
                train_size=64, eval_size=16)
  c.train.update(batch_size=8, steps=4, log_every=2, eval_every=4, eval_batches=2, image_every=4,
                 checkpoint_every=2, keep_checkpoints=2)
  c.optim = ml_collections.ConfigDict({"upsampler": dict(name="adam", learning_rate=1e-2)})
  c.train.input_noise = 0.1
  c.train.nan_at_step = -1
  c.train.warmup_steps = 1
  c.train.colour_weight = 0.5
  return c


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """`--config=tests/tiny.py` for command-line tests (launch/local_processes.sh); no variants."""
  del variant
  return tiny_config()
