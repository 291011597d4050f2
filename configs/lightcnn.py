"""LightCNN-29 v2 (Wu et al. 2018) trained in-project: the identity network of PCFH's L_ID (paper 001, Eq. 3).

Variants (one grammar, hallujax.config_base.parse_variant):

    configs/lightcnn.py          the public network's size: 128² grey faces, LightCNN-29 v2 widths,
                                 the released train.py's recipe (SGD 0.01, ×0.457 every 10 of 80 epochs)
    configs/lightcnn.py:smoke    LightCNN-29 v2 at 32² (configs/pcfh.py:smoke's model.identity_size),
                                 minutes on a laptop CPU
    configs/lightcnn.py:tiny     a narrow LightCNN (not loadable by PCFH) at 32², 8 identities: seconds (tests)

and, after any of them, ``spectra=nir_vis``: NIR and visible images of the same identities (the
face world's nir_unaligned pairs, NIR as one grey channel), one label set, as PCFH's recognizer is
"the baseline recognizer" of a NIR-VIS table (paper 001 §4.2); e.g. ``configs/lightcnn.py:smoke,spectra=nir_vis``.
The default is visible only, as the public network.

Then, for PCFH: ``--config.weights.lightcnn=RUN_DIR`` (hallujax/methods/lightcnn.py: read_run).
"""

import ml_collections

from hallujax.config_base import apply_variant_options, base_config, parse_variant

VARIANTS = ("", "smoke", "tiny")
SPECTRA = ("visible", "nir_vis")


def get_config(argument: str = "") -> ml_collections.ConfigDict:
  variant, options = parse_variant(argument, VARIANTS, "configs/lightcnn.py")
  spectra = options.pop("spectra", "visible")
  if spectra not in SPECTRA:
    raise ValueError(f"configs/lightcnn.py: spectra={spectra!r} is not known; known: {', '.join(SPECTRA)}.")
  c = base_config()
  c.method = "lightcnn"
  # The face world's visible faces at 128² ("input" unused: same_view at the target's size costs nothing).
  # world_seed=1: people PCFH (world 0) never sees, as the public network's MS-Celeb-1M people are not
  # CASIA NIR-VIS 2.0's; identities are shared across splits, so validation holds unseen images of the
  # training identities (held-out identification). Poses: configs/pcfh.py's CASIA-like ranges.
  c.data.update(source="faceworld", pairing="same_view", input_size=128, input_channels=3, target_size=128,
                num_identities=1000, train_size=100_000, eval_size=512, world_seed=1,
                identity_split="shared", max_yaw=30.0, max_pitch=15.0, max_roll=10.0)
  # LightCNN_29Layers_v2: conv1 48, stage outputs 96, 192, 128, 128; 1, 2, 3, 4 residual blocks; fc 256.
  c.model = ml_collections.ConfigDict(dict(widths=(48, 96, 192, 128, 128), blocks=(1, 2, 3, 4), features=256))
  # The released train.py: batch 128, 80 epochs, SGD lr 0.01, momentum 0.9, weight decay 1e-4, lr × 0.457305
  # every 10 epochs. 100k examples / 128 = 781 steps an epoch: 62,480 steps, a boundary every 7,810.
  epoch = 100_000 // 128
  c.train.update(batch_size=128, steps=80 * epoch, log_every=100, eval_every=5 * epoch, eval_batches=4,
                 image_every=10 * epoch, checkpoint_every=5 * epoch)
  c.optim = ml_collections.ConfigDict(dict(lightcnn=dict(
      name="sgd", learning_rate=0.01, momentum=0.9, weight_decay=1e-4,
      boundaries=tuple(10 * k * epoch for k in range(1, 8)),
      rates=tuple(0.01 * 0.457305051927326 ** k for k in range(1, 8)))))

  if variant == "smoke":
    # PCFH's smoke runs feed LightCNN 32² faces (configs/pcfh.py:smoke, model.identity_size=32): the v2
    # network at that size (fc sees 2×2×128), 40 identities.
    # Adam 1e-4 here (our choice for a few-hundred-step CPU run), measured over 150 steps of this variant
    # (held-out class accuracy, chance 0.025): train.py's SGD 0.01 0.074 (loss 3.69 -> 3.65), Adam 1e-4
    # 0.164, Adam 1e-3 diverged (loss 1.9e9).
    c.data.update(input_size=32, target_size=32, num_identities=40, train_size=8192, eval_size=256)
    c.train.update(batch_size=16, steps=400, log_every=50, eval_every=200, eval_batches=16,
                   image_every=400, checkpoint_every=200)
    c.optim.lightcnn = dict(name="adam", learning_rate=1e-4)
  elif variant == "tiny":
    # Seconds on a CPU: a narrow network with one residual block a stage, 8 identities at 32².
    c.data.update(input_size=32, target_size=32, num_identities=8, train_size=2048, eval_size=64)
    c.model.update(widths=(8, 16, 32, 16, 16), blocks=(1, 1, 1, 1), features=64)
    c.train.update(batch_size=16, steps=100, log_every=20, eval_every=100, eval_batches=4,
                   image_every=100, checkpoint_every=100)
    c.optim.lightcnn = dict(name="adam", learning_rate=2e-3)
  if spectra == "nir_vis":
    c.data.update(pairing="nir_unaligned", input_channels=1, input_size=c.data.target_size)
  return apply_variant_options(c, options)
