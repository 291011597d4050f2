"""On-disk face datasets in the layouts users already have.

Each class is a random-access source ``Source(data_config, split)`` (see
hallujax.data.sources) reading ``data_config.data_dir``:

    CelebAFolder      img_align_celeba/*.jpg, list_eval_partition.txt (official
                      0/1/2 = train/validation/test), identity_CelebA.txt,
                      list_landmarks_align_celeba.txt. Images are centre-cropped
                      to 178×178 (rows 20..197); "landmarks5" follow the crop.
    VGGFace2Folder    {train,test}/<identity>/<image>.jpg with optional
                      bb_landmark/loose_bb_{train,test}.csv and
                      loose_landmark_{train,test}.csv. Faces are cut out square
                      around the loose box enlarged 1.3× (whole image without
                      boxes). train/ is the train split; test/'s identities are
                      halved, first half validation, second half test.
    LfwFolder         <person>/<person>_0001.jpg (under data_dir or data_dir/lfw*)
                      and pairs.txt. LFW is an evaluation set: every split reads
                      all images; ``pairs()`` gives the verification protocol.
                      Centre crop (data.crop, default 150).
    ImageFolder       images directly in data_dir, or in identity subfolders.
                      train/validation/test subfolders are used as splits when
                      present, else files are split 18:1:1 by sorted position.
    PairedFolder      VIS/ with TH/ (thermal pairings) or NIR/ (near-infrared
                      pairings), files matched by name stem, or by
                      <subject>/<stem> (VIS-TH, ARL-VTF); optional
                      landmarks/<stem>.txt (68 lines "x y" of the VIS image).
                      Identity = the subject folder, else the name stem before
                      the first "_". Splits: data_dir/<split>/VIS, ... when
                      present; else data.subject_split=(train, validation,
                      test) subject counts (paper 000 §4: VIS-TH (40, 0, 10),
                      ARL-VTF (160, 20, 40)); else 18:1:1 by position.

Bad input: unreadable or corrupt files are skipped (the next readable example
is returned instead) and counted; the count is logged once per pass over the
source, or the run fails on the first one with ``data.strict=True``. Images
smaller than ``data.target_size`` on either side, or of more than
``data.max_pixels`` pixels, are rejected with their file name (an error with
``strict``, else skipped and counted). How one file is read (colour modes,
16-bit images and ``data.bit_depth_range``, the pixel limit read from the
header, EXIF orientation) is hallujax.data.image_files' part. A missing
dataset directory raises FileNotFoundError saying what layout was expected and
how to prepare it.
"""

from __future__ import annotations

import abc
import csv
import logging
import os
import threading

import numpy as np

from hallujax.data.image_files import (BadImageError, centre_crop, check_size, check_value_range, cut, image_size,
                                       read_image)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "validation", "test")


def missing_directory(path: str, source: str, layout: str) -> FileNotFoundError:
  return FileNotFoundError(
      f"config.data.data_dir={path!r} does not hold the {source} dataset. Expected layout: {layout}. "
      f"Download the dataset yourself (its licence forbids redistribution), unpack it there, or "
      f"convert it once to array_record shards with `python -m hallujax.prepare --source {source} "
      f"--data_dir DIR --out_dir SHARDS` and read those with data.source='prepared'.")


def _split_by_position(items: list, split: str) -> list:
  """Deterministic 18:1:1 split by sorted position (train, validation, test)."""
  bucket = {"train": range(0, 18), "validation": (18,), "test": (19,)}[split]
  return [item for k, item in enumerate(items) if k % 20 in bucket]


def subjects_of_split(subjects: list[str], counts: tuple[int, ...], split: str) -> set[str]:
  """Paper 000 §4's subject-disjoint splits: `counts` = (train, validation, test) subjects, drawn at random
  with a fixed seed ("randomly selecting data from 40 subjects ... the remaining 10 subjects are used as the
  testing set"; ARL-VTF: 160 / 20 / 40)."""
  if len(counts) != 3 or sum(counts) > len(subjects) or min(counts) < 0:
    raise ValueError(f"config.data.subject_split={counts!r}: expected (train, validation, test) subject counts "
                     f"summing to at most the {len(subjects)} subjects found.")
  order = [subjects[k] for k in np.random.default_rng(0).permutation(len(subjects))]
  start = {"train": 0, "validation": counts[0], "test": counts[0] + counts[1]}[split]
  return set(order[start:start + counts[SPLITS.index(split)]])


def _images_under(directory: str) -> list[str]:
  found = []
  for root, _, files in os.walk(directory):
    found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
  return sorted(found)


class _FolderSource(abc.ABC):
  """Shared machinery: bad-file skipping and counting, size checks, the contract."""

  source_name = ""

  def __init__(self, data_config, split: str):
    if split not in SPLITS:
      raise ValueError(f"split={split!r}; expected one of {', '.join(SPLITS)}.")
    self.split = split
    self.data_dir = os.path.expanduser(data_config.data_dir or "")
    self.strict = bool(data_config.strict)
    self.minimum_size = int(data_config.target_size or 0)
    self.pairing = data_config.pairing
    self.value_range = check_value_range(data_config.bit_depth_range)
    self.max_pixels = int(data_config.max_pixels)
    self._bad = {}
    self._reads = 0
    self._reported_at = 0
    self._lock = threading.Lock()

  def read(self, path: str, mode: str = "RGB") -> np.ndarray:
    """`read_image` with this dataset's high-bit-depth rule and pixel limit (config.data.bit_depth_range,
    config.data.max_pixels)."""
    return read_image(path, mode, self.value_range, self.max_pixels)

  def _require_same_view(self):
    if self.pairing != "same_view":
      raise ValueError(f"The {self.source_name} source gives single visible images; config.data.pairing="
                       f"{self.pairing!r} needs paired data (use faceworld or paired_folder).")

  def __len__(self) -> int:
    return len(self.items)

  @property
  def bad_files(self) -> dict[str, str]:
    """{path: reason} of the files skipped so far."""
    return dict(self._bad)

  @abc.abstractmethod
  def load(self, index: int) -> dict[str, np.ndarray]:
    """Example `index` of this layout (each layout reads its own files)."""

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {self.source_name} {self.split} split of length {len(self)}.")
    with self._lock:
      self._reads += 1
      if self._bad and self._reads - self._reported_at >= len(self):   # once per pass over the source
        self._reported_at = self._reads
        logging.warning("%s %s: skipped %d unusable image files so far (e.g. %s).", self.source_name,
                        self.split, len(self._bad), next(iter(self._bad.values())))
    for attempt in range(len(self)):
      k = (index + attempt) % len(self)
      try:
        return self.load(k)
      except BadImageError as error:
        if self.strict:
          raise
        with self._lock:
          if str(error) not in self._bad.values():
            self._bad[self.describe(k)] = str(error)
    raise BadImageError(f"{self.source_name} {self.split}: no readable image in {self.data_dir}.")

  def describe(self, index: int) -> str:
    return str(self.items[index])

  def original(self, index: int) -> tuple[str, tuple[int, int, int, int] | None] | None:
    """(file, crop box) whose decoded pixels, cut by the box (`cut`), are example `index`'s "target"
    (and "input": same-view layouts); None where the example is not one file's crop.
    hallujax.data.record_writing stores such files' original bytes instead of re-encoding them."""
    return None


# ----- CelebA ----------------------------------------------------------------------


class CelebAFolder(_FolderSource):
  source_name = "celeba_folder"
  LAYOUT = ("img_align_celeba/*.jpg, list_eval_partition.txt, identity_CelebA.txt and "
            "list_landmarks_align_celeba.txt in data_dir")
  CROP_TOP, CROP = 20, 178

  def __init__(self, data_config, split: str):
    super().__init__(data_config, split)
    self._require_same_view()
    images = os.path.join(self.data_dir, "img_align_celeba")
    partition_file = os.path.join(self.data_dir, "list_eval_partition.txt")
    if not os.path.isdir(images) or not os.path.isfile(partition_file):
      raise missing_directory(self.data_dir, self.source_name, self.LAYOUT)
    wanted = str(SPLITS.index(split))
    with open(partition_file) as f:
      names = [line.split()[0] for line in f if line.strip() and line.split()[1] == wanted]
    identities = self._table(os.path.join(self.data_dir, "identity_CelebA.txt"), skip=0)
    landmarks = self._table(os.path.join(self.data_dir, "list_landmarks_align_celeba.txt"), skip=2)
    self.items = [os.path.join(images, name) for name in names]
    self.identities = [int(identities[n][0]) - 1 if n in identities else -1 for n in names]
    self.landmarks = [np.array(landmarks[n], np.float32).reshape(5, 2) if n in landmarks else None for n in names]

  @staticmethod
  def _table(path: str, skip: int) -> dict[str, list[str]]:
    if not os.path.isfile(path):
      return {}
    with open(path) as f:
      lines = f.read().splitlines()[skip:]
    return {parts[0]: parts[1:] for parts in (line.split() for line in lines) if len(parts) > 1}

  def box(self, height: int, width: int) -> tuple[int, int, int, int]:
    """The 178×178 crop at row 20, centred horizontally."""
    return self.CROP_TOP, (width - self.CROP) // 2, self.CROP, self.CROP

  def original(self, index: int):
    path = self.items[index]
    return path, self.box(*image_size(path))

  def load(self, index: int) -> dict[str, np.ndarray]:
    path = self.items[index]
    full = self.read(path)
    check_size(full, self.CROP, path)
    top, left, _, _ = box = self.box(*full.shape[:2])
    image = cut(full, box)
    check_size(image, self.minimum_size, path)
    example = {"input": image, "target": image, "identity": np.int32(self.identities[index])}
    if self.landmarks[index] is not None:
      example["landmarks5"] = self.landmarks[index] - np.array([left, top], np.float32)
    return example


# ----- VGGFace2 --------------------------------------------------------------------


class VGGFace2Folder(_FolderSource):
  source_name = "vggface2_folder"
  LAYOUT = ("train/<identity>/<image>.jpg and test/<identity>/<image>.jpg, optional "
            "bb_landmark/loose_bb_{train,test}.csv and loose_landmark_{train,test}.csv")

  def __init__(self, data_config, split: str):
    super().__init__(data_config, split)
    self._require_same_view()
    part = "train" if split == "train" else "test"
    root = os.path.join(self.data_dir, part)
    if not os.path.isdir(root):
      raise missing_directory(self.data_dir, self.source_name, self.LAYOUT)
    people = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if split != "train":
      half = len(people) // 2
      people = people[:half] if split == "validation" else people[half:]
    all_people = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    label = {person: k for k, person in enumerate(all_people)}
    self.items, self.identities = [], []
    for person in people:
      files = sorted(f for f in os.listdir(os.path.join(root, person)) if f.lower().endswith(IMAGE_EXTENSIONS))
      self.items += [os.path.join(root, person, f) for f in files]
      self.identities += [label[person] + (0 if part == "train" else 100_000)] * len(files)
    self.boxes = self._csv(os.path.join(self.data_dir, "bb_landmark", f"loose_bb_{part}.csv"))
    self.points = self._csv(os.path.join(self.data_dir, "bb_landmark", f"loose_landmark_{part}.csv"))
    self.root = root

  @staticmethod
  def _csv(path: str) -> dict[str, list[float]]:
    if not os.path.isfile(path):
      return {}
    with open(path) as f:
      rows = list(csv.reader(f))
    return {row[0]: [float(v) for v in row[1:]] for row in rows[1:] if row}

  def _key(self, path: str) -> str:
    return os.path.splitext(os.path.relpath(path, self.root))[0].replace(os.sep, "/")

  def box(self, index: int, height: int, width: int) -> tuple[int, int, int, int]:
    """The loose box enlarged 1.3× to a square (it may reach past the image: edges repeat),
    or the centred square of the image's shorter side when the CSV has no box."""
    key = self._key(self.items[index])
    if key in self.boxes:
      x, y, w, h = self.boxes[key]
      side = 1.3 * max(w, h)
      left, top = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
      side = int(round(side))
      return top, left, side, side
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side

  def original(self, index: int):
    path = self.items[index]
    return path, self.box(index, *image_size(path))

  def load(self, index: int) -> dict[str, np.ndarray]:
    path = self.items[index]
    full = self.read(path)
    top, left, _, _ = box = self.box(index, *full.shape[:2])
    image = cut(full, box)
    example = {"identity": np.int32(self.identities[index])}
    key = self._key(path)
    if key in self.boxes and key in self.points:
      example["landmarks5"] = (np.array(self.points[key], np.float32).reshape(5, 2)
                               - np.array([left, top], np.float32))
    check_size(image, self.minimum_size, path)
    example.update(input=image, target=image)
    return example


# ----- LFW -------------------------------------------------------------------------


class LfwFolder(_FolderSource):
  source_name = "lfw_folder"
  LAYOUT = "<person>/<person>_0001.jpg folders (in data_dir or data_dir/lfw*) and pairs.txt"

  def __init__(self, data_config, split: str):
    super().__init__(data_config, split)
    self._require_same_view()
    self.crop = int(data_config.crop or 150)
    root = self.data_dir
    if os.path.isdir(root):
      nested = sorted(d for d in os.listdir(root) if d.lower().startswith("lfw") and os.path.isdir(os.path.join(root, d)))
      if nested:
        root = os.path.join(root, nested[0])
    if not os.path.isdir(root):
      raise missing_directory(self.data_dir, self.source_name, self.LAYOUT)
    people = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not people:
      raise missing_directory(self.data_dir, self.source_name, self.LAYOUT)
    self.items, self.identities, self.index_of = [], [], {}
    for label, person in enumerate(people):
      for f in sorted(os.listdir(os.path.join(root, person))):
        if f.lower().endswith(IMAGE_EXTENSIONS):
          self.index_of[os.path.splitext(f)[0]] = len(self.items)
          self.items.append(os.path.join(root, person, f))
          self.identities.append(label)
    self.pairs_file = next((p for p in (os.path.join(self.data_dir, "pairs.txt"), os.path.join(root, "pairs.txt"))
                            if os.path.isfile(p)), None)

  def pairs(self) -> list[tuple[int, int, bool]]:
    """LFW's verification pairs as (index, index, same person), in pairs.txt order."""
    if self.pairs_file is None:
      raise FileNotFoundError(f"No pairs.txt in {self.data_dir}; download it from the LFW site next to the images.")
    result = []
    with open(self.pairs_file) as f:
      for line in f.read().splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3:
          a, b, same = f"{parts[0]}_{int(parts[1]):04d}", f"{parts[0]}_{int(parts[2]):04d}", True
        elif len(parts) == 4:
          a, b, same = f"{parts[0]}_{int(parts[1]):04d}", f"{parts[2]}_{int(parts[3]):04d}", False
        else:
          continue
        if a in self.index_of and b in self.index_of:
          result.append((self.index_of[a], self.index_of[b], same))
    return result

  def original(self, index: int):
    path = self.items[index]
    height, width = image_size(path)
    return path, ((height - self.crop) // 2, (width - self.crop) // 2, self.crop, self.crop)

  def load(self, index: int) -> dict[str, np.ndarray]:
    path = self.items[index]
    image, _ = centre_crop(self.read(path), self.crop, name=path)
    check_size(image, self.minimum_size, path)
    return {"input": image, "target": image, "identity": np.int32(self.identities[index])}


# ----- plain and paired folders ----------------------------------------------------


def _split_root(data_dir: str, split: str) -> tuple[str, bool]:
  """data_dir/<split> when the dataset has split subfolders, else data_dir (split by position)."""
  candidate = os.path.join(data_dir, split)
  return (candidate, True) if os.path.isdir(candidate) else (data_dir, False)


class ImageFolder(_FolderSource):
  source_name = "image_folder"
  LAYOUT = "images in data_dir, optionally in <identity>/ subfolders and train|validation|test/ folders"

  def __init__(self, data_config, split: str):
    super().__init__(data_config, split)
    self._require_same_view()
    if not os.path.isdir(self.data_dir):
      raise missing_directory(self.data_dir, self.source_name, self.LAYOUT)
    root, has_splits = _split_root(self.data_dir, split)
    files = _images_under(root)
    if not has_splits:
      files = [f for f in files if os.path.relpath(f, root).split(os.sep)[0] not in SPLITS]
      files = _split_by_position(files, split)
    if not files:
      raise missing_directory(self.data_dir, self.source_name, self.LAYOUT)
    folders = sorted({os.path.dirname(os.path.relpath(f, root)) for f in files})
    label = {folder: k for k, folder in enumerate(folders)} if folders != [""] else {}
    self.items = files
    self.identities = [label.get(os.path.dirname(os.path.relpath(f, root)), -1) for f in files]

  def original(self, index: int):
    return self.items[index], None

  def load(self, index: int) -> dict[str, np.ndarray]:
    path = self.items[index]
    image = self.read(path)
    check_size(image, self.minimum_size, path)
    return {"input": image, "target": image, "identity": np.int32(self.identities[index])}


class PairedFolder(_FolderSource):
  source_name = "paired_folder"
  LAYOUT = ("VIS/ and TH/ (thermal) or NIR/ (near-infrared) folders with files matched by name (or by "
            "<subject>/<name>), optional landmarks/<stem>.txt, optionally inside train|validation|test/")

  def __init__(self, data_config, split: str):
    super().__init__(data_config, split)
    if not self.pairing.startswith(("thermal_", "nir_")):
      raise ValueError(f"paired_folder pairs VIS with TH or NIR images; config.data.pairing={self.pairing!r} "
                       f"should be one of thermal_aligned, thermal_unaligned, nir_aligned, nir_unaligned.")
    modality = "TH" if self.pairing.startswith("thermal") else "NIR"
    self.input_channels = int(data_config.input_channels)
    root, has_splits = _split_root(self.data_dir, split)
    visible_dir, other_dir = os.path.join(root, "VIS"), os.path.join(root, modality)
    if not os.path.isdir(visible_dir) or not os.path.isdir(other_dir):
      raise missing_directory(self.data_dir, self.source_name, self.LAYOUT)
    stem = lambda path: os.path.splitext(os.path.relpath(path, visible_dir if path.startswith(visible_dir) else other_dir))[0]
    visible = {stem(p): p for p in _images_under(visible_dir)}
    other = {stem(p): p for p in _images_under(other_dir)}
    names = sorted(set(visible) & set(other))
    # The subject: the folder under VIS/ (VIS-TH, ARL-VTF: VIS/<subject>/<image>), else the file name's prefix.
    person = lambda name: name.split(os.sep)[0] if os.sep in name else os.path.basename(name).split("_")[0]
    people = sorted({person(n) for n in names})
    subject_split = tuple(data_config.subject_split or ())
    if not has_splits and subject_split:
      names = [n for n in names if person(n) in subjects_of_split(people, subject_split, split)]
    elif not has_splits:
      names = _split_by_position(names, split)
    if not names:
      raise missing_directory(self.data_dir, self.source_name, self.LAYOUT + f" (no VIS/{modality} names match)")
    label = {name: k for k, name in enumerate(people)}
    self.items = [(visible[n], other[n]) for n in names]
    self.identities = [label[person(n)] for n in names]
    self.landmark_files = [os.path.join(root, "landmarks", n + ".txt") for n in names]

  def load(self, index: int) -> dict[str, np.ndarray]:
    visible_path, other_path = self.items[index]
    target = self.read(visible_path)
    source = self.read(other_path, mode="L" if self.input_channels == 1 else "RGB")
    for image, path in ((target, visible_path), (source, other_path)):
      check_size(image, self.minimum_size, path)
    example = {"input": source, "target": target, "identity": np.int32(self.identities[index])}
    if os.path.isfile(self.landmark_files[index]):
      points = np.loadtxt(self.landmark_files[index], dtype=np.float32).reshape(-1, 2)
      if points.shape == (68, 2):
        example["landmarks"] = points
    return example

