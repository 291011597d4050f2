"""VividGAN's networks (paper 002, Zhang et al., §III): joint ×8 face SR and frontalization.

* ``CoarseNetwork`` (§III-A, Fig. 3, "VividGAN†"): an encoder at the LR size and a
  cascade of Feature Transform modules (``FeatureTransform``: a spatial
  transformer [6] that "lines up the intermediate features", a residual block
  [55] and a deconvolution ×2) up to the HR size.
* ``LandmarkEstimator``: our stand-in for the landmark detector the paper runs
  on the coarse face ([57], §III-B.1: "the landmark localization can be
  obtained by a widely-used facial landmark detector"): a small stacked
  hourglass that predicts the 68 heatmaps from the coarse output and is trained
  on the face world's 68 points (hallujax/methods/vividgan.py).
* ``TouchingUp`` (§III-B.1, Fig. 4(a)): one U-Net [58] per facial component
  (right eye, left eye, nose, mouth); ``crop_components`` / ``stitch_components``
  cut the components out at landmark-centred boxes and stitch them onto a
  masked template with max-out fusion (Fig. 4(b)) -> the component prior.
* ``FineIntegration`` (§III-B.2, Fig. 5): an encoder on [coarse, prior] -> F_C,
  a stacked hourglass [63] -> 68 landmark heatmaps F_H, the integration block
  (``IntegrationBlock``, Eq. 1-2) -> F_E, and a decoder of FT modules.
* ``Discriminator``: Coarse-D and Fine-D (§III-C), one logit per image (BCE, Eq. 7-8).

Images are NHWC in [-1, 1]; landmarks are (x, y) in image pixels with pixel
centres at integers (the face world's and hallujax.data.alignment's convention).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hallujax.data.alignment import COMPONENT_SIZES, PARTS_68
from hallujax.nn.hourglass import ResidualBlock, StackedHourglass
from hallujax.nn.resampling import upsample_bicubic

Dtype = Any

COMPONENTS = ("right_eye", "left_eye", "nose", "mouth")
NUM_LANDMARKS = 68


# ----------------------------------------------------------------------------- spatial transformer


def identity_theta(batch: int) -> jax.Array:
  """(batch, 2, 3) identity affine transforms."""
  return jnp.broadcast_to(jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], jnp.float32), (batch, 2, 3))


def affine_sample(features: jax.Array, theta: jax.Array) -> jax.Array:
  """Bilinear sampling of `features` (B, H, W, C) on the grid `theta` (B, 2, 3) maps out to (STN [6]).

  Normalised coordinates run over [-1, 1] across the image's outer pixel edges
  (PyTorch's ``affine_grid(align_corners=False)``), so the identity transform
  samples every pixel centre exactly and returns `features` unchanged. Outside
  the input the features are zero.
  """
  batch, height, width, channels = features.shape
  xs = (2.0 * jnp.arange(width, dtype=jnp.float32) + 1.0) / width - 1.0
  ys = (2.0 * jnp.arange(height, dtype=jnp.float32) + 1.0) / height - 1.0
  grid_x, grid_y = jnp.meshgrid(xs, ys)                                      # (H, W)
  points = jnp.stack([grid_x, grid_y, jnp.ones_like(grid_x)], axis=-1)      # (H, W, 3)
  source = jnp.einsum("bij,hwj->bhwi", theta.astype(jnp.float32), points)    # (B, H, W, 2)
  source_x = ((source[..., 0] + 1.0) * width - 1.0) / 2.0
  source_y = ((source[..., 1] + 1.0) * height - 1.0) / 2.0

  def sample_one(image, sx, sy):
    flat = image.reshape(height * width, channels)
    x0, y0 = jnp.floor(sx), jnp.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)

    def tap(yy, xx):
      inside = ((yy >= 0) & (yy < height) & (xx >= 0) & (xx < width))[..., None]
      index = jnp.clip(yy, 0, height - 1) * width + jnp.clip(xx, 0, width - 1)
      return jnp.where(inside, flat[index], 0.0)

    return ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1))
            + fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))

  sampled = jax.vmap(sample_one)(features.astype(jnp.float32), source_x, source_y)
  return sampled.astype(features.dtype)


class SpatialTransformer(nn.Module):
  """STN layer [6]: a localisation net predicts an affine transform of the features, which are resampled.

  The last layer's kernel and bias start at zero, so the predicted offsets are
  zero and the layer starts as the identity (Jaderberg et al. §3.1 initialise
  the regression layer to the identity transform the same way).
  """

  features: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(nn.Conv(self.features, (3, 3), strides=2, dtype=self.dtype, name="localize_conv")(x))
    h = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
    h = nn.relu(nn.Dense(self.features, name="localize_dense")(h))
    offsets = nn.Dense(6, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                       name="offsets")(h)
    theta = identity_theta(x.shape[0]) + offsets.reshape(-1, 2, 3)
    return affine_sample(x, theta)


class FeatureTransform(nn.Module):
  """One FT module (§III-A, Fig. 3): STN -> residual block -> deconvolution ×2 (with a ReLU)."""

  features: int
  localization_features: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = SpatialTransformer(self.localization_features, self.dtype, name="stn")(x)
    x = ResidualBlock(x.shape[-1], name="residual")(x)
    x = nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype,
                         name="deconv")(x)
    return nn.relu(x)


# ----------------------------------------------------------------------------- coarse-level FH network


def upsampling_steps(input_size: int, output_size: int) -> int:
  """log2(output/input): the number of ×2 FT modules, checked to be a whole power of two."""
  ratio = output_size // input_size
  if output_size % input_size or ratio < 2 or ratio & (ratio - 1):
    raise ValueError(f"VividGAN upsamples by powers of two; got {input_size}² -> {output_size}² "
                     f"(expected e.g. 16 -> 128).")
  return int(np.log2(ratio))


class CoarseNetwork(nn.Module):
  """The coarse-level FH network (§III-A): LR non-frontal face -> coarse frontal HR face.

  `widths[0]` is the encoder's width at the LR size; each later entry is the
  output width of one FT module (×2 each), so len(widths) - 1 = log2(scale).
  The paper does not give the encoder; ours is a 3×3 conv and two residual
  blocks at the LR size ("an input LR face is firstly encoded to latent features").
  With `bicubic_skip` (our addition) the network predicts a residual over bicubic(LR).
  """

  widths: Sequence[int] = (512, 256, 128, 64)
  localization_features: int = 32
  bicubic_skip: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, low_resolution: jax.Array) -> jax.Array:
    x = nn.Conv(self.widths[0], (3, 3), dtype=self.dtype, name="encoder_conv")(low_resolution.astype(self.dtype))
    x = ResidualBlock(self.widths[0], name="encoder_residual_0")(x)
    x = ResidualBlock(self.widths[0], name="encoder_residual_1")(x)
    for index, width in enumerate(self.widths[1:]):
      x = FeatureTransform(width, self.localization_features, self.dtype, name=f"feature_transform_{index}")(x)
    if not self.bicubic_skip:
      return nn.Conv(3, (3, 3), dtype=self.dtype, name="to_image")(x).astype(jnp.float32)
    # Not in the paper (Fig. 3 has no skip): the output is bicubic(LR) plus a residual whose last
    # convolution starts at zero, so the coarse face starts at bicubic-of-LR. In the face world's
    # frontalize pairs the background, hair and clothing of the input stay in the frontal target.
    residual = nn.Conv(3, (3, 3), kernel_init=nn.initializers.zeros, dtype=self.dtype, name="to_image")(x)
    return upsample_bicubic(low_resolution, x.shape[1]) + residual.astype(jnp.float32)


# ----------------------------------------------------------------------------- landmarks and heatmaps


def heatmap_coordinates(landmarks: jax.Array, image_size: int, heatmap_size: int) -> jax.Array:
  """Image-pixel landmarks -> heatmap-pixel landmarks (pixel centres at integers in both)."""
  return (landmarks + 0.5) * (heatmap_size / image_size) - 0.5


def gaussian_heatmaps(landmarks: jax.Array, image_size: int, heatmap_size: int, sigma: float = 1.0) -> jax.Array:
  """(B, 68, 2) image-pixel landmarks -> (B, h, h, 68) Gaussian heatmaps with peak 1 at each landmark.

  The paper's H_k(h_i) (Eq. 6) are "generated by FAN [67] on the ground-truth
  image"; the face world knows its landmarks, so we draw them directly.
  `sigma` is in heatmap pixels.
  """
  points = heatmap_coordinates(landmarks.astype(jnp.float32), image_size, heatmap_size)
  grid = jnp.arange(heatmap_size, dtype=jnp.float32)
  dx = grid[None, None, :, None] - points[:, None, None, :, 0]   # (B, 1, w, 68)
  dy = grid[None, :, None, None] - points[:, None, None, :, 1]   # (B, h, 1, 68)
  return jnp.exp(-(jnp.square(dx) + jnp.square(dy)) / (2.0 * sigma**2))


def landmarks_from_heatmaps(heatmaps: jax.Array, image_size: int) -> jax.Array:
  """(B, h, w, 68) heatmaps -> (B, 68, 2) image-pixel (x, y) of each heatmap's maximum."""
  batch, height, width, count = heatmaps.shape
  flat = jnp.argmax(heatmaps.reshape(batch, height * width, count), axis=1)   # (B, 68)
  points = jnp.stack([flat % width, flat // width], axis=-1).astype(jnp.float32)
  return (points + 0.5) * (image_size / width) - 0.5


def soft_argmax_landmarks(logits: jax.Array, image_size: int) -> jax.Array:
  """(B, h, w, 68) heatmap logits -> (B, 68, 2) image-pixel (x, y): the softmax-weighted mean position.

  Integral regression (Sun et al., ECCV 2018): differentiable, so the landmark
  estimator trains on coordinates directly. Trained on Eq. 6's summed squared
  heatmap error instead, our small estimator sat at the all-zero heatmap (the
  loss of a zero map is πσ² ≈ 3.1, where ours stayed) and its arg-max landmarks
  were 46 px off on 64² faces (smoke run, docs/vividgan.md).
  """
  batch, height, width, count = logits.shape
  weights = jax.nn.softmax(logits.reshape(batch, height * width, count).astype(jnp.float32), axis=1)
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij")
  x = jnp.einsum("bpk,p->bk", weights, xs.reshape(-1))
  y = jnp.einsum("bpk,p->bk", weights, ys.reshape(-1))
  return (jnp.stack([x, y], axis=-1) + 0.5) * (image_size / width) - 0.5


class LandmarkEstimator(nn.Module):
  """68 landmark heatmap logits at 1/`reduction` of the image size (a small FAN-like hourglass).

  Returns the heads of every stack (intermediate supervision, Newell et al.);
  ``soft_argmax_landmarks`` reads landmarks from them.
  """

  features: int = 64
  num_stacks: int = 1
  depth: int = 3
  reduction: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> list[jax.Array]:
    x = images.astype(self.dtype)
    for index in range(int(np.log2(self.reduction))):
      x = nn.relu(nn.Conv(self.features, (3, 3), strides=2, dtype=self.dtype, name=f"stem_{index}")(x))
    heads = StackedHourglass(self.num_stacks, self.depth, self.features, NUM_LANDMARKS, name="hourglass")(x)
    return [head.astype(jnp.float32) for head in heads]


# ----------------------------------------------------------------------------- components and the prior


def component_sizes(image_size: int) -> dict[str, tuple[int, int]]:
  """(height, width) of each component box at `image_size`.

  The paper gives no sizes. At 128² they are hallujax.data.alignment's
  "vividgan128" layout (PCFH's 144² boxes scaled to 128²); other sizes scale
  them and round to multiples of 4 (the U-Nets halve twice), at least 8.
  """
  reference, sizes = COMPONENT_SIZES["vividgan128"]
  scale = image_size / reference
  return {part: tuple(max(8, 4 * int(round(side * scale / 4))) for side in sizes[part]) for part in COMPONENTS}


def component_boxes(landmarks: jax.Array, sizes: dict[str, tuple[int, int]]) -> dict[str, jax.Array]:
  """{part: (B, 2) int32 (top, left)} of boxes centred on each part's landmarks.

  The same rounding as hallujax.data.alignment.component_boxes, so device and
  host crops agree.
  """
  boxes = {}
  for part in COMPONENTS:
    height, width = sizes[part]
    centre = jnp.mean(landmarks[:, jnp.array(PARTS_68[part])], axis=1)   # (B, 2) x, y
    top = jnp.round(centre[:, 1] - (height - 1) / 2.0)
    left = jnp.round(centre[:, 0] - (width - 1) / 2.0)
    boxes[part] = jnp.stack([top, left], axis=-1).astype(jnp.int32)
  return boxes


def _padding(sizes) -> int:
  return max(max(h, w) for h, w in sizes.values())


def crop_components(images: jax.Array, landmarks: jax.Array, sizes: dict[str, tuple[int, int]]):
  """({part: (B, h, w, C) crops}, boxes): components cut out at landmark-centred boxes (edge-padded).

  Differentiable in `images`; the boxes (integer positions) carry no gradient.
  Matches hallujax.data.alignment.crop_components on the same layout.
  """
  boxes = component_boxes(jax.lax.stop_gradient(landmarks), sizes)
  pad = _padding(sizes)
  size = images.shape[1]
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  crops = {}
  for part in COMPONENTS:
    height, width = sizes[part]
    # Clamped so a box always overlaps the image (a wild landmark estimate still crops something).
    top = jnp.clip(boxes[part][:, 0], -height + 1, size - 1) + pad
    left = jnp.clip(boxes[part][:, 1], -width + 1, size - 1) + pad
    crops[part] = jax.vmap(lambda image, t, l, h=height, w=width: jax.lax.dynamic_slice(
        image, (t, l, 0), (h, w, image.shape[-1])))(padded, top, left)
  return crops, boxes


def stitch_components(crops: dict[str, jax.Array], boxes: dict[str, jax.Array], image_size: int,
                      background: float = -1.0) -> jax.Array:
  """The component appearance prior (Fig. 4(b)): components on a masked template, max-out fused.

  Paper: "the estimated fine-grained facial components are stitched onto a
  masked template ... the max-out fusing strategy is adopted to reduce the
  stitching artifacts on the overlapping areas". Our template is the constant
  `background` (black in [-1, 1]) everywhere outside the components; where
  boxes overlap the prior takes the element-wise maximum.
  """
  sizes = {part: crop.shape[1:3] for part, crop in crops.items()}
  pad = _padding(sizes)
  batch, channels = next(iter(crops.values())).shape[0], next(iter(crops.values())).shape[-1]
  canvas_size = image_size + 2 * pad
  prior = jnp.full((batch, image_size, image_size, channels), background, jnp.float32)
  for part, crop in crops.items():
    height, width = sizes[part]
    top = jnp.clip(boxes[part][:, 0], -height + 1, image_size - 1) + pad
    left = jnp.clip(boxes[part][:, 1], -width + 1, image_size - 1) + pad
    canvas = jnp.full((batch, canvas_size, canvas_size, channels), background, jnp.float32)
    canvas = jax.vmap(lambda c, piece, t, l: jax.lax.dynamic_update_slice(c, piece, (t, l, 0)))(
        canvas, crop.astype(jnp.float32), top, left)
    prior = jnp.maximum(prior, canvas[:, pad:pad + image_size, pad:pad + image_size])
  return prior


class UNet(nn.Module):
  """A small U-Net [58] that refines one component crop: convs down, deconvs up, skip connections.

  Fig. 4(a): "successive convolutional and deconvolutional layers along with
  skip connections". The output is the input crop plus a residual whose last
  convolution starts at zero (our choice: the touched-up component starts as
  the coarse one).
  """

  widths: Sequence[int] = (32, 64, 128)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, crop: jax.Array) -> jax.Array:
    x = crop.astype(self.dtype)
    skips = []
    for index, width in enumerate(self.widths):
      strides = 1 if index == 0 else 2
      x = nn.relu(nn.Conv(width, (3, 3), strides=strides, dtype=self.dtype, name=f"down_{index}")(x))
      x = nn.relu(nn.Conv(width, (3, 3), dtype=self.dtype, name=f"down_{index}_b")(x))
      skips.append(x)
    for index in range(len(self.widths) - 2, -1, -1):
      x = nn.relu(nn.ConvTranspose(self.widths[index], (4, 4), strides=(2, 2), padding="SAME",
                                   dtype=self.dtype, name=f"up_{index}")(x))
      x = jnp.concatenate([x, skips[index]], axis=-1)
      x = nn.relu(nn.Conv(self.widths[index], (3, 3), dtype=self.dtype, name=f"up_{index}_b")(x))
    residual = nn.Conv(crop.shape[-1], (3, 3), kernel_init=nn.initializers.zeros, dtype=self.dtype,
                       name="to_image")(x)
    return crop.astype(jnp.float32) + residual.astype(jnp.float32)


class TouchingUp(nn.Module):
  """The touching-up subnetwork (§III-B.1): one U-Net per facial component."""

  widths: Sequence[int] = (32, 64, 128)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, crops: dict[str, jax.Array]) -> dict[str, jax.Array]:
    for part, crop in crops.items():
      if crop.shape[1] % 4 or crop.shape[2] % 4:
        raise ValueError(f"TouchingUp got a {crop.shape[1]}×{crop.shape[2]} {part} crop; the U-Net "
                         f"halves twice, so crop sides must be multiples of 4.")
    return {part: UNet(self.widths, self.dtype, name=part)(crop) for part, crop in crops.items()}


# ----------------------------------------------------------------------------- fine-integration subnetwork


class IntegrationBlock(nn.Module):
  """The integration block (§III-B.2, Fig. 5(c), Eq. 1-2).

  F_CH^i = Σ_j softmax_j(θ(F_C^i)ᵀ ψ(F_H^j)) ζ(F_H^j)   (Eq. 1, a non-local block over positions)
  F_E    = σ · φ(F_CH) + F_C                               (Eq. 2, σ = 1 in the paper)

  "FH and FC are first normalized and transformed into two feature spaces θ
  and ψ": we normalise each with a LayerNorm over channels; θ, ψ, ζ and φ are
  1×1 convolutions. φ uses the default initialisation, so σ alone decides
  whether the attended features enter F_E.
  """

  embedding: int = 128
  sigma: float = 1.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, fused: jax.Array, heatmaps: jax.Array) -> jax.Array:
    batch, height, width, channels = fused.shape
    normalized_fused = nn.LayerNorm(name="normalize_fused")(fused.astype(jnp.float32))
    normalized_heatmaps = nn.LayerNorm(name="normalize_heatmaps")(heatmaps.astype(jnp.float32))
    theta = nn.Conv(self.embedding, (1, 1), dtype=self.dtype, name="theta")(normalized_fused)
    psi = nn.Conv(self.embedding, (1, 1), dtype=self.dtype, name="psi")(normalized_heatmaps)
    zeta = nn.Conv(self.embedding, (1, 1), dtype=self.dtype, name="zeta")(heatmaps.astype(self.dtype))
    theta = theta.reshape(batch, height * width, self.embedding)
    psi = psi.reshape(batch, height * width, self.embedding)
    zeta = zeta.reshape(batch, height * width, self.embedding)
    similarity = jnp.einsum("bic,bjc->bij", theta, psi).astype(jnp.float32)
    attention = jax.nn.softmax(similarity, axis=-1)          # 1 / M(F) · exp(...)   (Eq. 1)
    attended = jnp.einsum("bij,bjc->bic", attention.astype(self.dtype), zeta)
    attended = attended.reshape(batch, height, width, self.embedding)
    projected = nn.Conv(channels, (1, 1), dtype=self.dtype, name="phi")(attended)
    return (self.sigma * projected.astype(jnp.float32) + fused.astype(jnp.float32)).astype(fused.dtype)


class FineIntegration(nn.Module):
  """The fine-integration subnetwork (§III-B.2, Fig. 5(a)): [coarse, prior] -> fine face and heatmaps.

  (i) An encoder of stride-2 convolutions and a residual block brings the
  concatenated images to 1/2**len(encoder_widths[1:]) of their size -> F_C;
  (ii) the facial component-aware module: a stacked hourglass estimates 68
  landmark heatmaps F_H from F_C (supervised by L_h, Eq. 6) and the
  integration block re-calibrates F_C with them (Eq. 1-2) -> F_E; (iii) a
  decoder of FT modules (the coarse network's modules, §III-B.2: "the encoder
  and decoder adopt the same architectures as our coarse-level FH network")
  back to the full size. The decoder's last convolution starts at zero and
  its output is added to the coarse face (our choice: the fine face starts as
  the coarse one). With `prior=None` (V-TN) the encoder sees the coarse face alone.

  Returns (fine face, list of heatmaps of every hourglass stack).
  """

  encoder_widths: Sequence[int] = (64, 128, 256)
  hourglass_stacks: int = 2
  hourglass_depth: int = 3
  embedding: int = 128
  sigma: float = 1.0
  localization_features: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, coarse: jax.Array, prior: jax.Array | None = None):
    x = coarse if prior is None else jnp.concatenate([coarse, prior], axis=-1)
    x = nn.relu(nn.Conv(self.encoder_widths[0], (3, 3), dtype=self.dtype, name="encoder_conv")(x.astype(self.dtype)))
    for index, width in enumerate(self.encoder_widths[1:]):
      x = nn.relu(nn.Conv(width, (4, 4), strides=2, dtype=self.dtype, name=f"encoder_down_{index}")(x))
    fused = ResidualBlock(self.encoder_widths[-1], name="encoder_residual")(x)             # F_C
    heatmaps = StackedHourglass(self.hourglass_stacks, self.hourglass_depth, self.encoder_widths[-1],
                                NUM_LANDMARKS, name="hourglass")(fused)                  # F_H per stack
    enhanced = IntegrationBlock(self.embedding, self.sigma, self.dtype, name="integration")(
        fused, heatmaps[-1])                                                             # F_E
    x = enhanced
    for index, width in enumerate(reversed(self.encoder_widths[:-1])):
      x = FeatureTransform(width, self.localization_features, self.dtype, name=f"decoder_{index}")(x)
    residual = nn.Conv(3, (3, 3), kernel_init=nn.initializers.zeros, dtype=self.dtype, name="to_image")(x)
    return coarse + residual.astype(jnp.float32), [h.astype(jnp.float32) for h in heatmaps]


# ----------------------------------------------------------------------------- discriminators


class Discriminator(nn.Module):
  """Coarse-D / Fine-D (§III-C): stride-2 convs with leaky ReLUs -> one real/fake logit per image.

  The paper does not describe them; this is a DCGAN-style discriminator. The
  logit feeds the BCE losses of Eq. 7-8.
  """

  widths: Sequence[int] = (64, 128, 256, 512)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images.astype(self.dtype)
    for index, width in enumerate(self.widths):
      x = nn.leaky_relu(nn.Conv(width, (4, 4), strides=2, dtype=self.dtype, name=f"conv_{index}")(x), 0.2)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(1, name="logit")(x)[:, 0]
