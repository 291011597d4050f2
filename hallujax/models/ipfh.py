"""IPFH networks (paper 004, Zhang et al., "identity-preserving face hallucination").

- `CoarseHallucinator` F_c (§III-B.1, Eq. 1): bicubic ×8, two stacked hourglasses.
- `PolicyController` P (§III-B.2, Fig. 3): image state + context → logits over
  every pixel location of the W×H image.
- `LocalRestoration` R (§III-B.2, Fig. 4): image branch + patch branch, fused
  at 2·features × P × P (256 × 32 × 32 in the paper), decoded to the repaired patch.
- `DualConsistency` D (§III-B.3, Fig. 6): three 3×3 stride-2 convolutions,
  HR → LR (32² → 4² on patches, 128² → 16² on whole images).
- `Networks`: the six modules together, built once by ``hallujax.methods.ipfh.make``.

The cognition network C is SphereFace with the A-softmax head
(hallujax.models.recognition). All modules take NHWC images in [-1, 1] and
work on a single example or a batch (flax convolutions add and remove a
missing batch dimension), so the method can vmap per-example rollouts.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hallujax.models.recognition import SphereFace, sphereface_stages
from hallujax.nn.hourglass import ResidualBlock, StackedHourglass


def _log2_ratio(large: int, small: int, what: str) -> int:
  """log2(large / small), or an error naming `what` when it is not a whole power of two."""
  ratio = large / small
  levels = round(math.log2(ratio)) if ratio >= 1 else -1
  if levels < 0 or small * 2**levels != large:
    raise ValueError(f"{what}: {large} / {small} must be a power of two (got ratio {ratio}).")
  return levels


def bicubic_upsample(images: jax.Array, size: int) -> jax.Array:
  """Bicubic resize of (..., H, W, C) images to size × size (paper: "interpolated LR images to 128×128")."""
  shape = images.shape[:-3] + (size, size, images.shape[-1])
  return jax.image.resize(images, shape, method="bicubic")


class CoarseHallucinator(nn.Module):
  """F_c: LR (16²) → coarse HR ỹ (128²), one output per stacked hourglass (last = ỹ).

  Paper §III-C: "we interpolated LR images to 128×128 and encoded the images to
  4×4×128 with kernel size 3×3, stride 2 in stacked hourglass modules".
  Choice (the paper shows the network only in its supplement): each stack
  predicts a residual added to the bicubic image, and each stack's last
  convolution (its 1×1 head) starts at zero, so ỹ starts exactly at bicubic
  and the MSE of Eq. 2 ("We train this network with pixel-wise MSE") only has
  to learn the correction. The hourglass has no normalization and sums its two
  branches at every scale, so randomly initialised heads gave residuals of std
  2.4 and 6.8 (stacks 1, 2) on [-1, 1] images, which 60 smoke steps did not undo
  (held-out 17.5 dB vs bicubic's 22.2 dB);
  zero-initialised, the smoke run's coarse stage ends above bicubic.
  """

  target_size: int = 128
  features: int = 128
  num_stacks: int = 2
  bottom_size: int = 4

  @nn.compact
  def __call__(self, lr_images: jax.Array) -> list[jax.Array]:
    bicubic = bicubic_upsample(lr_images, self.target_size)
    depth = _log2_ratio(self.target_size, self.bottom_size, "coarse target_size / bottom_size")
    residuals = StackedHourglass(self.num_stacks, depth, self.features, out_channels=3,
                                 head_init=nn.initializers.zeros,  # ỹ = bicubic at init
                                 name="stacked_hourglass")(bicubic)
    return [bicubic + residual for residual in residuals]


class PolicyController(nn.Module):
  """P: logits over the patch locations given the image state and the context, and a state value.

  Paper §III-B.2: "The image branch adopts several residual blocks to extract
  image holistic feature while the patch branch joins the patch feature and
  location feature (action vector) as context feature ... fuses state features
  by concatenating holistic feature and context feature and feeds it into a
  fully-connected layer. A softmax layer is finally appended to produce a
  W×H-D vector". Holistic 512-D, context 256-D (§III-C). Returns (logits,
  value): logits flattened row-major over the action grid (index = row · W/s +
  column), the softmax is the caller's; value is 0 unless `value_head`.

  Options (not in the paper; hallujax/methods/ipfh.py says what each measured):
  `action_stride` s > 1 makes the action grid (H/s) × (W/s) instead of every
  pixel (s = 1, the paper); `head="conv"` replaces the fully connected W×H-way
  layer by a fully convolutional score map (one score per action-grid cell from
  a convolution over the image features at that place, with the context added
  everywhere); `value_head` adds V(s_t), a fully connected layer on the fused
  state, for a learned REINFORCE baseline.
  """

  image_widths: Sequence[int] = (32, 64, 128, 256)  # one stride-2 residual block each
  patch_widths: Sequence[int] = (32, 64)            # stride-2 convs on the last patch
  holistic_features: int = 512
  context_features: int = 256
  action_stride: int = 1                            # 1: every pixel is an action (paper)
  head: str = "dense"                               # "dense" (paper) | "conv"
  value_head: bool = False

  def grid_shape(self, height: int, width: int) -> tuple[int, int]:
    return height // self.action_stride, width // self.action_stride

  @nn.compact
  def __call__(self, image: jax.Array, last_patch: jax.Array,
               last_action_one_hot: jax.Array) -> tuple[jax.Array, jax.Array]:
    grid_height, grid_width = self.grid_shape(image.shape[-3], image.shape[-2])
    actions = grid_height * grid_width
    if last_action_one_hot.shape[-1] != actions:
      raise ValueError(
          f"last_action_one_hot has {last_action_one_hot.shape[-1]} entries; expected one per "
          f"action of the {grid_height}×{grid_width} action grid ({actions}).")
    holistic = image
    for index, width_ in enumerate(self.image_widths):
      holistic = ResidualBlock(width_, strides=2, name=f"image_block_{index}")(holistic)
    holistic = jnp.mean(nn.relu(holistic), axis=(-3, -2))
    holistic = nn.relu(nn.Dense(self.holistic_features, name="holistic")(holistic))

    patch = last_patch
    for index, width_ in enumerate(self.patch_widths):
      patch = nn.relu(nn.Conv(width_, (3, 3), strides=2, name=f"patch_conv_{index}")(patch))
    patch = jnp.mean(patch, axis=(-3, -2))
    context = jnp.concatenate([patch, last_action_one_hot], axis=-1)
    context = nn.relu(nn.Dense(self.context_features, name="context")(context))

    state = jnp.concatenate([holistic, context], axis=-1)
    if self.head == "dense":
      logits = nn.Dense(actions, name="logits")(state)
    elif self.head == "conv":
      logits = self._score_map(image, state, last_action_one_hot, grid_height, grid_width)
    else:
      raise ValueError(f"PolicyController.head={self.head!r}; expected 'dense' or 'conv'.")
    if self.value_head:
      value = nn.Dense(1, name="value")(state)[..., 0]
    else:
      value = jnp.zeros(state.shape[:-1], state.dtype)
    return logits, value

  def _score_map(self, image, state, last_action_one_hot, grid_height, grid_width):
    """One score per action-grid cell: image features at that cell + the fused state, 1×1 conv."""
    features = image
    levels = _log2_ratio(image.shape[-3], grid_height, "image size / action grid")
    width_ = self.image_widths[0]
    for index in range(levels):
      features = nn.relu(nn.Conv(width_, (3, 3), strides=2, name=f"score_down_{index}")(features))
    features = nn.relu(nn.Conv(width_, (3, 3), name="score_conv_0")(features))
    features = nn.relu(nn.Conv(width_, (3, 3), name="score_conv_1")(features))
    last_action = last_action_one_hot.reshape(last_action_one_hot.shape[:-1] + (grid_height, grid_width, 1))
    broadcast = jnp.broadcast_to(nn.Dense(width_, name="score_state")(state)[..., None, None, :],
                                 features.shape[:-1] + (width_,))
    fused = nn.relu(nn.Conv(width_, (1, 1), name="score_fuse")(
        jnp.concatenate([features, last_action], axis=-1)) + broadcast)
    scores = nn.Conv(1, (1, 1), name="score_out")(fused)[..., 0]
    return scores.reshape(scores.shape[:-2] + (grid_height * grid_width,))


class LocalRestoration(nn.Module):
  """R: repaired patch p̂_t from the image state ŷ_{t-1} and the selected patch p_t.

  Paper §III-B.2 (Fig. 4): "We extract image feature with convolution layers to
  obtain WpHp feature where WpHp is the same size with the patch ... convolutional
  layers with kernel size 3×3, stride 1 to obtain the patch feature with same size
  of patch. We incorporate the whole image feature and patch feature"; §III-C:
  "fused the entire image and patch features of 256×32×32". Image branch:
  stride-2 3×3 convolutions from H² down to P², then one 3×3; patch branch:
  `patch_layers` 3×3 stride-1 convolutions; each branch has `features`
  channels (128 + 128 = 256 fused). Choice (the paper shows R only in Fig. 4):
  the decoder predicts a residual added to the input patch, and its last
  convolution (`decoder_out`) starts at zero, so an untrained R is exactly the
  identity (p̂ = p); the paper's R is "first pre-trained on randomly selected
  patch pairs" (§III-C), the "restoration" stage of hallujax/methods/ipfh.py,
  which moves it from there.

  `encode_image` (the image branch, which does not depend on the patch's
  place) and `repair` (patch branch + decoder) split `__call__` so the oracle
  selection can score many candidate patches of one image state at the cost of
  one image branch.

  `sees_repaired` (config.restoration.sees_repaired; not in the paper, whose
  R sees only the image and the patch): the patch branch also reads a fourth
  channel, 1 on the patch's pixels that an earlier step already repaired, so R
  can tell a patch it repaired from one it did not (without it, an R that
  improves fresh patches overshoots on repaired ones; docs/ipfh.md "R alive").
  """

  patch_size: int = 32
  features: int = 128
  patch_layers: int = 3
  decoder_layers: int = 3
  sees_repaired: bool = False

  def setup(self):
    # Names as the former compact module's: image_down_i, image_out, patch_i, decoder_i, decoder_out.
    self.image_down = [nn.Conv(self.features, (3, 3), strides=2) for _ in range(8)]
    self.image_out = nn.Conv(self.features, (3, 3))
    self.patch = [nn.Conv(self.features, (3, 3)) for _ in range(self.patch_layers)]
    self.decoder = [nn.Conv(self.features, (3, 3)) for _ in range(self.decoder_layers - 1)]
    self.decoder_out = nn.Conv(3, (3, 3), kernel_init=nn.initializers.zeros)   # R = identity at init

  def encode_image(self, image: jax.Array) -> jax.Array:
    """The image branch: ŷ_{t-1} (H², 3) → features (P², features)."""
    levels = _log2_ratio(image.shape[-3], self.patch_size, "image size / patch_size")
    feature = image
    for index in range(levels):
      feature = nn.relu(self.image_down[index](feature))
    return nn.relu(self.image_out(feature))

  def repair(self, image_feature: jax.Array, patch: jax.Array, repaired: jax.Array | None = None) -> jax.Array:
    """Patch branch and decoder: the repaired patch p̂ = p + residual. `repaired` (P, P) bool: the patch's
    pixels repaired before this step, read only with `sees_repaired`."""
    if patch.shape[-1] != 3:
      raise ValueError(f"LocalRestoration repairs 3-channel patches; got {patch.shape[-1]} channels.")
    patch_feature = patch
    if self.sees_repaired:
      if repaired is None:
        raise ValueError("LocalRestoration(sees_repaired=True) needs the patch's map of repaired pixels.")
      patch_feature = jnp.concatenate([patch, repaired.astype(patch.dtype)[..., None]], axis=-1)
    for layer in self.patch:
      patch_feature = nn.relu(layer(patch_feature))
    fused = jnp.concatenate([image_feature, patch_feature], axis=-1)
    for layer in self.decoder:
      fused = nn.relu(layer(fused))
    return patch + self.decoder_out(fused)

  def __call__(self, image: jax.Array, patch: jax.Array, repaired: jax.Array | None = None) -> jax.Array:
    return self.repair(self.encode_image(image), patch, repaired)


class DualConsistency(nn.Module):
  """D: HR → LR by three 3×3 stride-2 convolutions (Fig. 6: k3s2n64, k3s2n128, then 3 channels).

  Paper §III-B.3: "we feed the generated HR patches of 32×32 into three
  convolution layers with 3×3 kernel size and stride 2, achieving LR patches
  of 4×4". Fully convolutional, so a whole 128² image maps to 16², the LR
  input's size (used for the image-level LR term of Eq. 17). Leaky ReLU
  between layers (choice; the paper names no activation).
  """

  widths: Sequence[int] = (64, 128)

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images
    for index, width in enumerate(self.widths):
      x = nn.leaky_relu(nn.Conv(width, (3, 3), strides=2, name=f"conv_{index}")(x), 0.2)
    return nn.Conv(images.shape[-1], (3, 3), strides=2, name=f"conv_{len(self.widths)}")(x)


class SphereFaceTextureFeatures(nn.Module):
  """φ for the texture loss: the first `stages` stages of `recognition.SphereFace`, same parameter names.

  Paper Eq. 11: "We extract the convolutional feature maps with the
  pre-trained SphereFace model ... as the texture information". Apply it with
  the SphereFace parameters (the unused deeper layers are ignored). Unlike
  the full network it has no fully connected layer, so it runs on patches of
  any size (32² HR and 4² LR patches alike). tests/test_ipfh.py checks it
  against SphereFace's own intermediate activations.
  """

  depth: int = 20
  stages: int = 1

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    return sphereface_stages(images, self.depth, self.stages, jnp.float32)


class Networks(NamedTuple):
  """IPFH's networks. `texture` applies `cognition`'s parameters (φ of Eq. 11); the others own theirs."""

  coarse: CoarseHallucinator
  dual: DualConsistency
  cognition: SphereFace
  texture: SphereFaceTextureFeatures
  policy: PolicyController
  restoration: LocalRestoration
