"""torchvision VGG-16/19 and ResNet-50 checkpoints -> ``hallujax.models.vgg`` networks.

Usage::

  variables = convert_vgg(load_torch_state_dict("vgg19-dcbb9e9d.pth"), VGG19(), image_size=224)
  features = VGG19().apply(variables, images)

The classifier layers ("classifier.*" for VGG, "fc.*" for ResNet) are not
part of the feature networks and are skipped.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from hallujax.convert.common import convert_state_dict, load_torch_state_dict, variables_template
from hallujax.models.vgg import VGG, VGG_STAGE_SIZES, ResNet50Features


def vgg_feature_indices(depth: int) -> dict[str, int]:
  """{"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, ...}: indices into torchvision's ``features`` Sequential."""
  indices, position = {}, 0
  for stage, size in enumerate(VGG_STAGE_SIZES[depth], 1):
    if stage > 1:
      position += 1  # MaxPool2d
    for index in range(1, size + 1):
      indices[f"conv{stage}_{index}"] = position
      position += 2  # Conv2d, ReLU
  return indices


def convert_vgg(state_dict: Mapping[str, np.ndarray], model: VGG, image_size: int = 32) -> dict[str, Any]:
  """torchvision ``vgg16`` / ``vgg19`` state dict -> variables for `model` (a VGG16 / VGG19)."""
  indices = vgg_feature_indices(model.depth)
  template = variables_template(model, jnp.zeros((1, image_size, image_size, 3)))
  return convert_state_dict(state_dict, template, lambda path: f"features.{indices[path[0]]}",
                            ignore_prefixes=("classifier.",), checkpoint_name=f"torchvision vgg{model.depth}")


def resnet_module_name(path: tuple[str, ...]) -> str:
  """("layer2_0", "downsample_bn") -> "layer2.0.downsample.1"."""
  names = []
  for part in path:
    if part.startswith("layer"):
      names.append(part.replace("_", "."))
    else:
      names.append({"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(part, part))
  return ".".join(names)


def convert_resnet50(state_dict: Mapping[str, np.ndarray], model: ResNet50Features | None = None,
                     image_size: int = 32) -> dict[str, Any]:
  """torchvision ``resnet50`` state dict -> variables for ``ResNet50Features`` (classifier "fc" skipped)."""
  model = model or ResNet50Features()
  template = variables_template(model, jnp.zeros((1, image_size, image_size, 3)))
  return convert_state_dict(state_dict, template, resnet_module_name, ignore_prefixes=("fc.",),
                            checkpoint_name="torchvision resnet50")


def load_vgg(path: str, model: VGG) -> dict[str, Any]:
  """Read a torchvision VGG ``.pth`` file into variables for `model`."""
  return convert_vgg(load_torch_state_dict(path), model)


def load_resnet50(path: str) -> dict[str, Any]:
  """Read a torchvision ResNet-50 ``.pth`` file into ``ResNet50Features`` variables."""
  return convert_resnet50(load_torch_state_dict(path))


def load_vgg19(path: str) -> dict[str, Any]:
  """Read torchvision's ``vgg19`` ``.pth`` into ``VGG19`` params (the "params" collection; VGG has no other)."""
  from hallujax.models.vgg import VGG19  # pylint: disable=import-outside-toplevel
  return load_vgg(path, VGG19())["params"]
