"""LightCNN-29 v2 checkpoints (``LightCNN_29Layers_V2_checkpoint.pth.tar``) -> ``LightCNN29`` variables.

    model = LightCNN29()                      # identity features only; fc2 skipped
    variables = load_lightcnn("LightCNN_29Layers_V2_checkpoint.pth.tar", model)
    features = model.apply(variables, images_128)

The public checkpoint is a DataParallel training checkpoint
({"state_dict": {"module.conv1.filter.weight": ...}}); both wrappers are
removed by ``load_torch_state_dict``.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from hallujax.convert.common import convert_state_dict, load_torch_state_dict, variables_template
from hallujax.models.recognition import LightCNN29


def lightcnn_module_name(path: tuple[str, ...]) -> str:
  """Flax module path -> PyTorch name: ("block2_1_conv1", "filter") -> "block2.1.conv1.filter"."""
  names = []
  for part in path:
    if part.startswith("block"):
      stage, index, conv = part.split("_")
      names.append(f"{stage}.{index}.{conv}")
    elif part.startswith("group"):
      stage, conv = part.split("_", 1)
      names.append(f"{stage}.{conv}")
    else:
      names.append(part)
  return ".".join(names)


def convert_lightcnn(state_dict: Mapping[str, np.ndarray], model: LightCNN29 | None = None,
                     image_size: int = 128) -> dict[str, Any]:
  """LightCNN-29 v2 state dict -> variables for `model` (fc2 is skipped when ``num_classes`` is None)."""
  model = model or LightCNN29()
  template = variables_template(model, jnp.zeros((1, image_size, image_size, 1)))
  ignore = ("fc2.",) if model.num_classes is None else ()
  return convert_state_dict(state_dict, template, lightcnn_module_name, ignore_prefixes=ignore,
                            checkpoint_name="LightCNN-29 v2")


def load_lightcnn(path: str, model: LightCNN29 | None = None) -> dict[str, Any]:
  """Read a LightCNN-29 v2 ``.pth.tar`` into variables for `model`."""
  return convert_lightcnn(load_torch_state_dict(path), model)
