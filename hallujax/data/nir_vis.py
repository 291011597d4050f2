"""CASIA NIR-VIS 2.0 for NIR → VIS training (paper 001 §4.1): its protocol files, a landmark cache, a source.

The layout (the official release)::

    NIR-VIS-2.0/s1 … s4/NIR/<subject>/<n>.bmp
    NIR-VIS-2.0/s1 … s4/VIS/<subject>/<n>.jpg
    NIR-VIS-2.0/protocols/nir_train_K.txt, vis_train_K.txt     (K = 1 … 10: the training subjects of fold K)
    NIR-VIS-2.0/protocols/nir_probe_K.txt, vis_gallery_K.txt   (the test subjects: probes and one gallery image each)

List lines are Windows paths (``s2\\VIS\\10117\\001.jpg``); a listed extension that is not on disk is tried
as .bmp / .jpg / .png (the release's lists and files disagree for some sessions).

PCFH needs 68 landmarks of both images of a pair (its local paths and the IDW warp read them). They are
computed once, by dlib (the "eval" extra), for every image the protocols list::

    python -m hallujax.data.nir_vis --data_dir NIR-VIS-2.0 [--workers 8]

which writes ``NIR-VIS-2.0/landmarks.json`` ({relative path: 68 × (x, y), or null where no face was
found}); rerunning it detects only the images not yet in the file. The source then reads it:

    --config.data.source=casia_nir_vis --config.data.data_dir=NIR-VIS-2.0 [--config.data.fold=1]

Examples follow paper 001's unaligned pairs: each NIR image of the split is paired with a visible image
of the same subject (a different capture: another session, pose and expression), both aligned by a
similarity transform of their own landmarks to the ArcFace template scaled to ``data.target_size``.
Splits: "train" is fold K's training lists; "validation" and "test" are its probe NIR images, paired
with the subject's gallery image. CASIA has no visible image in the NIR image's own pose, so
"aligned_target" (PCFH's PSNR reference in face-world runs) is the paired visible image itself.
Images whose landmarks are null are left out and counted in the log.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re

import numpy as np

from hallujax.data import alignment
from hallujax.data.folders import _FolderSource, missing_directory

EXTENSIONS = (".bmp", ".jpg", ".png")
CACHE_NAME = "landmarks.json"
LAYOUT = ("CASIA NIR-VIS 2.0: s1..s4/{NIR,VIS}/<subject>/<image> and protocols/nir_train_K.txt, vis_train_K.txt, "
          "nir_probe_K.txt, vis_gallery_K.txt")


# ----------------------------------------------------------------------------- the protocol files


def protocol_folds(data_dir: str) -> list[int]:
  """Fold numbers K with both protocols/vis_gallery_K.txt and protocols/nir_probe_K.txt."""
  directory = os.path.join(data_dir, "protocols")
  if not os.path.isdir(directory):
    raise missing_directory(data_dir, "CASIA NIR-VIS 2.0", LAYOUT + " (no protocols/ directory)")
  folds = set()
  for path in glob.glob(os.path.join(directory, "vis_gallery_*.txt")):
    match = re.fullmatch(r"vis_gallery_(\d+)\.txt", os.path.basename(path))
    if match and os.path.isfile(os.path.join(directory, f"nir_probe_{match.group(1)}.txt")):
      folds.add(int(match.group(1)))
  if not folds:
    raise FileNotFoundError(f"{directory} has no vis_gallery_K.txt with a matching nir_probe_K.txt.")
  return sorted(folds)


def resolve(data_dir: str, entry: str) -> str:
  """A protocol line's image on disk: backslashes made separators, the extension tried as listed, then others."""
  relative = entry.strip().split()[0].replace("\\", "/")
  stem, extension = os.path.splitext(os.path.join(data_dir, relative))
  for candidate in (extension, *(e for e in EXTENSIONS if e != extension.lower())):
    if os.path.isfile(stem + candidate):
      return stem + candidate
  raise FileNotFoundError(f"{relative} (listed in the protocol) is not under {data_dir} as "
                          f"{', '.join((extension, *EXTENSIONS))}.")


def subject_of(entry: str) -> str:
  """The subject folder of a protocol line (``s2\\VIS\\10117\\001.jpg`` -> "10117")."""
  parts = entry.strip().split()[0].replace("\\", "/").split("/")
  if len(parts) < 2:
    raise ValueError(f"Protocol line {entry!r} is not <session>\\<NIR|VIS>\\<subject>\\<image>.")
  return parts[-2]


def read_list(data_dir: str, name: str) -> list[tuple[str, str]]:
  """(image path, subject) of each non-empty line of protocols/<name>."""
  path = os.path.join(data_dir, "protocols", name)
  if not os.path.isfile(path):
    raise missing_directory(data_dir, "CASIA NIR-VIS 2.0", LAYOUT + f" (protocols/{name} is missing)")
  with open(path) as f:
    entries = [line for line in f if line.strip()]
  return [(resolve(data_dir, entry), subject_of(entry)) for entry in entries]


SPLIT_LISTS = {"train": ("nir_train_{}.txt", "vis_train_{}.txt"),
               "validation": ("nir_probe_{}.txt", "vis_gallery_{}.txt"),
               "test": ("nir_probe_{}.txt", "vis_gallery_{}.txt")}


# ----------------------------------------------------------------------------- the landmark cache


def read_cache(data_dir: str) -> dict[str, list | None]:
  path = os.path.join(data_dir, CACHE_NAME)
  return json.load(open(path)) if os.path.isfile(path) else {}


def _detect(path: str) -> list | None:
  from hallujax import photos
  detector = _detect.detector = getattr(_detect, "detector", None) or photos.Detector()
  faces = detector(photos.read_photo(path))
  return faces[0].landmarks.tolist() if faces else None


def build_cache(data_dir: str, workers: int = 1, log=print) -> dict[str, list | None]:
  """Detects 68 landmarks in every image the protocol lists name and that the cache lacks; saves as it goes."""
  listed = set()
  for name in sorted(os.listdir(os.path.join(data_dir, "protocols"))):
    if name.endswith(".txt") and name.startswith(("nir_", "vis_")):
      listed.update(path for path, _ in read_list(data_dir, name))
  cache = read_cache(data_dir)
  todo = sorted(path for path in listed if os.path.relpath(path, data_dir) not in cache)
  log(f"{len(listed)} images listed, {len(listed) - len(todo)} already in {CACHE_NAME}, {len(todo)} to detect "
      f"with {workers} worker(s).")
  if workers > 1:
    import multiprocessing
    pool = multiprocessing.get_context("spawn").Pool(workers)
    results = pool.imap(_detect, todo, chunksize=16)
  else:
    pool, results = None, map(_detect, todo)
  try:
    for count, (path, points) in enumerate(zip(todo, results), 1):
      cache[os.path.relpath(path, data_dir)] = points
      if count % 500 == 0 or count == len(todo):
        write_cache(data_dir, cache)
        log(f"  {count}/{len(todo)} detected, {sum(v is None for v in cache.values())} without a face so far")
  finally:
    write_cache(data_dir, cache)
    if pool is not None:
      pool.terminate()
  return cache


def write_cache(data_dir: str, cache: dict) -> None:
  """Written to a temporary file and renamed: an interrupted write never leaves a half file."""
  path = os.path.join(data_dir, CACHE_NAME)
  with open(path + ".partial", "w") as f:
    json.dump(cache, f)
  os.replace(path + ".partial", path)


# ----------------------------------------------------------------------------- the source


class CasiaNirVisFolder(_FolderSource):
  """Unaligned NIR → VIS pairs of CASIA NIR-VIS 2.0 (see the module docstring)."""

  source_name = "casia_nir_vis"
  LAYOUT = LAYOUT

  def __init__(self, data_config, split: str):
    super().__init__(data_config, split)
    if self.pairing != "nir_unaligned":
      raise ValueError(f"casia_nir_vis gives unaligned NIR → VIS pairs; config.data.pairing={self.pairing!r} "
                       "should be nir_unaligned.")
    self.fold = int(data_config.get("fold", 1))
    self.size = int(data_config.target_size)
    self.input_channels = int(data_config.get("input_channels", 1))
    cache = read_cache(self.data_dir)
    if not cache:
      raise FileNotFoundError(f"{os.path.join(self.data_dir, CACHE_NAME)} is missing: compute the landmarks once "
                              f"with python -m hallujax.data.nir_vis --data_dir {self.data_dir}.")
    nir_list, vis_list = (name.format(self.fold) for name in SPLIT_LISTS[split])
    with_points = lambda pairs: [(path, subject, cache.get(os.path.relpath(path, self.data_dir)))
                                 for path, subject in pairs]
    nir = with_points(read_list(self.data_dir, nir_list))
    vis = with_points(read_list(self.data_dir, vis_list))
    uncached = [path for path, _, points in nir + vis if os.path.relpath(path, self.data_dir) not in cache]
    if uncached:
      raise FileNotFoundError(f"{len(uncached)} listed images have no entry in {CACHE_NAME} (e.g. {uncached[0]}): "
                              f"rerun python -m hallujax.data.nir_vis --data_dir {self.data_dir}.")
    self.visible: dict[str, list] = {}
    for path, subject, points in vis:
      if points is not None:
        self.visible.setdefault(subject, []).append((path, np.asarray(points, np.float32)))
    self.items = [(path, subject, np.asarray(points, np.float32)) for path, subject, points in nir
                  if points is not None and subject in self.visible]
    left_out = len(nir) + len(vis) - len(self.items) - sum(map(len, self.visible.values()))
    if left_out:
      logging.warning("casia_nir_vis fold %d %s: %d images left out (no face found, or no visible image of the "
                      "subject).", self.fold, split, left_out)
    if not self.items:
      raise missing_directory(self.data_dir, self.source_name, LAYOUT + f" (no usable pairs in fold {self.fold})")
    subjects = sorted(self.visible)
    self.label = {subject: k for k, subject in enumerate(subjects)}

  def aligned(self, path: str, points: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The image aligned to the ArcFace template at target_size², and its landmarks there."""
    template_size, template = alignment.TEMPLATES["arcface112"]
    scale = self.size / template_size
    matrix = alignment.similarity_transform(alignment.five_from_68(points), (template + 0.5) * scale - 0.5)
    image = self.read(path, mode)
    if image.ndim == 2:
      image = image[..., None]
    return alignment.warp_affine(image, matrix, self.size), alignment.transform_points(matrix, points)

  def load(self, index: int) -> dict[str, np.ndarray]:
    nir_path, subject, nir_points = self.items[index]
    choices = self.visible[subject]
    # A fixed choice per example (so an epoch is reproducible), spread over the subject's visible images.
    visible_path, visible_points = choices[(index * 7919) % len(choices)]
    nir, nir_landmarks = self.aligned(nir_path, nir_points, "L" if self.input_channels == 1 else "RGB")
    visible, landmarks = self.aligned(visible_path, visible_points, "RGB")
    return {"input": nir, "input_landmarks": nir_landmarks.astype(np.float32), "target": visible,
            "landmarks": landmarks.astype(np.float32), "aligned_target": visible,
            "identity": np.int32(self.label[subject])}

  def describe(self, index: int) -> str:
    return self.items[index][0]


def main(argv=None) -> None:
  import argparse
  parser = argparse.ArgumentParser(description="Detect 68 landmarks once for CASIA NIR-VIS 2.0 (landmarks.json).")
  parser.add_argument("--data_dir", required=True, help="NIR-VIS-2.0's root (s1..s4/ and protocols/).")
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Detection processes.")
  arguments = parser.parse_args(argv)
  protocol_folds(arguments.data_dir)   # the layout is checked before any detection starts
  cache = build_cache(arguments.data_dir, arguments.workers)
  print(f"{os.path.join(arguments.data_dir, CACHE_NAME)}: {len(cache)} images, "
        f"{sum(v is None for v in cache.values())} without a face.")


if __name__ == "__main__":
  main()
