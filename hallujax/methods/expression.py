"""Facial expression classifier (paper 002 §VI-B, Table VII), trained in-project on frontal faces.

VividGAN's Table VII scores hallucinated faces by "a state-of-the-art expression
classification model, VGG-VD-16 [75]" trained on frontal HR faces of MMI's
seven basic expressions. No such weights can be downloaded here, so this method
trains one: a small VGG-style network (pairs of 3×3 convolutions, each pair
halving the resolution, two dense layers on the flattened map) on the face
world's frontal faces and their expression labels (``"expression"``, an index
into ``hallujax.data.faceworld.EXPRESSIONS``: neutral, smile, surprise, anger,
disgust, fear, sadness — the paper's seven with "happy" as smile).

The batch's "target" images are the faces (configs/expression.py renders them
frontal: max_yaw = max_pitch = max_roll = 0) and "expression" their labels.
``eval_step`` gives the held-out accuracy per example; ``classify_function``
is what ``python -m hallujax.tools.vividgan_expression`` applies to VividGAN's
outputs, the ground truth and bicubic-of-LR (Table VII's rows).
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hallujax import optim
from hallujax.data.faceworld import EXPRESSIONS
from hallujax.methods import MakeContext, Method
from hallujax.methods.vividgan import initialization_random_bits   # init compiles faster on XLA:CPU

NUM_EXPRESSIONS = len(EXPRESSIONS)


class ExpressionClassifier(nn.Module):
  """VGG-style (cf. VGG-VD-16 [75]): per width, two 3×3 convs (the second with stride 2), ReLU; then
  the flattened last map, a hidden dense layer and NUM_EXPRESSIONS logits (float32).

  Flattening, not global average pooling: on the same 2048 faces at 32² (Adam 1e-3, batch 32), pooled
  features sat at the majority class (32% held-out) until step ~400 and reached 56% at 800; flattened,
  49% at 300 and 59% at 500."""
  widths: tuple[int, ...] = (16, 32, 64)
  hidden: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images.astype(self.dtype)
    for width in self.widths:
      x = nn.relu(nn.Conv(width, (3, 3), dtype=self.dtype)(x))
      x = nn.relu(nn.Conv(width, (3, 3), strides=(2, 2), dtype=self.dtype)(x))
    x = x.reshape(x.shape[0], -1)   # VGG's dense layers read the flattened map: where the mouth is matters
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
    return nn.Dense(NUM_EXPRESSIONS, dtype=jnp.float32)(x).astype(jnp.float32)


@flax.struct.dataclass
class ExpressionState:
  step: jax.Array
  params: dict        # classifier
  opt_state: dict     # classifier


def network(config) -> ExpressionClassifier:
  return ExpressionClassifier(tuple(config.model.widths), int(config.model.hidden),
                              jnp.dtype(config.train.compute_dtype))


def image_size(config) -> int:
  """The face size the classifier reads (config.data.target_size); other sizes are resized to it."""
  return int(config.data.target_size)


def classify_function(config):
  """`classify(state, images) -> (B, NUM_EXPRESSIONS) logits` for images in [-1, 1] of any square size
  (resized bilinearly to the classifier's size when they differ)."""
  classifier, size = network(config), image_size(config)

  def classify(state: ExpressionState, images: jax.Array) -> jax.Array:
    if images.shape[1:3] != (size, size):
      images = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "bilinear")
    return classifier.apply({"params": state.params["classifier"]}, images)

  return classify


def make(config, context: MakeContext = MakeContext()) -> Method:
  """The classifier built once; softmax cross-entropy on the seven expressions, one optimizer section."""
  classifier, size = network(config), image_size(config)
  optimizers = optim.make_all(config.optim, ("classifier",))
  classify = classify_function(config)
  spec = {"target": jax.ShapeDtypeStruct((size, size, 3), jnp.float32),
          "expression": jax.ShapeDtypeStruct((), jnp.int32)}

  def init(rng) -> ExpressionState:
    with initialization_random_bits():
      params = dict(classifier=classifier.init(rng, jnp.zeros((1, size, size, 3)))["params"])
    return ExpressionState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=dict(classifier=optimizers["classifier"].init(params["classifier"])))

  def losses(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

  def train_step(state: ExpressionState, frozen, batch, rng):
    del frozen, rng   # no dropout, no augmentation
    def loss_fn(params):
      logits = classifier.apply({"params": params}, batch["target"])
      return jnp.mean(losses(logits, batch["expression"])), logits
    (loss, logits), gradients = jax.value_and_grad(loss_fn, has_aux=True)(state.params["classifier"])
    params, opt_state = optim.apply_update(optimizers["classifier"], state.params["classifier"],
                                           state.opt_state["classifier"], gradients)
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == batch["expression"]).astype(jnp.float32))
    return (ExpressionState(step=state.step + 1, params=dict(classifier=params), opt_state=dict(classifier=opt_state)),
            {"loss_expression": loss, "train_accuracy": accuracy})

  def eval_step(state: ExpressionState, frozen, batch) -> dict[str, jax.Array]:
    """Per held-out face: whether the classifier names its expression, and the cross-entropy."""
    del frozen
    logits = classify(state, batch["target"])
    return {"expression_accuracy": (jnp.argmax(logits, axis=-1) == batch["expression"]).astype(jnp.float32),
            "loss_expression": losses(logits, batch["expression"])}

  def hallucinate(state: ExpressionState, frozen, batch) -> dict[str, jax.Array]:
    """A classifier makes no images: the grid shows the faces it reads (a data check)."""
    del state, frozen
    return {"target": batch["target"]}

  return Method(batch_spec=spec, init=init, steps={"train": train_step}, schedule=lambda step: "train",
                eval_step=eval_step, hallucinate=hallucinate)
