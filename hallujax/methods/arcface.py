"""ArcFace (Deng et al.; the recognizer of FH-GAN, paper 003 §3.4 and §4.1), trained in-project.

Trains ``ResNetFace`` with the additive angular margin loss (paper 003,
Eq. 7) on the identity labels of any source, so every method can have an
identity network without downloading one. The batch's "target" images are
the faces (the pipeline's target size: 112 as in the paper) and "identity"
their labels; ``config.data.num_identities`` sets the number of classes.

Optimizer, paper 003 §4.1: SGD, momentum 0.9, weight decay 5e-4, "learning
rate is started from 0.01 and divided by 10 after 15, 18 epochs ... finished
at 20 epoch", i.e. at 75% and 90% of the run (``config.optim.recognizer.boundaries``).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import optax

from hallujax import optim
from hallujax.methods import MakeContext, Method

from hallujax.models.recognition import MarginHead, ResNetFace, additive_angular_margin_from_cosines


@flax.struct.dataclass
class ArcFaceState:
  step: jax.Array
  params: dict        # recognizer, margin_head
  batch_stats: dict   # recognizer BatchNorm statistics
  opt_state: optax.OptState


def networks(config) -> tuple[ResNetFace, MarginHead]:
  m = config.model
  recognizer = ResNetFace(stage_sizes=tuple(m.stage_sizes), widths=tuple(m.widths),
                          embedding_dim=m.embedding_dim, dtype=jnp.dtype(config.train.compute_dtype))
  return recognizer, MarginHead(num_classes=config.data.num_identities)


def batch_spec(config) -> dict[str, jax.ShapeDtypeStruct]:
  size = config.data.target_size
  return {"target": jax.ShapeDtypeStruct((size, size, 3), jnp.float32),
          "identity": jax.ShapeDtypeStruct((), jnp.int32)}


def embed_function(config):
  """`embed(state, images) -> (B, embedding_dim)` for images in [-1, 1], BatchNorm in inference mode."""
  recognizer, _ = networks(config)

  def embed(state: ArcFaceState, images: jax.Array) -> jax.Array:
    return recognizer.apply({"params": state.params["recognizer"],
                             "batch_stats": state.batch_stats["recognizer"]}, images, train=False)

  return embed


def make(config, context: MakeContext = MakeContext()) -> Method:
  """ArcFace built once (paper 003 §4.1): SGD, lr ÷10 at the config's boundaries (config.optim.recognizer)."""
  recognizer, head = networks(config)
  optimizer = optim.make(config.optim.recognizer, "config.optim.recognizer")
  spec = batch_spec(config)
  scale, margin = config.loss.scale, config.loss.margin
  embed = embed_function(config)

  def init(rng) -> ArcFaceState:
    recognizer_rng, head_rng = jax.random.split(rng)
    variables = recognizer.init(recognizer_rng, jnp.zeros((1, *spec["target"].shape)), train=False)
    head_params = head.init(head_rng, jnp.zeros((1, config.model.embedding_dim)))["params"]
    params = dict(recognizer=variables["params"], margin_head=head_params)
    return ArcFaceState(step=jnp.zeros((), jnp.int32), params=params,
                        batch_stats=dict(recognizer=variables["batch_stats"]), opt_state=optimizer.init(params))

  def margin_loss(params, batch_stats, batch, train: bool):
    """Per-example ArcFace cross-entropy (Eq. 7), with cosines and new BatchNorm statistics."""
    variables = {"params": params["recognizer"], "batch_stats": batch_stats["recognizer"]}
    if train:
      embeddings, updates = recognizer.apply(variables, batch["target"], train=True, mutable=["batch_stats"])
      batch_stats = dict(recognizer=updates["batch_stats"])
    else:
      embeddings = recognizer.apply(variables, batch["target"], train=False)
    cosines = head.apply({"params": params["margin_head"]}, embeddings)
    labels = batch["identity"]
    logits = additive_angular_margin_from_cosines(cosines, labels, scale, margin)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels), (cosines, batch_stats)

  def train_step(state: ArcFaceState, frozen, batch, rng):
    del frozen, rng  # no dropout in the paper's ResNet-34
    def loss_fn(params):
      losses, aux = margin_loss(params, state.batch_stats, batch, train=True)
      return jnp.mean(losses), aux
    (loss, (cosines, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = optim.apply_update(optimizer, state.params, state.opt_state, grads)
    accuracy = jnp.mean((jnp.argmax(cosines, axis=-1) == batch["identity"]).astype(jnp.float32))
    state = ArcFaceState(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return state, {"loss_arcface": loss, "train_accuracy": accuracy}

  def eval_step(state: ArcFaceState, frozen, batch) -> dict[str, jax.Array]:
    """Per held-out example: nearest-class-centre accuracy, ArcFace loss, and the cosine to its batch
    neighbour with that pair's same-identity flag (pairs feed ``metrics.identity`` verification)."""
    losses, (cosines, _) = margin_loss(state.params, state.batch_stats, batch, train=False)
    embeddings = embed(state, batch["target"])
    neighbour = jnp.roll(embeddings, 1, axis=0)
    pair_cosine = jnp.sum(embeddings * neighbour, axis=-1) / (
        jnp.linalg.norm(embeddings, axis=-1) * jnp.linalg.norm(neighbour, axis=-1) + 1e-12)
    return {
        "class_accuracy": (jnp.argmax(cosines, axis=-1) == batch["identity"]).astype(jnp.float32),
        "loss_arcface": losses,
        "pair_cosine": pair_cosine,
        "pair_same_identity": (batch["identity"] == jnp.roll(batch["identity"], 1)).astype(jnp.float32),
    }

  def hallucinate(state: ArcFaceState, frozen, batch) -> dict[str, jax.Array]:
    """A recognizer makes no images: the grid shows the faces it is trained on (a data check)."""
    return {"target": batch["target"]}

  return Method(batch_spec=spec, init=init, steps={"train": train_step}, schedule=lambda step: "train",
                eval_step=eval_step, hallucinate=hallucinate)
