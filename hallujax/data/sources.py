"""Data sources by name: the face world, TFDS datasets and on-disk layouts.

A source is a grain random-access data source (``__len__`` and
``__getitem__(index)``) of examples, each a dict of numpy arrays:

    "input"      uint8 (H, W, C)  what the method reads (the image to
                                  hallucinate from: a view to downsample, a
                                  non-frontal face, a thermal or NIR capture)
    "target"     uint8 (H, W, 3)  the visible image the method should produce
    "identity"   int32 ()         identity label (-1 where unknown)
    optional: "landmarks" float32 (68, 2) in target pixel coordinates (x, y),
              "visibility" bool (68,), "yaw" float32 () in degrees, ...

Both images come at the source's native size; the pipeline resizes "input"
to ``data.input_size`` and "target" to ``data.target_size``
(hallujax.data.pipeline). A source is constructed as
``Source(data_config, split)`` with split in {"train", "validation", "test"}.
"""

from __future__ import annotations

import importlib

# name -> "module:class". Each entry's docstring says what it reads.
SOURCES = {
    "faceworld": "hallujax.data.faceworld:FaceWorldSource",
    "celeb_a": "hallujax.data.tfds_source:TfdsSource",
    "lfw": "hallujax.data.tfds_source:TfdsSource",
    "tfds": "hallujax.data.tfds_source:TfdsSource",
    "celeba_folder": "hallujax.data.folders:CelebAFolder",
    "vggface2_folder": "hallujax.data.folders:VGGFace2Folder",
    "lfw_folder": "hallujax.data.folders:LfwFolder",
    "image_folder": "hallujax.data.folders:ImageFolder",
    "paired_folder": "hallujax.data.folders:PairedFolder",
    "casia_nir_vis": "hallujax.data.nir_vis:CasiaNirVisFolder",
    "buaa_vis_nir": "hallujax.data.nir_vis:BuaaVisNirFolder",
    "oulu_casia_nir_vis": "hallujax.data.nir_vis:OuluCasiaNirVisFolder",
    "prepared": "hallujax.data.record_writing:PreparedSource",
}


def source_location(name: str) -> tuple[str, str]:
  """(module, class) of a source name, or a ValueError listing the known ones (imports nothing)."""
  if ":" in name:  # a user's own source class, "package.module:ClassName"
    module_name, class_name = name.split(":")
    return module_name, class_name
  if name in SOURCES:
    module_name, class_name = SOURCES[name].split(":")
    return module_name, class_name
  raise ValueError(
      f"config.data.source={name!r} is not a known source. "
      f"Known sources: {', '.join(SOURCES)}; or your own class as 'package.module:ClassName'.")


def make_source(data_config, split: str):
  """The data source `data_config.source` for `split`."""
  if split not in ("train", "validation", "test"):
    raise ValueError(f"split={split!r}; expected one of train, validation, test.")
  module_name, class_name = source_location(data_config.source)
  source_class = getattr(importlib.import_module(module_name), class_name)
  return source_class(data_config, split)
