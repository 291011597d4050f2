"""Expression classifier for VividGAN's Table VII (paper 002 §VI-B), trained on face-world frontal faces.

The paper classifies the seven basic expressions of hallucinated 128² faces with VGG-VD-16 [75],
under a subject-independent protocol (folds split by identity). Here: a small VGG-style network
(hallujax/methods/expression.py) trained on frontal faces of **another world** (world_seed=1)
than VividGAN's (world_seed=0), so no face VividGAN is scored on belongs to a person the
classifier saw; its own held-out accuracy is on unseen identities of its world
(identity_split="disjoint": validation and test identities are not in train).

Variants, sized to the VividGAN variant whose outputs it scores (configs/vividgan.py):
  ""       128² (the paper run's outputs)
  "smoke"  64²  (vividgan.py:smoke)
  "tiny"   32²  (vividgan.py:tiny, the results tables')

  python -m hallujax.train --config configs/expression.py:tiny --workdir /tmp/expression_tiny
  python -m hallujax.tools.vividgan_expression --vividgan_config configs/vividgan.py:tiny \\
      --vividgan_workdir /tmp/vividgan_tiny --expression_config configs/expression.py:tiny \\
      --expression_workdir /tmp/expression_tiny
"""

import ml_collections

from hallujax.config_base import apply_variant_options, base_config, parse_variant


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  name, options = parse_variant(variant, ("", "smoke", "tiny"), "configs/expression.py")
  c = base_config()
  # The registered name once hallujax/methods/__init__.py lists it; the module path works until then.
  c.method = "expression"
  # Frontal faces (the classifier scores frontal outputs and frontal ground truth), every expression,
  # lighting, background and identity the face world draws; the label is "expression".
  c.data.update(source="faceworld", pairing="same_view", input_size=128, target_size=128,
                num_identities=500, world_seed=1, identity_split="disjoint",
                max_yaw=0.0, max_pitch=0.0, max_roll=0.0, train_size=100_000, eval_size=512)
  # VGG-VD-16's shape (3×3 convolution pairs, widths doubling) at a size a CPU trains in minutes.
  c.model = ml_collections.ConfigDict(dict(widths=(32, 64, 128, 256), hidden=256))
  c.optim = ml_collections.ConfigDict(dict(classifier=dict(name="adam", learning_rate=1e-3,
                                                           boundaries=8_000, rates=1e-4)))
  c.train.update(batch_size=64, steps=10_000, log_every=100, eval_every=1_000, eval_batches=8,
                 image_every=5_000, checkpoint_every=1_000)

  if name == "smoke":
    c.data.update(input_size=64, target_size=64, num_identities=200, train_size=16_384, eval_size=256)
    c.model.update(widths=(16, 32, 64, 64), hidden=64)
    c.train.update(batch_size=32, steps=1_500, log_every=100, eval_every=500, eval_batches=8,
                   image_every=1_500, checkpoint_every=500)
    c.optim.classifier.boundaries = 1_200
  if name == "tiny":
    c.data.update(input_size=32, target_size=32, num_identities=200, train_size=16_384, eval_size=256)
    c.model.update(widths=(16, 32, 64), hidden=64)
    c.train.update(batch_size=32, steps=1_500, log_every=100, eval_every=500, eval_batches=8,
                   image_every=1_500, checkpoint_every=500)
    c.optim.classifier.boundaries = 1_200
  return apply_variant_options(c, options)
