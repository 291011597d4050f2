"""TFDS datasets by name, read with ``tfds.data_source`` (array_record, random access).

``data.source`` names the TFDS dataset ("celeb_a", "lfw", or "tfds" with
``data.tfds_name`` for any other). The dataset must already be prepared in
array_record format under ``data.data_dir`` (TFDS's default directory if
empty); nothing is downloaded at training time:

    tfds build celeb_a --file_format=array_record --data_dir=DIR

Building celeb_a fetches five files from Google Drive, which often refuses
(quota); put them in TFDS's manual directory instead, under these names:
img_align_celeba.zip, list_eval_partition.txt, list_attr_celeba.txt,
list_landmarks_align_celeba.txt, identity_CelebA.txt, and add
``--manual_dir=THAT_DIR`` (docs/data.md). For training at scale, convert the
result once into compact records: ``python -m hallujax.prepare --source
celeb_a --data_dir=DIR --out_dir=RECORDS``.

Examples are same-view pairs ("input" = "target" = the image; the pipeline
downsamples "input"). Identity comes from an "identity" / "label" feature where
the dataset has one (celeb_a's Identity_No; LFW's person name is mapped to a
stable index by CRC-32), else -1.
CelebA's five landmarks become "landmarks5" (5, 2) float32 (x, y) in pixels
of the returned image. Datasets with only a train split (LFW) are split 90 /
5 / 5 % into train / validation / test.
"""

from __future__ import annotations

import zlib

import numpy as np

from hallujax.data import image_files

_CELEBA_LANDMARKS = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
_SPLIT_SLICES = {"train": "train[:90%]", "validation": "train[90%:95%]", "test": "train[95%:]"}


def _prepare_message(name: str, data_dir: str) -> str:
  where = f" --data_dir={data_dir}" if data_dir else ""
  return (f"TFDS dataset {name!r} is not prepared in array_record format{' under ' + data_dir if data_dir else ''}. "
          f"Prepare it once with: tfds build {name} --file_format=array_record{where} "
          f"(building needs TensorFlow: pip install -e '.[tfds-build]'; reading does not), "
          f"or point config.data.data_dir at a directory that holds it.")


class TfdsSource:
  """Random-access TFDS source (see the module docstring)."""

  def __init__(self, data_config, split: str):
    import tensorflow_datasets as tfds

    self.name = data_config.tfds_name or data_config.source
    if self.name == "tfds":
      raise ValueError("config.data.source='tfds' needs config.data.tfds_name (e.g. 'celeb_a').")
    self.pairing = data_config.pairing
    if self.pairing != "same_view":
      raise ValueError(f"TFDS dataset {self.name!r} gives single visible images; config.data.pairing="
                       f"{self.pairing!r} needs paired data (use the faceworld or paired_folder source).")
    data_dir = data_config.data_dir or None
    self.crop = int(data_config.crop or 0)
    self.minimum_size = int(data_config.target_size or 0) if data_config.reject_small else 0
    try:
      builder = tfds.builder(self.name, data_dir=data_dir)
      splits = set(builder.info.splits.keys())
    except Exception as error:   # tfds raises several types for a missing dataset
      raise FileNotFoundError(_prepare_message(self.name, data_dir or "")) from error
    if not splits or split in splits:   # (no split information: let data_source decide)
      tfds_split = split
    elif splits == {"train"}:
      tfds_split = _SPLIT_SLICES[split]
    else:
      raise ValueError(f"TFDS dataset {self.name!r} has splits {sorted(splits)}; no {split!r}.")
    try:
      self.records = tfds.data_source(self.name, split=tfds_split, data_dir=data_dir, download=False)
    except Exception as error:
      raise FileNotFoundError(_prepare_message(self.name, data_dir or "")) from error
    self.split = split

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    record = self.records[int(index)]
    image = image_files.to_rgb(np.asarray(record["image"]), name=f"{self.name}[{index}]")
    identity = -1
    for key in ("identity", "label"):
      if key in record:
        value = record[key]
        if isinstance(value, dict):      # celeb_a 2.x: {"Identity_No": id}
          value = next(iter(value.values()))
        value = np.asarray(value)
        if value.dtype.kind in "iu":
          identity = int(value)
        else:   # a person's name (LFW): a stable index from its CRC-32
          name = value.item() if value.ndim == 0 else value.tobytes()
          identity = zlib.crc32(name if isinstance(name, bytes) else str(name).encode()) & 0x7FFFFFFF
        break
    example = {}
    landmarks = record.get("landmarks")
    if isinstance(landmarks, dict):
      if all(f"{k}_x" in landmarks for k in _CELEBA_LANDMARKS):      # celeb_a 2.x: lefteye_x, lefteye_y, ...
        points = [[landmarks[f"{k}_x"], landmarks[f"{k}_y"]] for k in _CELEBA_LANDMARKS]
        example["landmarks5"] = np.asarray(points, np.float32)
      elif all(k in landmarks for k in _CELEBA_LANDMARKS):            # older: lefteye = (x, y)
        example["landmarks5"] = np.stack([np.asarray(landmarks[k], np.float32) for k in _CELEBA_LANDMARKS])
    if self.crop:
      image, offset = image_files.centre_crop(image, self.crop, name=f"{self.name}[{index}]")
      if "landmarks5" in example:
        example["landmarks5"] = example["landmarks5"] - np.asarray(offset[::-1], np.float32)
    image_files.check_size(image, self.minimum_size, f"{self.name}[{index}]")
    example.update(input=image, target=image, identity=np.int32(identity))
    return example
