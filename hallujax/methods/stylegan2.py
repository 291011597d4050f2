"""StyleGAN2 training (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

One step, as in the official and rosinality implementations:
  1. discriminator: non-saturating logistic loss softplus(D(G(z))) + softplus(-D(x));
  2. every `loss.r1_every` steps: lazy R1, γ/2 · E‖∇_x D(x)‖² · r1_every (§B);
  3. generator: softplus(-D(G(z))), style mixing with probability `loss.style_mixing`;
  4. every `loss.path_length_every` steps: path length regularization
     w_pl · E(‖J_wᵀ y‖ - a)² · path_length_every, y ~ N(0, I)/√(HW) (§3.2, Eq. 4);
  5. generator EMA with a half-life of `train.ema_half_life_images` images.
Regularization passes are separate optimizer updates. Which ones a step runs is
its named step ("plain", "r1", "path_length", "r1_path_length"), chosen on the
host from the step number (`step_variant`); the trainer compiles one program per
name. A `lax.cond` on `state.step` would need one program only, but XLA:CPU
runs gradients inside a conditional several times slower, and a conditional's
FLOP count includes both branches. Adam uses the lazy-regularization correction
(§B): with c = k/(k+1) for interval k, the learning rate is lr·c and the betas β^c.
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp
import optax
from absl import logging

from hallujax import optim
from hallujax.methods import MakeContext, Method
from hallujax.methods.train_state import with_updates
from hallujax.models.stylegan2 import Discriminator, Generator, channel_table, mix_styles, num_ws


@flax.struct.dataclass
class StyleGAN2State:
  step: jax.Array
  params: dict            # {"generator": ..., "discriminator": ...}
  generator_ema: dict     # EMA of the generator params: the network to sample from
  buffers: dict           # generator buffers: tracked w_avg and the fixed noise maps
  opt_state: dict         # {"generator": ..., "discriminator": ...}
  path_length_mean: jax.Array  # the running mean a of the path lengths (§3.2)


# ----------------------------------------------------------------------------- networks


def networks(config) -> tuple[Generator, Discriminator]:
  m = config.model
  dtype = jnp.dtype(config.train.compute_dtype)
  channels = channel_table(m.resolution, m.channel_multiplier, m.channel_max, m.channel_base)
  generator = Generator(resolution=m.resolution, channels=channels, style_dim=m.style_dim,
                        mapping_layers=m.mapping_layers, mapping_lr_multiplier=m.mapping_lr_multiplier,
                        dtype=dtype)
  discriminator = Discriminator(resolution=m.resolution, channels=channels, stddev_group=m.stddev_group,
                                dtype=dtype)
  return generator, discriminator


def lazy_ratio(interval: int) -> float:
  """c = k / (k + 1): the share of a lazily regularized network's updates that are main updates (§B)."""
  return interval / (interval + 1) if interval > 0 else 1.0


def lazy_corrected(section, interval: int) -> dict:
  """An Adam section with the lazy-regularization correction (§B): lr·c and β^c for c = k/(k+1)."""
  c = lazy_ratio(interval)
  section = dict(section)
  section.update(learning_rate=section["learning_rate"] * c, b1=optim.field(section, "b1") ** c,
                 b2=optim.field(section, "b2") ** c)
  return section


def optimizers(config) -> dict[str, optax.GradientTransformation]:
  """config.optim.generator / .discriminator (config-f: Adam, lr 0.002, β = (0, 0.99)), lazily corrected."""
  loss = config.loss
  return {name: optim.make(lazy_corrected(config.optim[name], interval), f"config.optim.{name}")
          for name, interval in (("generator", loss.path_length_every), ("discriminator", loss.r1_every))}


def batch_spec(config) -> dict[str, jax.ShapeDtypeStruct]:
  size = config.data.target_size
  if size != config.model.resolution:
    raise ValueError(f"config.data.target_size={size} must equal config.model.resolution="
                     f"{config.model.resolution}: the real images are the targets.")
  return {"target": jax.ShapeDtypeStruct((size, size, 3), jnp.float32)}


def load_weights_file(config, generator: Generator) -> dict | None:
  """The converted contents of `config.weights.stylegan2`, or None (random init, logged)."""
  path = config.weights.stylegan2
  if not path:
    logging.info("config.weights.stylegan2 is empty: StyleGAN2 starts from random initialization.")
    return None
  from hallujax.convert.stylegan2 import load_checkpoint
  loaded = load_checkpoint(path)
  architecture = loaded["architecture"]
  if (architecture["resolution"], tuple(architecture["channels"]), architecture["style_dim"]) != (
      generator.resolution, tuple(generator.channels), generator.style_dim):
    raise ValueError(f"{path} holds a {architecture['resolution']}² generator with channels "
                     f"{architecture['channels']} and style_dim {architecture['style_dim']}; the config builds "
                     f"{generator.resolution}², {tuple(generator.channels)}, {generator.style_dim}. Set "
                     f"config.model to match the file.")
  logging.info("StyleGAN2 weights from %s (%s)", path, ", ".join(k for k in loaded if k.startswith(("gen", "disc"))))
  return loaded


def initial_state(generator: Generator, discriminator: Discriminator, opts: dict, rng) -> StyleGAN2State:
  """Random networks, their optimizer states and the generator EMA (pure)."""
  generator_key, discriminator_key = jax.random.split(bit_generator_key(rng))
  generator_variables = generator.init(generator_key, jnp.zeros((1, generator.style_dim), jnp.float32))
  images = jnp.zeros((1, generator.resolution, generator.resolution, 3))
  params = dict(generator=generator_variables["params"],
                discriminator=discriminator.init(discriminator_key, images)["params"])
  opt_state = {name: opts[name].init(params[name]) for name in params}
  return StyleGAN2State(step=jnp.zeros((), jnp.int32), params=params, generator_ema=params["generator"],
                        buffers=generator_variables["buffers"], opt_state=opt_state,
                        path_length_mean=jnp.zeros((), jnp.float32))


def with_loaded_weights(state: StyleGAN2State, loaded: dict, opts: dict) -> StyleGAN2State:
  """The state with a converted file's generator (and EMA, discriminator when present), fresh optimizers."""
  ema = loaded.get("generator_ema")
  params = dict(state.params, generator=(loaded.get("generator") or ema)["params"])
  if "discriminator" in loaded:
    params["discriminator"] = loaded["discriminator"]["params"]
  params = jax.tree.map(jnp.asarray, params)
  return state.replace(params=params, generator_ema=jax.tree.map(jnp.asarray, (ema or loaded["generator"])["params"]),
                       buffers=jax.tree.map(jnp.asarray, (ema or loaded["generator"])["buffers"]),
                       opt_state={name: opts[name].init(params[name]) for name in params})


# ----------------------------------------------------------------------------- sampling


def sample_w_plus(generator: Generator, params, buffers, rng, batch_size: int, mixing_probability: float,
                  update_w_avg: bool = False):
  """W+ codes of fresh z, style-mixed per sample with `mixing_probability` (StyleGAN §3.1)."""
  z_key, mix_key, crossover_key, coin_key = jax.random.split(rng, 4)
  z = jax.random.normal(z_key, (2 * batch_size, generator.style_dim))
  variables = {"params": params, "buffers": buffers}
  if update_w_avg:
    w, updated = generator.apply(variables, z, update_w_avg=True, method=generator.map, mutable=["buffers"])
    buffers = updated["buffers"]
  else:
    w = generator.apply(variables, z, method=generator.map)
  length = num_ws(generator.resolution)
  crossover = jax.random.randint(crossover_key, (batch_size,), 1, length)
  mixed = jax.random.uniform(coin_key, (batch_size,)) < mixing_probability
  crossover = jnp.where(mixed, crossover, length)
  return mix_styles(w[:batch_size], w[batch_size:], crossover, length), buffers


def synthesize(generator: Generator, params, buffers, w_plus, rng) -> jax.Array:
  """Images from W+ with fresh per-pixel noise (training mode)."""
  return generator.apply({"params": params, "buffers": buffers}, w_plus, input_is_w=True,
                         noise_mode="random", rngs={"noise": rng})


# ----------------------------------------------------------------------------- losses


def discriminator_loss(discriminator_params, discriminator, real, fake):
  """Non-saturating logistic loss, discriminator side: softplus(D(G(z))) + softplus(-D(x))."""
  logits = discriminator.apply({"params": discriminator_params}, jnp.concatenate([real, fake]))
  real_logits, fake_logits = jnp.split(logits, 2)
  loss = jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))
  return loss, (jnp.mean(real_logits), jnp.mean(fake_logits))


def r1_penalty(discriminator_params, discriminator, real):
  """E‖∇_x D(x)‖² on real images (Mescheder et al. 2018); per-sample gradients of the sum."""
  def total_logit(images):
    return jnp.sum(discriminator.apply({"params": discriminator_params}, images))
  gradients = jax.grad(total_logit)(real).astype(jnp.float32)
  return jnp.mean(jnp.sum(jnp.square(gradients), axis=(1, 2, 3)))


def generator_loss(generator_params, generator, discriminator, state, w_plus, rng):
  """Non-saturating logistic loss, generator side: softplus(-D(G(z)))."""
  fake = synthesize(generator, generator_params, state.buffers, w_plus, rng)
  logits = discriminator.apply({"params": state.params["discriminator"]}, fake)
  return jnp.mean(jax.nn.softplus(-logits))


def path_lengths(generator_params, generator, buffers, w_plus, rng) -> jax.Array:
  """‖J_wᵀ y‖ per sample, y ~ N(0, I)/√(H·W) (§3.2), averaged over the W+ entries as the official code."""
  noise_key, image_noise_key = jax.random.split(rng)
  size = generator.resolution

  def projected(w):
    images = synthesize(generator, generator_params, buffers, w, noise_key)
    y = jax.random.normal(image_noise_key, images.shape) / (size * size) ** 0.5
    return jnp.sum(images * y)

  gradients = jax.grad(projected)(w_plus).astype(jnp.float32)   # (B, num_ws, style_dim)
  return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(gradients), axis=2), axis=1))


def path_length_loss(generator_params, generator, state, w_plus, rng, loss):
  """w_pl · k · E(‖J_wᵀ y‖ − a)² with the running mean a (§3.2); `loss` is config.loss."""
  lengths = path_lengths(generator_params, generator, state.buffers, w_plus, rng)
  mean = state.path_length_mean + loss.path_length_decay * (
      jnp.mean(jax.lax.stop_gradient(lengths)) - state.path_length_mean)
  penalty = jnp.mean(jnp.square(lengths - mean))
  return loss.path_length_weight * loss.path_length_every * penalty, (penalty, mean, lengths)


# ----------------------------------------------------------------------------- updates


def with_update(state: StyleGAN2State, name: str, optimizer, gradients) -> StyleGAN2State:
  return with_updates(state, {name: optimizer}, {name: gradients})


# ----------------------------------------------------------------------------- step variants

# Which lazy regularizers a step runs: (R1, path length) for each variant name.
VARIANTS = {"plain": (False, False), "r1": (True, False), "path_length": (False, True),
            "r1_path_length": (True, True)}


def is_regularization_step(step: int, interval: int) -> bool:
  """Lazy regularization runs at steps 0, k, 2k, ... for interval k > 0; never for k <= 0."""
  return interval > 0 and step % interval == 0


def step_variant(config, step: int) -> str:
  """The variant that runs step number `step` (a host int from 0, equal to `state.step`)."""
  do_r1 = is_regularization_step(step, config.loss.r1_every)
  do_path = is_regularization_step(step, config.loss.path_length_every)
  return next(name for name, flags in VARIANTS.items() if flags == (do_r1, do_path))


def step_variants(config) -> tuple[str, ...]:
  """The variants some step runs: the schedule repeats every lcm(r1_every, path_length_every) steps."""
  period = math.lcm(max(config.loss.r1_every, 1), max(config.loss.path_length_every, 1))
  used = {step_variant(config, step) for step in range(period)}
  return tuple(name for name in VARIANTS if name in used)


def variant_flags(config, variant: str) -> tuple[bool, bool]:
  """(run R1, run path length) for `variant`, checked against the config."""
  if variant not in VARIANTS:
    raise ValueError(f"Unknown StyleGAN2 step variant {variant!r}; expected one of {', '.join(VARIANTS)}.")
  do_r1, do_path = VARIANTS[variant]
  for runs, name, interval in ((do_r1, "r1_every", config.loss.r1_every),
                               (do_path, "path_length_every", config.loss.path_length_every)):
    if runs and interval <= 0:
      raise ValueError(f"Step variant {variant!r} runs a lazy regularizer that config.loss.{name}={interval} "
                       f"turns off; use one of {', '.join(step_variants(config))}.")
  return do_r1, do_path


def bit_generator_key(rng: jax.Array) -> jax.Array:
  """The step's key re-wrapped for XLA's RngBitGenerator ("unsafe_rbg").

  A step draws ~15 batches of random numbers (latents, mixing points, noise
  maps, path-length projections); with the default threefry each is a large
  hash program that XLA compiles slowly on CPU (seconds each). RngBitGenerator
  compiles to one op and is fast on GPU/TPU; the draws stay a deterministic
  function of the step's key.
  """
  is_typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
  data = (jax.random.key_data(rng) if is_typed else rng).reshape(-1).astype(jnp.uint32)
  return jax.random.wrap_key_data(jnp.resize(data, (4,)), impl="unsafe_rbg")


def random_x_flip(images: jax.Array, rng) -> jax.Array:
  """Each image mirrored left-right with probability 1/2 (the official FFHQ runs' --mirror=1)."""
  flip = jax.random.bernoulli(rng, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1], images)


def train_step_function(generator: Generator, discriminator: Discriminator, opts: dict, config, variant: str):
  """`step(state, frozen, batch, rng)` of the named variant (see `step_variant`); built once per name."""
  do_r1, do_path = variant_flags(config, variant)
  loss, t = config.loss, config.train

  def step(state: StyleGAN2State, frozen, batch, rng) -> tuple[StyleGAN2State, dict]:
    del frozen
    return train_step(state, batch, rng, generator, discriminator, opts, loss, t, do_r1, do_path)

  return step


def train_step(state: StyleGAN2State, batch, rng, generator, discriminator, opts, loss, t, do_r1: bool,
               do_path: bool) -> tuple[StyleGAN2State, dict]:
  """One step: D, lazy R1 (`do_r1`), G, lazy path length (`do_path`), EMA. Metrics of skipped regularizers
  are not reported."""
  batch_size = batch["target"].shape[0]
  keys = jax.random.split(bit_generator_key(rng), 8)
  real = random_x_flip(batch["target"], keys[6]) if t.x_flip else batch["target"]

  # 1. Discriminator main update.
  w_plus, _ = sample_w_plus(generator, state.params["generator"], state.buffers, keys[0], batch_size,
                            loss.style_mixing)
  fake = jax.lax.stop_gradient(synthesize(generator, state.params["generator"], state.buffers, w_plus, keys[1]))
  (d_loss, (real_logit, fake_logit)), grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
      state.params["discriminator"], discriminator, real, fake)
  state = with_update(state, "discriminator", opts["discriminator"], grads)

  # 2. Lazy R1 every r1_every steps (a separate Adam step, as the official code).
  metrics = {}
  if do_r1:
    def weighted(params):
      penalty = r1_penalty(params, discriminator, real)
      return loss.r1_gamma / 2 * loss.r1_every * penalty, penalty
    (_, r1), grads = jax.value_and_grad(weighted, has_aux=True)(state.params["discriminator"])
    state = with_update(state, "discriminator", opts["discriminator"], grads)
    metrics["r1_penalty"] = r1

  # 3. Generator main update; the mapping's w_avg tracks the mean w.
  w_plus, buffers = sample_w_plus(generator, state.params["generator"], state.buffers, keys[2], batch_size,
                                  loss.style_mixing, update_w_avg=True)
  g_loss, grads = jax.value_and_grad(generator_loss)(state.params["generator"], generator, discriminator,
                                                     state, w_plus, keys[3])
  state = with_update(state, "generator", opts["generator"], grads).replace(buffers=buffers)

  # 4. Lazy path length regularization every path_length_every steps.
  if do_path:
    path_batch = max(batch_size // loss.path_length_batch_shrink, 1)
    w_path, _ = sample_w_plus(generator, state.params["generator"], state.buffers, keys[4], path_batch,
                              loss.style_mixing)
    (_, (path_penalty, mean, lengths)), grads = jax.value_and_grad(path_length_loss, has_aux=True)(
        state.params["generator"], generator, state, w_path, keys[5], loss)
    state = with_update(state, "generator", opts["generator"], grads).replace(path_length_mean=mean)
    metrics.update(path_length_penalty=path_penalty, path_length=jnp.mean(lengths),
                   path_length_mean=state.path_length_mean)

  # 5. Generator EMA: β = 0.5^(batch / half-life images).
  beta = 0.5 ** (batch_size / max(t.ema_half_life_images, 1e-8))
  ema = jax.tree.map(lambda e, p: p + beta * (e - p), state.generator_ema, state.params["generator"])
  state = state.replace(generator_ema=ema, step=state.step + 1)
  metrics.update(loss_discriminator=d_loss, loss_generator=g_loss, real_logit=real_logit, fake_logit=fake_logit)
  return state, {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}


# ----------------------------------------------------------------------------- evaluation


def generate(generator: Generator, state: StyleGAN2State, z: jax.Array, truncation: float = 1.0) -> jax.Array:
  """EMA-generator images with the fixed noise maps, clipped to [-1, 1]."""
  images = generator.apply({"params": state.generator_ema, "buffers": state.buffers}, z,
                           truncation=truncation, noise_mode="const")
  return jnp.clip(images, -1.0, 1.0)


def make(config, context: MakeContext = MakeContext()) -> Method:
  """StyleGAN2 built once: networks, optimizers and one step per lazy-regularization variant."""
  generator, discriminator = networks(config)
  opts = optimizers(config)
  spec = batch_spec(config)
  style_dim = config.model.style_dim

  def init(rng) -> StyleGAN2State:
    return initial_state(generator, discriminator, opts, rng)

  def load_pretrained(state: StyleGAN2State) -> StyleGAN2State:
    loaded = load_weights_file(config, generator)
    return state if loaded is None else with_loaded_weights(jax.device_get(state), loaded, opts)

  def eval_step(state: StyleGAN2State, frozen, batch) -> dict[str, jax.Array]:
    """Per example: discriminator logits on a held-out real image and on an EMA sample.

    A cheap realism signal that needs no pretrained Inception network (FID
    needs one and tens of thousands of samples). `real_probability` and
    `fake_probability` are σ(logit); a discriminator that separates them
    perfectly (gap → 1) or a collapse of both shows up here. The latents are
    fixed (seed 0), so evaluations along a run compare the same samples.
    """
    real = batch["target"]
    z = jax.random.normal(bit_generator_key(jax.random.key(0)), (real.shape[0], style_dim))
    fake = generate(generator, state, z)
    logits = discriminator.apply({"params": state.params["discriminator"]}, jnp.concatenate([real, fake]))
    real_logits, fake_logits = jnp.split(logits, 2)
    return dict(real_logit=real_logits, fake_logit=fake_logits, real_probability=jax.nn.sigmoid(real_logits),
                fake_probability=jax.nn.sigmoid(fake_logits))

  def hallucinate(state: StyleGAN2State, frozen, batch) -> dict[str, jax.Array]:
    """EMA samples: three fixed latents per row (ψ = 1) and the first again at ψ = 0.7, next to a real image."""
    real = batch["target"]
    keys = jax.random.split(bit_generator_key(jax.random.key(1)), 3)
    columns = {"real": real}
    for index, key in enumerate(keys):
      columns[f"sample_{index}"] = generate(generator, state, jax.random.normal(key, (real.shape[0], style_dim)))
    z = jax.random.normal(keys[0], (real.shape[0], style_dim))
    columns["sample_0_truncated"] = generate(generator, state, z, truncation=0.7)
    return columns

  steps = {name: train_step_function(generator, discriminator, opts, config, name)
           for name in step_variants(config)}
  return Method(batch_spec=spec, init=init, load_pretrained=load_pretrained, steps=steps,
                schedule=lambda step: step_variant(config, step), eval_step=eval_step, hallucinate=hallucinate)
