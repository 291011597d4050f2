"""StyleGAN2 config-f (Karras et al. 2020), unconditional, 256² faces by default.

Variants: "" (config-f at 256²), "512", "1024" (config-f at those sizes),
"smoke" (a 32² network with a reduced channel table; minutes on a laptop CPU).
"""

import ml_collections

from hallujax.config_base import apply_variant_options, base_config, parse_variant


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  name, options = parse_variant(variant, ("", "512", "1024", "smoke"), "configs/stylegan2.py")
  c = base_config()
  c.method = "stylegan2"
  # Unconditional: the "target" images are the real images; "input" is unused (same size, no resize work).
  c.data.update(source="faceworld", pairing="same_view", input_size=256, target_size=256)
  c.model = ml_collections.ConfigDict(dict(
      resolution=256,
      style_dim=512,              # §2: 512-D z and w
      mapping_layers=8,           # StyleGAN §2: 8-layer MLP mapping, lr multiplier 0.01 (§C)
      mapping_lr_multiplier=0.01,
      channel_multiplier=2,       # config-f: "large networks", 2× the channels above 32²
      channel_max=512,
      channel_base=16384,         # channels(res) = min(channel_max, channel_base·multiplier / res)
      stddev_group=4,             # minibatch standard deviation group (ProGAN §3)
  ))
  c.loss = ml_collections.ConfigDict(dict(
      r1_gamma=10.0,              # R1 weight γ (config-f FFHQ: γ = 10)
      r1_every=16,                # §B "lazy regularization": R1 once every 16 minibatches
      path_length_weight=2.0,     # §3.2: w_pl = 2 (as rosinality's path_regularize)
      path_length_every=4,        # path length regularization every 4 minibatches
      path_length_decay=0.01,     # running mean a of ‖J_w^T y‖ (§3.2, exponential moving average)
      path_length_batch_shrink=2, # path length on batch/2 samples (official implementation)
      style_mixing=0.9,           # mixing regularization probability (StyleGAN §3.1)
  ))
  # Adam β1 = 0, β2 = 0.99, lr 0.002 (config-f); batch 32; generator EMA with a 10k-image half-life.
  c.train.update(batch_size=32, steps=800_000, log_every=100, eval_every=5_000, eval_batches=4,
                 image_every=5_000, checkpoint_every=5_000)
  # The lazy-regularization correction (lr·c, β^c, §B) is applied by the method, not written here.
  c.optim = ml_collections.ConfigDict(dict(
      generator=dict(name="adam", learning_rate=0.002, b1=0.0, b2=0.99, eps=1e-8),
      discriminator=dict(name="adam", learning_rate=0.002, b1=0.0, b2=0.99, eps=1e-8)))
  c.train.ema_half_life_images = 10_000
  c.train.x_flip = True   # real images mirrored with p = 1/2, as the official FFHQ runs (--mirror=1)
  c.weights.stylegan2 = ""  # rosinality .pt / stylegan2-ada state dict to start from (empty: random init)

  if name in ("512", "1024"):
    size = int(name)
    c.model.resolution = size
    c.data.update(input_size=size, target_size=size)
  elif name == "smoke":
    c.model.update(resolution=32, style_dim=64, channel_max=64, channel_base=512, channel_multiplier=1)
    c.data.update(input_size=32, target_size=32, num_identities=64, train_size=4096, eval_size=64)
    c.train.update(batch_size=8, steps=300, log_every=25, eval_every=150, eval_batches=2,
                   image_every=150, checkpoint_every=150)
    c.train.ema_half_life_images = 500
  return apply_variant_options(c, options)
