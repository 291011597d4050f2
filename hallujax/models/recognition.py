"""Face recognition networks and their margin heads.

* ``ResNetFace``: the ArcFace backbone (paper 003 uses ResNet-34, §4.1) built
  from insightface ``arcface_torch``'s "improved" residual unit (iResNet):
  BN-conv-BN-PReLU-conv-BN, and its BN-dropout-FC-BN embedding head, so
  ``hallujax.convert.arcface`` loads ``iresnet34`` / ``iresnet50`` checkpoints.
* ``additive_angular_margin_logits`` / ``MarginHead``: ArcFace's head
  (paper 003, Eq. 7).
* ``SphereFace`` and ``a_softmax_logits``: SphereFace-20 and the A-softmax
  identity loss of IPFH (paper 004, Eq. 14).
* ``LightCNN29``: LightCNN-29 v2 with max-feature-map; its second-to-last
  fully connected output is PCFH's identity feature (paper 001, §3).

Images are NHWC float32 in [-1, 1]. Feature maps are flattened channel-major
(as PyTorch's ``x.view(B, -1)`` on NCHW) before fully connected layers, so the
public checkpoints' FC weights load without a permutation.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hallujax.nn.repeat import sequential_blocks
from hallujax.nn.torch_layers import PReLU, batch_norm, conv_init, flatten_channel_major, torch_conv, torch_padding

Dtype = Any

# ---------------------------------------------------------------------------
# ArcFace backbone (iResNet)


class ImprovedBasicBlock(nn.Module):
  """arcface_torch ``IBasicBlock``: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN plus shortcut."""

  features: int
  strides: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(torch_conv, dtype=self.dtype)
    out = batch_norm(train, self.dtype, "bn1")(x)
    out = conv(self.features, 3, 1, 1, "conv1")(out)
    out = batch_norm(train, self.dtype, "bn2")(out)
    out = PReLU(name="prelu")(out)
    out = conv(self.features, 3, self.strides, 1, "conv2")(out)
    out = batch_norm(train, self.dtype, "bn3")(out)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = conv(self.features, 1, self.strides, 0, "downsample_conv")(x)
      shortcut = batch_norm(train, self.dtype, "downsample_bn")(shortcut)
    return out + shortcut


class ResNetFace(nn.Module):
  """ArcFace ResNet (iResNet) producing ``embedding_dim`` embeddings.

  Defaults are ResNet-34 (paper 003, §4.1: "we employed ResNet34 ... and set
  the embedding features to 512"); ``stage_sizes=(3, 4, 14, 3)`` is
  arcface_torch's ``iresnet50`` and ``(2, 2, 2, 2)`` its ``iresnet18``.
  Each stage starts with a stride-2 block, so the input side must be at least
  32 (112 is standard: the head then sees 7x7 maps). The FC layer's input size
  depends on the image size used at ``init``.

  ``__call__(images, train)`` -> (B, embedding_dim) float32. With
  ``train=True`` pass ``mutable=["batch_stats"]`` (and a "dropout" rng if
  ``dropout_rate > 0``).
  """

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  widths: Sequence[int] = (64, 128, 256, 512)
  embedding_dim: int = 512
  block: str = "basic"
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if self.block != "basic":
      raise ValueError(
          f"ResNetFace(block={self.block!r}) is not supported: arcface_torch's iResNets "
          "(iresnet18/34/50/100) all use the 'basic' improved residual unit.")
    if min(images.shape[1:3]) < 32:
      raise ValueError(f"ResNetFace needs images of at least 32x32 (4 stride-2 stages); got {images.shape}.")
    x = images.astype(self.dtype)
    x = nn.Conv(self.widths[0], (3, 3), padding=torch_padding(1), use_bias=False,
                kernel_init=conv_init, dtype=self.dtype, name="conv1")(x)
    x = batch_norm(train, self.dtype, "bn1")(x)
    x = PReLU(name="prelu")(x)
    for stage, (size, width) in enumerate(zip(self.stage_sizes, self.widths)):
      x = ImprovedBasicBlock(width, 2, self.dtype, name=f"layer{stage + 1}_0")(x, train)
      # The stage's other blocks have one shape: traced once (issue 30), parameters still layer{s}_{i}.
      x = sequential_blocks(self, functools.partial(ImprovedBasicBlock, width, 1, self.dtype),
                            [f"layer{stage + 1}_{index}" for index in range(1, size)], x, train)
    x = batch_norm(train, self.dtype, "bn2")(x)
    x = flatten_channel_major(x)
    if self.dropout_rate > 0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.embedding_dim, dtype=self.dtype, name="fc")(x)
    x = batch_norm(train, self.dtype, "features")(x)
    return x.astype(jnp.float32)


# ---------------------------------------------------------------------------
# ArcFace head (paper 003, Eq. 7)


def normalized_cosines(embeddings: jax.Array, class_weights: jax.Array) -> jax.Array:
  """cos θ_j between each embedding (B, D) and each class centre (D, N) -> (B, N)."""
  embeddings = embeddings.astype(jnp.float32)
  class_weights = class_weights.astype(jnp.float32)
  embeddings = embeddings / jnp.maximum(jnp.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
  class_weights = class_weights / jnp.maximum(jnp.linalg.norm(class_weights, axis=0, keepdims=True), 1e-12)
  return embeddings @ class_weights


def additive_angular_margin_from_cosines(cosines: jax.Array, labels: jax.Array, scale: float = 64.0,
                                         margin: float = 0.5) -> jax.Array:
  """ArcFace logits from cosines: s·cos(θ_y + m) for the true class, s·cos θ_j otherwise (paper 003, Eq. 7).

  Eq. 7 does not say what happens when θ_y + m > π (where cos(θ + m) stops
  decreasing); as in insightface arcface_torch we then use cos θ_y − m·sin(m)
  (its ``theta``/``sinmm`` branch), which keeps the target logit monotonic.
  cos(θ + m) is expanded as cos θ cos m − sin θ sin m, so no arccos is needed.
  """
  one_hot = jax.nn.one_hot(labels, cosines.shape[-1], dtype=cosines.dtype)
  target = jnp.sum(cosines * one_hot, axis=-1)
  # The floor keeps the gradient of sin θ finite at θ = 0 (an error of at most 3e-5·sin m there).
  sine = jnp.sqrt(jnp.clip(1.0 - target**2, 1e-9, 1.0))
  with_margin = target * math.cos(margin) - sine * math.sin(margin)
  with_margin = jnp.where(target > math.cos(math.pi - margin), with_margin,
                          target - math.sin(math.pi - margin) * margin)
  adjusted = cosines + one_hot * (with_margin - target)[:, None]
  return scale * adjusted


def additive_angular_margin_logits(embeddings: jax.Array, class_weights: jax.Array, labels: jax.Array,
                                   scale: float = 64.0, margin: float = 0.5) -> jax.Array:
  """ArcFace logits (paper 003, Eq. 7) for embeddings (B, D), class_weights (D, N), labels (B,).

  Softmax cross-entropy on these logits is l_ArcFace; paper 003 §4.1 sets s=64, m=0.5.
  """
  return additive_angular_margin_from_cosines(normalized_cosines(embeddings, class_weights), labels,
                                              scale, margin)


class MarginHead(nn.Module):
  """Holds the class centres ``class_weights`` (D, num_classes); returns cos θ (B, num_classes).

  Feed the cosines to ``additive_angular_margin_from_cosines`` for ArcFace
  logits, or read ``variables["params"]["class_weights"]`` for the other heads.
  """

  num_classes: int

  @nn.compact
  def __call__(self, embeddings: jax.Array) -> jax.Array:
    class_weights = self.param("class_weights", nn.initializers.normal(0.01),
                               (embeddings.shape[-1], self.num_classes), jnp.float32)
    return normalized_cosines(embeddings, class_weights)


# ---------------------------------------------------------------------------
# SphereFace (paper 004, Eq. 14)


SPHEREFACE_UNITS = {4: (0, 0, 0, 0), 10: (0, 1, 2, 0), 20: (1, 2, 4, 1), 36: (2, 4, 8, 2), 64: (3, 8, 16, 3)}


def sphereface_stages(x: jax.Array, depth: int, num_stages: int, dtype: Dtype) -> jax.Array:
  """SphereFace's first `num_stages` conv stages, called inside a compact module's ``__call__``.

  Each stage: a stride-2 3x3 conv + PReLU, then residual units of two 3x3
  conv + PReLU. The layers are created in the calling module under the
  ``sphere20a`` names (conv1_1, relu1_1, ...), so SphereFace and IPFH's
  texture features read the same parameters.
  """
  conv = lambda features, strides, name: nn.Conv(
      features, (3, 3), strides=(strides, strides), padding=torch_padding(1), dtype=dtype,
      kernel_init=nn.initializers.xavier_uniform(), name=name)
  widths = (64, 128, 256, 512)[:num_stages]
  for stage, (units, width) in enumerate(zip(SPHEREFACE_UNITS[depth], widths), 1):
    x = PReLU(name=f"relu{stage}_1")(conv(width, 2, f"conv{stage}_1")(x))
    for unit in range(units):
      first, second = 2 + 2 * unit, 3 + 2 * unit
      residual = PReLU(name=f"relu{stage}_{first}")(conv(width, 1, f"conv{stage}_{first}")(x))
      residual = PReLU(name=f"relu{stage}_{second}")(conv(width, 1, f"conv{stage}_{second}")(residual))
      x = x + residual
  return x


class SphereFace(nn.Module):
  """SphereFace-20 (Liu et al. 2017, ``sphere20a``): 4 stride-2 conv + PReLU stages with residual units.

  Stage widths 64, 128, 256, 512; residual units per stage (1, 2, 4, 1) for
  depth 20; a fully connected layer gives the ``embedding_dim`` feature. The
  standard input is 112x96. ``__call__(images, train)`` -> (B, embedding_dim).
  ``train`` is accepted for a uniform interface (the network has no
  BatchNorm or dropout).
  """

  depth: int = 20
  embedding_dim: int = 512
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    del train
    if self.depth not in SPHEREFACE_UNITS:
      raise ValueError(f"SphereFace(depth={self.depth}) is not defined; known depths: {sorted(SPHEREFACE_UNITS)}.")
    x = sphereface_stages(images.astype(self.dtype), self.depth, 4, self.dtype)
    x = nn.Dense(self.embedding_dim, dtype=self.dtype, name="fc5")(flatten_channel_major(x))
    return x.astype(jnp.float32)


def a_softmax_logits(embeddings: jax.Array, class_weights: jax.Array, labels: jax.Array,
                     margin: float = 1.5) -> jax.Array:
  """A-softmax logits (paper 004, Eq. 14): ‖x‖ψ(θ_c) for the true class c, ‖x‖cos θ_j otherwise.

  ψ(θ) = (−1)^k cos(mθ) − 2k for θ ∈ [kπ/m, (k+1)π/m], k ∈ [0, m−1]; paper
  004: "we set m = 1.5 here". Class weights are normalised, embeddings are
  not (their norm scales the logits, as in SphereFace). With a non-integer m
  the Chebyshev form of SphereFace's code does not apply, so θ comes from
  arccos of a clipped cosine; k = floor(mθ/π) is piecewise constant. The
  paper does not use SphereFace's λ-annealing, so neither do we.
  """
  embeddings = embeddings.astype(jnp.float32)
  norms = jnp.linalg.norm(embeddings, axis=-1)
  cosines = jnp.clip(normalized_cosines(embeddings, class_weights), -1.0 + 1e-6, 1.0 - 1e-6)
  one_hot = jax.nn.one_hot(labels, cosines.shape[-1], dtype=cosines.dtype)
  target_theta = jnp.arccos(jnp.sum(cosines * one_hot, axis=-1))
  k = jnp.floor(margin * target_theta / math.pi)
  psi = jnp.where(jnp.mod(k, 2) == 0, 1.0, -1.0) * jnp.cos(margin * target_theta) - 2.0 * k
  adjusted = jnp.where(one_hot > 0, psi[:, None], cosines)
  return norms[:, None] * adjusted


# ---------------------------------------------------------------------------
# LightCNN-29 v2 (paper 001)


class MaxFeatureMap(nn.Module):
  """``mfm``: a conv (or FC) with 2·features outputs, then the element-wise max of its two halves."""

  features: int
  kernel: int = 3
  padding: int = 1
  fully_connected: bool = False
  dtype: Dtype = jnp.float32
  kernel_init: Any = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.fully_connected:
      x = nn.Dense(2 * self.features, dtype=self.dtype, kernel_init=self.kernel_init, name="filter")(x)
    else:
      x = nn.Conv(2 * self.features, (self.kernel, self.kernel), padding=torch_padding(self.padding),
                  dtype=self.dtype, kernel_init=self.kernel_init, name="filter")(x)
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.maximum(first, second)


# torch.nn.Conv2d / Linear's default weight initialisation (kaiming_uniform_ with a=√5: U(±1/√fan_in)).
TORCH_DEFAULT_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def max_plus_average_pool(x: jax.Array) -> jax.Array:
  """LightCNN v2's ``max_pool2d(x, 2) + avg_pool2d(x, 2)``."""
  return nn.max_pool(x, (2, 2), strides=(2, 2)) + nn.avg_pool(x, (2, 2), strides=(2, 2))


class LightCNN29(nn.Module):
  """LightCNN-29 v2 (Wu et al. 2018, ``LightCNN_29Layers_v2``).

  Input: NHWC images in [-1, 1], RGB (converted to gray with ITU-R 601
  weights, as PIL's ``convert("L")``) or one channel; mapped to [0, 1] as the
  reference ``transforms.ToTensor()``. The standard size is 128x128 (the FC
  layer then sees 8x8x128).

  Returns the 256-D output of ``fc``, the second-to-last fully connected
  layer, which PCFH uses as the identity feature (paper 001: "We take the
  output vector of the second last fully connected layer as the identity
  feature"). With ``num_classes`` set it returns ``(features, logits)``, the
  logits from ``fc2`` after dropout 0.5 (active when ``train``; needs a
  "dropout" rng).

  ``widths`` (conv1's output, then each of the four stages' output; a stage's
  residual blocks keep the previous output's width), ``blocks`` (residual
  blocks per stage) and ``features`` (fc's size) default to the public v2
  network; smaller values make the test-sized networks of configs/lightcnn.py
  (same layer names, so the same code trains, restores and converts them).
  ``kernel_init`` initialises every conv and FC kernel (Flax's default unless
  given; hallujax.methods.lightcnn trains from PyTorch's default, TORCH_DEFAULT_INIT).
  """

  num_classes: int | None = None
  dtype: Dtype = jnp.float32
  widths: Sequence[int] = (48, 96, 192, 128, 128)
  blocks: Sequence[int] = (1, 2, 3, 4)
  features: int = 256
  kernel_init: Any = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    if images.shape[-1] == 3:
      images = images @ jnp.asarray([0.299, 0.587, 0.114], images.dtype)[:, None]
    elif images.shape[-1] != 1:
      raise ValueError(f"LightCNN29 takes 1- or 3-channel images; got shape {images.shape}.")
    if len(self.widths) != 5 or len(self.blocks) != 4:
      raise ValueError(f"LightCNN29 takes 5 widths (conv1, then 4 stages) and 4 block counts; got "
                       f"widths={tuple(self.widths)}, blocks={tuple(self.blocks)}.")
    x = ((images + 1.0) / 2.0).astype(self.dtype)
    mfm = lambda features, kernel, padding, name: MaxFeatureMap(features, kernel, padding, dtype=self.dtype,
                                                               kernel_init=self.kernel_init, name=name)
    x = max_plus_average_pool(mfm(self.widths[0], 5, 2, "conv1")(x))
    # v2: (blocks, width, out_width) = (1, 48, 96), (2, 96, 192), (3, 192, 128), (4, 128, 128).
    stages = zip(self.blocks, self.widths[:-1], self.widths[1:])
    for stage, (blocks, width, out_width) in enumerate(stages, 1):
      for index in range(blocks):
        residual = mfm(width, 3, 1, f"block{stage}_{index}_conv1")(x)
        x = x + mfm(width, 3, 1, f"block{stage}_{index}_conv2")(residual)
      # ``group``: a 1x1 mfm then a 3x3 mfm.
      x = mfm(width, 1, 0, f"group{stage}_conv_a")(x)
      x = mfm(out_width, 3, 1, f"group{stage}_conv")(x)
      if stage != 3:
        x = max_plus_average_pool(x)
    fc = nn.Dense(self.features, dtype=self.dtype, kernel_init=self.kernel_init, name="fc")
    features = fc(flatten_channel_major(x)).astype(jnp.float32)
    if self.num_classes is None:
      return features
    dropped = nn.Dropout(0.5, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype, kernel_init=self.kernel_init,
                      name="fc2")(dropped)
    return features, logits.astype(jnp.float32)
