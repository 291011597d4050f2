"""LightCNN-29 v2 (Wu et al. 2018) trained in-project: PCFH's identity network (paper 001, Eq. 3).

PCFH's identity loss L_ID compares "the output vector of the second last
fully connected layer" of LightCNN-29 (paper 001 §3); the public network
(``LightCNN_29Layers_V2_checkpoint.pth.tar``) cannot be downloaded here, so
this method trains the same network, ``hallujax.models.recognition.LightCNN29``,
on any identity-labelled source. A run's directory is then the network PCFH
loads: ``--config.weights.lightcnn=RUN_DIR`` (:func:`read_run`), and
``python -m hallujax.evaluate --lightcnn_weights=RUN_DIR`` scores with it.

Training, as LightCNN's own (Wu et al. 2018; the released train.py): softmax
cross-entropy over the training identities on ``fc2``'s logits, which sit
after dropout 0.5 on the 256-D ``fc`` feature (the v2 network's
``fc -> dropout -> fc2``; the feature PCFH uses is ``fc``'s output, before
dropout); random horizontal flips (train.py's RandomHorizontalFlip; its
RandomCrop(128) of 144² aligned faces is left out: the face world's frames are
what PCFH feeds the network, uncropped). The optimizer section
(``config.optim.lightcnn``) follows train.py: SGD, momentum 0.9, weight decay
1e-4, lr 0.01 × 0.457305 every 10 epochs; train.py's per-parameter multipliers
(fc2 ×10, biases ×2 without decay) are left out: one section per network.
(configs/lightcnn.py's smoke and tiny variants use Adam; the config says why.)
Kernels start from PyTorch's default initialisation, the one train.py trained
from (``TORCH_DEFAULT_INIT``; biases start at 0, PyTorch draws them): with
Flax's default (LeCun normal, √3× wider) the v2 network's ten residual
additions and four max+average pools blow the 32² features up to a standard
deviation of ~320 and the first 50 steps' mean softmax loss to ~1.2e4
(measured; 3.69 = ln 40 from PyTorch's initialisation).

Spectra. Every image is grey (the network converts RGB with ITU-R 601
weights). The batch's "target", the visible face, is always trained on.
When the pairing's input is another spectrum (``data.pairing`` nir_* or
thermal_*, ``input_channels=1`` at the target's size; face world only) the
"input" images train too, with the same identity labels: a recognizer that
sees both spectra. configs/lightcnn.py's default is visible only, as the
public network (trained on visible web faces), so that PCFH's Table 1 row
"LightCNN on raw NIR" keeps its meaning: a visible recognizer facing NIR.

Evaluation (per held-out example, as configs/arcface.py's method): the class
accuracy of "target" (identification of unseen images of training identities
under ``identity_split="shared"``), the softmax loss, and the cosine between
an example's feature and its batch neighbour's with their same-identity flag
(verification pairs); when the input trains, ``class_accuracy_input`` and the
cross-spectral in-batch Rank-1 (``cross_spectral_rank1``: NIR probes against
the batch's visible images, next to its chance level
``cross_spectral_rank1_chance``).
"""

from __future__ import annotations

import os
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from hallujax import optim
from hallujax.data.faceworld import LUMINANCE, input_modality
from hallujax.methods import MakeContext, Method
from hallujax.models.recognition import TORCH_DEFAULT_INIT, LightCNN29
from hallujax.nn.initialization import fast_key

NETWORK = "lightcnn"


@flax.struct.dataclass
class LightCNNState:
  step: jax.Array
  params: dict          # {"lightcnn": LightCNN29 parameters, fc2 (the classifier) included}
  opt_state: optax.OptState


def network(config, classify: bool = True) -> LightCNN29:
  """The configured LightCNN29: with fc2 over ``data.num_identities`` classes, or features only (PCFH's)."""
  m = config.model
  return LightCNN29(num_classes=int(config.data.num_identities) if classify else None,
                    dtype=jnp.dtype(config.train.compute_dtype), widths=tuple(m.widths),
                    blocks=tuple(m.blocks), features=int(m.features), kernel_init=TORCH_DEFAULT_INIT)


def trains_on_input(config) -> bool:
  """True when "input" is another spectrum of the same identity (NIR or thermal) and trains too."""
  d = config.data
  if d.source != "faceworld" or input_modality(d.pairing) == "visible":
    return False
  if d.input_channels != 1 or d.input_size != d.target_size:
    raise ValueError(f"config.data.pairing={d.pairing!r} trains LightCNN on the input spectrum too: it needs "
                     f"input_channels=1 and input_size=target_size (got {d.input_channels}, {d.input_size} "
                     f"and {d.target_size}).")
  return True


def batch_spec(config) -> dict[str, jax.ShapeDtypeStruct]:
  size = config.data.target_size
  spec = {"target": jax.ShapeDtypeStruct((size, size, 3), jnp.float32),
          "identity": jax.ShapeDtypeStruct((), jnp.int32)}
  if trains_on_input(config):
    spec["input"] = jax.ShapeDtypeStruct((size, size, 1), jnp.float32)
  return spec


def grey(images: jax.Array) -> jax.Array:
  """(B, H, W, 3 | 1) in [-1, 1] -> (B, H, W, 1) with the network's own ITU-R 601 weights."""
  if images.shape[-1] == 1:
    return images
  return (images @ jnp.asarray(LUMINANCE, images.dtype))[..., None]


def cross_cosines(probes: jax.Array, gallery: jax.Array) -> jax.Array:
  """(P, G) cosine similarities between two feature sets."""
  normalize = lambda x: x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)
  return normalize(probes) @ normalize(gallery).T


def features_only(params: dict) -> dict:
  """A trained LightCNN's parameters without the classifier fc2: what PCFH's frozen tree holds."""
  return {name: value for name, value in params.items() if name != "fc2"}


def embed_function(config):
  """`embed(state, images) -> (B, features)`: the fc features (dropout off) of images in [-1, 1]."""
  features = network(config, classify=False)

  def embed(state: LightCNNState, images: jax.Array) -> jax.Array:
    return features.apply({"params": features_only(state.params[NETWORK])}, images)

  return embed


def make(config, context: MakeContext = MakeContext()) -> Method:
  """LightCNN-29 v2 as an identity classifier, built once (config.optim.lightcnn)."""
  classifier = network(config)
  optimizer = optim.make(config.optim[NETWORK], f"config.optim.{NETWORK}")
  spec = batch_spec(config)
  with_input = "input" in spec

  def init(rng) -> LightCNNState:
    # An "rbg" key from rng's bits: XLA:CPU compiles threefry's draws slowly (fast_key says how slowly).
    params = {NETWORK: classifier.init(fast_key(rng), jnp.zeros((1, *spec["target"].shape)))["params"]}
    return LightCNNState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

  def training_images(batch) -> tuple[jax.Array, jax.Array]:
    """The grey images a step trains on and their identity labels (both spectra when the input trains)."""
    images, labels = grey(batch["target"]), batch["identity"]
    if with_input:
      images = jnp.concatenate([images, batch["input"]], axis=0)
      labels = jnp.concatenate([labels, labels], axis=0)
    return images, labels

  def train_step(state: LightCNNState, frozen, batch, rng):
    del frozen
    flip_rng, dropout_rng = jax.random.split(rng)
    images, labels = training_images(batch)
    flip = jax.random.bernoulli(flip_rng, 0.5, (images.shape[0], 1, 1, 1))
    images = jnp.where(flip, images[:, :, ::-1], images)   # RandomHorizontalFlip

    def loss_fn(params):
      _, logits = classifier.apply({"params": params[NETWORK]}, images, train=True,
                                   rngs={"dropout": dropout_rng})
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels)), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = optim.apply_update(optimizer, state.params, state.opt_state, grads)
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
    state = LightCNNState(step=state.step + 1, params=params, opt_state=opt_state)
    return state, {"loss_softmax": loss, "train_accuracy": accuracy}

  def eval_step(state: LightCNNState, frozen, batch) -> dict[str, jax.Array]:
    """Per held-out example: class accuracy and softmax loss, and the cosine to its batch neighbour with
    that pair's same-identity flag (verification pairs, as the ArcFace method's)."""
    del frozen
    labels = batch["identity"]
    features, logits = classifier.apply({"params": state.params[NETWORK]}, batch["target"])
    neighbour = jnp.roll(features, 1, axis=0)
    values = {
        "class_accuracy": (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32),
        "loss_softmax": optax.softmax_cross_entropy_with_integer_labels(logits, labels),
        "pair_cosine": jnp.sum(features * neighbour, axis=-1) / (
            jnp.linalg.norm(features, axis=-1) * jnp.linalg.norm(neighbour, axis=-1) + 1e-12),
        "pair_same_identity": (labels == jnp.roll(labels, 1)).astype(jnp.float32),
    }
    if with_input:
      input_features, input_logits = classifier.apply({"params": state.params[NETWORK]}, batch["input"])
      values["class_accuracy_input"] = (jnp.argmax(input_logits, axis=-1) == labels).astype(jnp.float32)
      # Across spectra, as PCFH's "LightCNN on raw NIR" row: each input (NIR) probe against the batch's
      # visible images as the gallery, hit when the nearest (cosine) has the probe's identity; chance is
      # the share of the gallery with the probe's identity.
      similarity = cross_cosines(input_features, features)
      values["cross_spectral_rank1"] = (labels[jnp.argmax(similarity, axis=1)] == labels).astype(jnp.float32)
      values["cross_spectral_rank1_chance"] = jnp.mean((labels[:, None] == labels[None, :]).astype(jnp.float32),
                                                       axis=1)
    return values

  def hallucinate(state: LightCNNState, frozen, batch) -> dict[str, jax.Array]:
    """A recognizer makes no images: the grid shows the grey faces it trains on (a data check)."""
    del state, frozen
    columns = {"target": jnp.repeat(grey(batch["target"]), 3, axis=-1)}
    if with_input:
      columns = {"input": jnp.repeat(batch["input"], 3, axis=-1), **columns}
    return columns

  return Method(batch_spec=spec, init=init, steps={"train": train_step}, schedule=lambda step: "train",
                eval_step=eval_step, hallucinate=hallucinate)


# ----------------------------------------------------------------------------- a run as a frozen network


def is_lightcnn_run(run_config) -> bool:
  """True when a run's config.json names this method (registered name or module path)."""
  from hallujax.methods import METHODS   # pylint: disable=import-outside-toplevel
  return METHODS.get(run_config.method, run_config.method) == __name__


def read_run(path: str, where: str, restore: Callable):
  """(run config, features-only parameters as numpy, description) of a configs/lightcnn.py run's latest step.

  `where` names the setting that gave `path` (e.g. "config.weights.lightcnn"), for one-line errors.
  `restore` is the run set-up's (`MakeContext.restore`), as for VPGAN's ``weights.arcface`` run directories.
  """
  from hallujax.run_files import read_run_config   # pylint: disable=import-outside-toplevel
  expected = (f"expected a run directory of `python -m hallujax.train --config configs/lightcnn.py "
              f"--workdir RUN_DIR` or a LightCNN_29Layers_V2 .pth.tar file")
  if not os.path.isdir(path):
    raise ValueError(f"{where}={path} is not a directory; {expected}.")
  if not os.path.isfile(os.path.join(path, "config.json")):
    raise ValueError(f"{where}={path} has no config.json (not a hallujax run); {expected}.")
  run_config = read_run_config(path)
  if not is_lightcnn_run(run_config):
    raise ValueError(f"{where}={path} is a {run_config.method!r} run; {expected}.")
  state, step = restore(run_config, path)
  params = jax.device_get(features_only(state.params[NETWORK]))
  size = run_config.data.target_size
  description = (f"LightCNN-29 from in-project run {path} at step {step} "
                 f"({step * run_config.train.batch_size} images seen, {size}² faces, "
                 f"{run_config.data.num_identities} identities of {run_config.data.source})")
  return run_config, params, description


def shape_of(leaf) -> tuple[int, ...] | str:
  """An array's (or a ShapeDtypeStruct's) shape; "missing" for None."""
  if leaf is None:
    return "missing"
  return tuple(leaf.shape) if hasattr(leaf, "shape") else tuple(np.shape(leaf))


def shape_mismatch(found: dict, expected: dict) -> str:
  """'' when two parameter trees have the same paths and shapes, else the first difference."""
  found_leaves = dict(jax.tree_util.tree_leaves_with_path(found))
  expected_leaves = dict(jax.tree_util.tree_leaves_with_path(expected))
  for path in sorted(set(found_leaves) | set(expected_leaves), key=jax.tree_util.keystr):
    a, b = found_leaves.get(path), expected_leaves.get(path)
    if a is None or b is None or shape_of(a) != shape_of(b):
      return f"{jax.tree_util.keystr(path)}: {shape_of(a)} in the run, {shape_of(b)} expected"
  return ""


def frozen_params(path: str, where: str, expected_params: dict, image_size: int, restore: Callable) -> dict:
  """Features-only parameters of run `path`, checked against the network a caller built at `image_size`²;
  `restore` is the caller's `MakeContext.restore`."""
  run_config, params, description = read_run(path, where, restore)
  difference = shape_mismatch(params, expected_params)
  if difference or run_config.data.target_size != image_size:
    m = run_config.model
    raise ValueError(
        f"{where}={path} is a LightCNN at {run_config.data.target_size}² with widths={tuple(m.widths)}, "
        f"blocks={tuple(m.blocks)}, features={m.features}; this config builds LightCNN-29 v2 at {image_size}² "
        f"with the public widths (48, 96, 192, 128, 128)" + (f" ({difference})" if difference else "")
        + ": train with configs/lightcnn.py (128²) or configs/lightcnn.py:smoke (32²) at that size.")
  logging.info("%s", description)
  return jax.tree.map(jnp.asarray, params)
