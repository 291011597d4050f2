"""LPIPS v0.1 (VGG) weights -> ``hallujax.metrics.image_quality.LPIPS`` variables.

LPIPS needs two files: the linear calibration layers shipped with the
``lpips`` package (``lpips/weights/v0.1/vgg.pth``: "lin0.model.1.weight" ...
"lin4.model.1.weight", each (1, C, 1, 1)) and the ImageNet VGG-16 it was
calibrated on (torchvision ``vgg16-397923af.pth``). A full ``lpips.LPIPS``
state dict (with "net.slice1.0.weight" ...) also works, given as the first
argument with no VGG file.

    variables = load_lpips("vgg.pth", "vgg16-397923af.pth")
    distances = lpips_distance(variables, images, references)
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from hallujax.convert.common import convert_state_dict, load_torch_state_dict, variables_template
from hallujax.convert.torchvision import vgg_feature_indices
from hallujax.metrics.image_quality import LPIPS

# lpips.pretrained_networks.vgg16 slices torchvision's features at these indices.
LPIPS_VGG_SLICES = ((1, 0, 4), (2, 4, 9), (3, 9, 16), (4, 16, 23), (5, 23, 30))


def lpips_slices_to_features(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Rename a full lpips model's "net.sliceK.N.*" keys to torchvision's "net.features.N.*"."""
  renamed = {}
  for key, value in state_dict.items():
    if key.startswith("net.slice"):
      _, _, index, leaf = key.split(".", 3)
      key = f"net.features.{index}.{leaf}"
    renamed[key] = value
  return renamed


def convert_lpips(lin_state_dict: Mapping[str, np.ndarray], vgg16_state_dict: Mapping[str, np.ndarray] | None = None,
                  image_size: int = 32) -> dict[str, Any]:
  """LPIPS linear layers (+ torchvision VGG-16 features) -> ``LPIPS`` variables."""
  state_dict = lpips_slices_to_features(lin_state_dict)
  if vgg16_state_dict is not None:
    state_dict.update({f"net.{key}": value for key, value in vgg16_state_dict.items()})
  indices = vgg_feature_indices(16)

  def torch_module_for(path: tuple[str, ...]) -> str:
    if path[0] == "net":
      return f"net.features.{indices[path[1]]}"
    return f"{path[0]}.model.1"  # lin{k}: Sequential(Dropout, Conv2d)

  template = variables_template(LPIPS(), jnp.zeros((1, image_size, image_size, 3)),
                                jnp.zeros((1, image_size, image_size, 3)))
  return convert_state_dict(state_dict, template, torch_module_for, ignore_prefixes=("net.classifier.", "scaling_layer."),
                            checkpoint_name="LPIPS (linear layers + VGG-16)")


def load_lpips(lin_path: str, vgg16_path: str | None = None) -> dict[str, Any]:
  """Read LPIPS' ``vgg.pth`` and torchvision's ``vgg16`` file into ``LPIPS`` variables."""
  vgg = load_torch_state_dict(vgg16_path) if vgg16_path else None
  return convert_lpips(load_torch_state_dict(lin_path), vgg)
