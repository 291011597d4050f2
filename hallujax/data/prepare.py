"""Convert an on-disk dataset into array_record shards once, and read them back.

    python -m hallujax.data.prepare --source celeba_folder --data_dir ~/celeba \\
        --out_dir ~/celeba_shards [--target_size 128] [--shards 16] [--pairing same_view]

writes ``OUT/<split>-<k>-of-<n>.array_record`` for train, validation and test
plus ``OUT/info.json``. Each record is one example (the source's dict of
arrays) stored as an uncompressed ``.npz``, so reading is a copy, not a JPEG
decode. Copy OUT to local disk or a bucket and train with
``--config.data.source=prepared --config.data.data_dir=OUT``: the
"prepared" source (PreparedSource) gives random access to the records through
grain's ArrayRecordDataSource, fast enough for a pod's input pipeline.

With ``--target_size`` images are resized (MATLAB bicubic) before writing, so
a 1024² dataset becomes a small one for 128² training.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import logging
import os

import numpy as np

from hallujax.data import degradations

SPLITS = ("train", "validation", "test")


def encode(example: dict) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in example.items()})
  return buffer.getvalue()


def decode(record: bytes) -> dict[str, np.ndarray]:
  with np.load(io.BytesIO(record), allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def _resize_example(example: dict, size: int) -> dict:
  example = dict(example)
  for key in ("input", "target"):
    image = example[key]
    if image.shape[0] != size or image.shape[1] != size:
      scale = size / image.shape[1]
      example[key] = degradations.resize(image, size, "bicubic")
      if key == "target":
        for field in ("landmarks", "landmarks5"):
          if field in example:
            example[field] = (example[field] * scale).astype(np.float32)
  return example


def write_split(source, out_dir: str, split: str, shards: int, target_size: int = 0,
                strict: bool = False) -> tuple[int, list[str]]:
  """Writes the examples of `source` round-robin to `shards` array_record files.

  Unusable files of on-disk sources are left out (and listed), or raise with `strict`.
  Returns (examples written, [reasons for the files left out]).
  """
  from array_record.python.array_record_module import ArrayRecordWriter
  from hallujax.data.folders import BadImageError
  shards = max(1, min(shards, len(source)))
  writers = [ArrayRecordWriter(os.path.join(out_dir, f"{split}-{k:05d}-of-{shards:05d}.array_record"), "group_size:1")
             for k in range(shards)]
  load = getattr(source, "load", source.__getitem__)   # folder sources: no substitution of bad files
  written, skipped = 0, []
  try:
    for index in range(len(source)):
      try:
        example = load(index)
      except BadImageError as error:
        if strict:
          raise
        skipped.append(str(error))
        continue
      if target_size:
        example = _resize_example(example, target_size)
      writers[written % shards].write(encode(example))
      written += 1
  finally:
    for writer in writers:
      writer.close()
  return written, skipped


class PreparedSource:
  """Examples written by ``python -m hallujax.data.prepare`` (data.data_dir = its --out_dir)."""

  def __init__(self, data_config, split: str):
    import grain
    data_dir = os.path.expanduser(data_config.get("data_dir", "") or "")
    self.paths = sorted(glob.glob(os.path.join(data_dir, f"{split}-*-of-*.array_record")))
    if not self.paths:
      raise FileNotFoundError(
          f"config.data.data_dir={data_dir!r} holds no {split}-*.array_record shards. Make them once with "
          f"`python -m hallujax.data.prepare --source SOURCE --data_dir RAW_DIR --out_dir {data_dir or 'OUT'}`.")
    self.records = grain.sources.ArrayRecordDataSource(self.paths)
    self.split = split

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return decode(self.records[int(index)])


def main(argv=None):
  from hallujax.config_base import base_config
  from hallujax.data.sources import make_source

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--source", required=True, help="a name from hallujax.data.sources.SOURCES")
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--splits", default=",".join(SPLITS))
  parser.add_argument("--shards", type=int, default=16)
  parser.add_argument("--target_size", type=int, default=0, help="resize images to this size (0: keep)")
  parser.add_argument("--pairing", default="same_view")
  parser.add_argument("--strict", action="store_true", help="fail on the first unreadable image")
  arguments = parser.parse_args(argv)
  data_config = base_config().data
  data_config.update(source=arguments.source, data_dir=arguments.data_dir, pairing=arguments.pairing,
                     target_size=arguments.target_size or 0)
  data_config.strict = arguments.strict
  os.makedirs(arguments.out_dir, exist_ok=True)
  info = {"source": arguments.source, "pairing": arguments.pairing, "target_size": arguments.target_size, "splits": {}}
  for split in arguments.splits.split(","):
    source = make_source(data_config, split)
    count, skipped = write_split(source, arguments.out_dir, split, arguments.shards, arguments.target_size,
                                 arguments.strict)
    info["splits"][split] = count
    if skipped:
      logging.warning("%s: left out %d unusable files: %s", split, len(skipped), "; ".join(skipped))
    print(f"{split}: {count} examples -> {arguments.out_dir} ({len(skipped)} unusable files left out)")
  with open(os.path.join(arguments.out_dir, "info.json"), "w") as f:
    json.dump(info, f, indent=2)


if __name__ == "__main__":
  main()
