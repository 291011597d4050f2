"""ArcFace recognizer (paper 003 §4.1): ResNet-34, 512-D embeddings, s=64, m=0.5, on any identity source.

Variants: "" (the paper's recipe on the face world), "smoke" (a tiny ResNet, minutes on a laptop CPU),
"recognizer" (the independent recognizer of ``python -m hallujax.experiments``' identity columns: a
small ResNet on 32² face-world faces, trained once and never by the methods it scores).
Train on real identities with e.g. --config.data.source=celeb_a --config.data.num_identities=10177.
"""

import ml_collections

from hallujax.config_base import apply_variant_options, base_config, parse_variant


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  name, options = parse_variant(variant, ("", "smoke", "recognizer"), "configs/arcface.py")
  c = base_config()
  c.method = "arcface"
  # The recognizer reads "target" (112² aligned faces, as FH-GAN's HR images) and "identity".
  c.data.update(source="faceworld", pairing="same_view", input_size=28, target_size=112,
                num_identities=1000)
  # §4.1: "we employed ResNet34 ... and set the embedding features to 512".
  c.model = ml_collections.ConfigDict(dict(
      stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512), embedding_dim=512))
  # §4.1: "We follow [22] to set the feature scale s to 64 and choose the angular margin m of ArcFace at 0.5".
  c.loss = ml_collections.ConfigDict(dict(scale=64.0, margin=0.5))
  # §4.1: batch 256, lr 0.01 divided by 10 after epochs 15 and 18 of 20; SGD (momentum 0.9 and weight
  # decay 5e-4 are ArcFace's own settings, which the paper follows).
  # 20 epochs of the face world's 100k training examples at batch 256 ≈ 7.8k steps.
  c.train.update(batch_size=256, steps=7_800, log_every=100, eval_every=1_000, image_every=2_000,
                 checkpoint_every=1_000)
  c.optim = ml_collections.ConfigDict(dict(recognizer=dict(
      name="sgd", learning_rate=0.01, momentum=0.9, weight_decay=5e-4,
      boundaries=(5_850, 7_020), rates=(1e-3, 1e-4))))   # epochs 15 and 18 of 20

  if name == "smoke":
    c.data.update(input_size=8, target_size=32, num_identities=16, train_size=2048, eval_size=64)
    c.model.update(stage_sizes=(1, 1, 1, 1), widths=(8, 16, 32, 64), embedding_dim=64)
    c.train.update(batch_size=16, steps=200, log_every=25, eval_every=100, eval_batches=4,
                   image_every=100, checkpoint_every=100)
    c.optim.recognizer.boundaries = (150, 180)
  if name == "recognizer":
    # The face world's identities at 32² (the tables' outputs are resized to it; identity survives 32²),
    # every pose (the tables' outputs are frontal or near frontal; the galleries are too).
    # Sized to train in minutes on a 2-core CPU: the paper's schedule shape (÷10 at 75% and 90%).
    c.data.update(input_size=8, target_size=32, num_identities=200, train_size=48_000, eval_size=512)
    c.model.update(stage_sizes=(1, 1, 1, 1), widths=(16, 32, 64, 128), embedding_dim=128)
    c.train.update(batch_size=32, steps=1_500, log_every=100, eval_every=500, eval_batches=16,
                   image_every=1_500, checkpoint_every=500)
    c.optim.recognizer.boundaries = (1_125, 1_350)
  return apply_variant_options(c, options)
