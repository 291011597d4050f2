"""insightface ``arcface_torch`` iResNet checkpoints (``backbone.pth``) -> ``ResNetFace`` variables.

    model = ResNetFace(stage_sizes=(3, 4, 14, 3))            # iresnet50
    variables = load_arcface("ms1mv3_arcface_r50/backbone.pth", model)
    embeddings = model.apply(variables, images_112, train=False)

arcface_torch feeds RGB 112x112 images normalised to [-1, 1], which is this
project's convention, so no input transform is needed.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from hallujax.convert.common import convert_state_dict, load_torch_state_dict, variables_template
from hallujax.convert.torchvision import resnet_module_name
from hallujax.models.recognition import ResNetFace


def convert_arcface(state_dict: Mapping[str, np.ndarray], model: ResNetFace, image_size: int = 112
                    ) -> dict[str, Any]:
  """arcface_torch ``IResNet`` state dict -> variables for `model` at `image_size` (112 for public ones)."""
  template = variables_template(model, jnp.zeros((1, image_size, image_size, 3)), train=False)
  return convert_state_dict(state_dict, template, resnet_module_name, checkpoint_name="arcface_torch iResNet")


def load_arcface(path: str, model: ResNetFace, image_size: int = 112) -> dict[str, Any]:
  """Read an arcface_torch ``backbone.pth`` into variables for `model`."""
  return convert_arcface(load_torch_state_dict(path), model, image_size)


def load_iresnet(path: str, model: ResNetFace | None = None, image_size: int = 112) -> dict[str, Any]:
  """``load_arcface`` with the default model, ResNetFace() (arcface_torch ``iresnet34``).

  Returns {"params": ..., "batch_stats": ...}.
  """
  return load_arcface(path, model or ResNetFace(), image_size)
