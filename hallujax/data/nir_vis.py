"""NIR-VIS face databases for NIR → VIS training and evaluation (paper 001 §4.1): CASIA NIR-VIS 2.0,
BUAA-VisNir and Oulu-CASIA NIR-VIS; their layouts, protocols, a landmark cache, the sources.

CASIA NIR-VIS 2.0 (``layout="casia"``, source ``casia_nir_vis``), the official release::

    NIR-VIS-2.0/s1 … s4/NIR/<subject>/<n>.bmp
    NIR-VIS-2.0/s1 … s4/VIS/<subject>/<n>.jpg
    NIR-VIS-2.0/protocols/nir_train_K.txt, vis_train_K.txt     (K = 1 … 10: the training subjects of fold K)
    NIR-VIS-2.0/protocols/nir_probe_K.txt, vis_gallery_K.txt   (the test subjects: probes and one gallery image each)

List lines are Windows paths (``s2\\VIS\\10117\\001.jpg``); a listed extension that is not on disk is tried
as .bmp / .jpg / .png (the release's lists and files disagree for some sessions).

BUAA-VisNir (``layout="buaa"``, source ``buaa_vis_nir``): 150 subjects, each with VIS-NIR pairs captured
simultaneously by one multi-spectral camera in several poses and expressions, and VIS images under varied
illumination. We could not confirm the release's own file naming (one public evaluation list names a
subject's ``1/1.bmp`` as its VIS gallery image and ``1/2.bmp`` as a NIR probe), so this module reads a
simple layout that any copy maps onto by sorting each subject's images by modality::

    BUAA-VisNir/NIR/<subject>/<image>      (e.g. NIR/1/2.bmp, NIR/1/4.bmp, …)
    BUAA-VisNir/VIS/<subject>/<image>      (e.g. VIS/1/1.bmp, VIS/1/3.bmp, …)

Subject folders are sorted naturally (2 before 10). Put in each subject's folders the images the protocol
uses: the comparisons in paper 001 Table 3 use 9 VIS-NIR pairs per subject (900 training images of 50
subjects, 1800 test images of 100); every image found is used.

Oulu-CASIA NIR-VIS (``layout="oulu"``, source ``oulu_casia_nir_vis``): the Oulu-CASIA NIR&VIS facial
expression release, 80 subjects × 6 expressions (Anger, Disgust, Fear, Happiness, Sadness, Surprise)
filmed as frame sequences by a NIR (NI) and a visible (VL) camera under three illuminations (Strong =
normal indoor, Weak, Dark). ``data_dir`` is the release's ``OriginalImg/`` folder (or ``PreprocessImg/``,
which has the same tree)::

    OriginalImg/NI/Strong/P001/Anger/000.jpeg …
    OriginalImg/VL/Strong/P001/Anger/000.jpeg …

Only one illumination is read: Strong, the normal indoor light, unless ``--illumination`` (the landmark
and protocol commands) or a ``data.illumination`` field in the config says otherwise. From each expression
sequence 8 frames evenly spaced over it are taken, for each camera (the protocol takes eight images of each
expression from each camera at random; evenly spaced frames make the choice reproducible): 48 NIR + 48 VIS
per subject.

Splits of BUAA and Oulu (single split, subject-disjoint). Paper 001 §4.1 gives no counts: "For the
BUAA-VisNir database and the Oulu-CASIA NIR-VIS database, the training sets in these two databases are not
used. We directly employ our model trained on the first fold of CASIA NIR-VIS 2.0 and test our model on
the testing sets in the two databases". Those testing sets are the ones of the methods its Tables 3-4
compare with (IDR, He et al. 2017; ADFL; Light CNN), whose protocol is, in our words (that text is not in
the project's papers):

- BUAA-VisNir: 50 subjects train (900 images), the remaining 100 subjects test (1800 images); only one
  VIS image of each subject is in the gallery, every NIR image is a probe. Here: the first 50 subjects in
  natural order train, the next 100 test; the gallery image is a subject's first VIS image.
- Oulu-CASIA: 40 of the 80 subjects (10 from Oulu, 30 from CASIA; which ones is not published), 20 train
  and 20 test; all VIS images of the test subjects are the gallery, all their NIR images the probes.
  Here: the first 40 subjects present in both cameras, in natural order: 20 train, then 20 test.

Either database's subjects can be named instead in ``<data_dir>/protocols/train_subjects.txt`` and
``test_subjects.txt`` (one subject folder name a line), e.g. to reproduce another paper's exact subsets.

Landmarks. PCFH needs 68 landmarks of both images of a pair (its local paths and the IDW warp read them).
They are computed once, by dlib (the "eval" extra), for every image the protocol uses::

    python -m hallujax.tools.nir_vis_landmarks --data_dir NIR-VIS-2.0 [--workers 8]
    python -m hallujax.tools.nir_vis_landmarks --data_dir BUAA-VisNir --layout buaa
    python -m hallujax.tools.nir_vis_landmarks --data_dir OriginalImg --layout oulu [--illumination Strong]

which writes ``<data_dir>/landmarks.json`` ({relative path: 68 × (x, y), or null where no face was
found}); rerunning it detects only the images not yet in the file. The sources then read it:

    --config.data.source=casia_nir_vis --config.data.data_dir=NIR-VIS-2.0 [--config.data.fold=1]
    --config.data.source=buaa_vis_nir --config.data.data_dir=BUAA-VisNir
    --config.data.source=oulu_casia_nir_vis --config.data.data_dir=OriginalImg

Examples follow paper 001's unaligned pairs: each NIR image of the split is paired with a visible image
of the same subject (a different capture), both aligned by a similarity transform of their own landmarks
to the ArcFace template scaled to ``data.target_size``. Splits: "train" is the training subjects' (CASIA:
fold K's training lists) NIR images paired with their visible images; "validation" and "test" are the
test subjects' NIR probes, paired with the subject's gallery images. No layout says which visible image
shares a NIR image's pose (BUAA's simultaneous pairs do, but the layout read here does not record them),
so "aligned_target" (PCFH's PSNR reference in face-world runs) is the paired visible image itself.
Images whose landmarks are null are left out and counted in the log.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import re

import numpy as np

from hallujax.data import alignment
from hallujax.data.folders import IMAGE_EXTENSIONS, _FolderSource, missing_directory

EXTENSIONS = (".bmp", ".jpg", ".png")
CACHE_NAME = "landmarks.json"
LAYOUT = ("CASIA NIR-VIS 2.0: s1..s4/{NIR,VIS}/<subject>/<image> and protocols/nir_train_K.txt, vis_train_K.txt, "
          "nir_probe_K.txt, vis_gallery_K.txt")
BUAA_LAYOUT = "BUAA-VisNir: NIR/<subject>/<image> and VIS/<subject>/<image> (see hallujax/data/nir_vis.py)"
OULU_LAYOUT = ("Oulu-CASIA NIR&VIS: the release's OriginalImg/ (or PreprocessImg/) folder, "
               "{NI,VL}/<illumination>/<subject>/<expression>/<frame>.jpeg")
LAYOUTS = ("casia", "buaa", "oulu")

Images = list[tuple[str, str]]   # (image path, subject)


# ----------------------------------------------------------------------------- CASIA's protocol files


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


def read_list(data_dir: str, name: str) -> Images:
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


def casia_images(data_dir: str) -> list[str]:
  """Every image any of the protocol lists names."""
  listed = set()
  for name in sorted(os.listdir(os.path.join(data_dir, "protocols"))):
    if name.endswith(".txt") and name.startswith(("nir_", "vis_")):
      listed.update(path for path, _ in read_list(data_dir, name))
  return sorted(listed)


def casia_split(data_dir: str, split: str, fold: int) -> tuple[Images, Images]:
  """(NIR images, VIS images) of fold K's split: training lists, or probes and gallery."""
  nir_list, vis_list = (name.format(fold) for name in SPLIT_LISTS[split])
  return read_list(data_dir, nir_list), read_list(data_dir, vis_list)


# ----------------------------------------------------------------------------- BUAA-VisNir and Oulu-CASIA


@dataclasses.dataclass(frozen=True)
class SubjectProtocol:
  """A single train / test split by subjects (module docstring: the protocol of paper 001 Tables 3-4)."""
  source: str                       # the source name, for messages
  layout: str                       # the expected layout, for messages
  train_subjects: int
  test_subjects: int
  gallery_per_subject: int | None   # VIS gallery images per test subject; None = all of them


PROTOCOLS = {
    # Paper 001 §4.1: "The BUAA-VISNIR face database consists of 150 subjects with 13 VIS-NIR pairs and 14 VIS
    # images varying in illumination." ... "test our model on the testing sets". The testing set of the methods
    # Table 3 compares with (our words): the 100 subjects left after 50 training subjects, one VIS image of
    # each in the gallery, every NIR image a probe.
    "buaa": SubjectProtocol("buaa_vis_nir", BUAA_LAYOUT, train_subjects=50, test_subjects=100,
                            gallery_per_subject=1),
    # Paper 001 §4.1: "The Oulu-CASIA NIR-VIS database contains 80 subjects with six typical expressions ... and
    # three illuminations". The protocol of the methods Table 4 compares with (our words): 40 of the subjects,
    # 20 train and 20 test; every VIS image of the test subjects in the gallery, every NIR image a probe.
    "oulu": SubjectProtocol("oulu_casia_nir_vis", OULU_LAYOUT, train_subjects=20, test_subjects=20,
                            gallery_per_subject=None),
}
FRAMES_PER_EXPRESSION = 8   # Oulu: eight images of each expression from each camera (the same protocol)


def natural_key(name: str) -> list:
  """Sort key with digit runs compared as numbers ("2" before "10", "P002" before "P010")."""
  return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _listing(directory: str) -> list[str]:
  return sorted(os.listdir(directory), key=natural_key) if os.path.isdir(directory) else []


def _image_files(directory: str) -> list[str]:
  return [os.path.join(directory, name) for name in _listing(directory)
          if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(directory, name))]


def _layout_error(data_dir: str, protocol: SubjectProtocol, what: str, wanted: tuple[str, ...]) -> FileNotFoundError:
  """missing_directory, naming a subfolder of data_dir that does hold the wanted folders (a common slip)."""
  for name in _listing(data_dir):
    if all(os.path.isdir(os.path.join(data_dir, name, w)) for w in wanted):
      what += f"; {os.path.join(data_dir, name)} has them: give that as the data directory"
      break
  return missing_directory(data_dir, protocol.source, f"{protocol.layout} ({what})")


def evenly_spaced(frames: list[str], count: int) -> list[str]:
  """`count` frames spread evenly over a sequence, first and last included (all of a shorter one)."""
  if len(frames) <= count:
    return list(frames)
  return [frames[int(k)] for k in np.round(np.linspace(0, len(frames) - 1, count))]


def buaa_subject_images(data_dir: str) -> dict[str, dict[str, list[str]]]:
  """{"NIR": {subject: images}, "VIS": {subject: images}} of the BUAA layout."""
  modalities = ("NIR", "VIS")
  missing = [m for m in modalities if not os.path.isdir(os.path.join(data_dir, m))]
  if missing:
    raise _layout_error(data_dir, PROTOCOLS["buaa"], f"no {' or '.join(m + '/' for m in missing)} directory",
                        modalities)
  return {m: {subject: _image_files(os.path.join(data_dir, m, subject))
              for subject in _listing(os.path.join(data_dir, m))} for m in modalities}


def oulu_subject_images(data_dir: str, illumination: str = "Strong") -> dict[str, dict[str, list[str]]]:
  """{"NIR": {subject: frames}, "VIS": {...}}: per expression sequence, FRAMES_PER_EXPRESSION evenly spaced."""
  cameras = {"NIR": os.path.join("NI", illumination), "VIS": os.path.join("VL", illumination)}
  missing = [c for c in cameras.values() if not os.path.isdir(os.path.join(data_dir, c))]
  if missing:
    found = sorted(set(_listing(os.path.join(data_dir, "NI"))) | set(_listing(os.path.join(data_dir, "VL"))))
    what = f"no {' or '.join(c + '/' for c in missing)} directory" + (f" (illuminations found: {', '.join(found)})"
                                                                     if found else "")
    raise _layout_error(data_dir, PROTOCOLS["oulu"], what, tuple(cameras.values()))
  images = {}
  for modality, camera in cameras.items():
    images[modality] = {}
    for subject in _listing(os.path.join(data_dir, camera)):
      sequences = _listing(os.path.join(data_dir, camera, subject))
      images[modality][subject] = [frame for expression in sequences for frame in evenly_spaced(
          _image_files(os.path.join(data_dir, camera, subject, expression)), FRAMES_PER_EXPRESSION)]
  return images


def _named_subjects(data_dir: str, name: str) -> list[str] | None:
  path = os.path.join(data_dir, "protocols", name)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def choose_subjects(data_dir: str, layout: str, subjects: list[str]) -> tuple[list[str], list[str]]:
  """(train subjects, test subjects): protocols/{train,test}_subjects.txt when given, else the protocol's
  counts in natural order (module docstring). `subjects` are those with both NIR and VIS images."""
  protocol = PROTOCOLS[layout]
  train, test = _named_subjects(data_dir, "train_subjects.txt"), _named_subjects(data_dir, "test_subjects.txt")
  if (train is None) != (test is None):
    raise FileNotFoundError(f"{os.path.join(data_dir, 'protocols')} names only one of train_subjects.txt and "
                            "test_subjects.txt; give both (one subject a line) or neither.")
  if train is not None:
    unknown = [s for s in train + test if s not in subjects]
    if unknown:
      raise ValueError(f"protocols/*_subjects.txt name {len(unknown)} subjects without both NIR and VIS images "
                       f"under {data_dir} (e.g. {unknown[0]!r}); expected subject folder names.")
    if set(train) & set(test):
      raise ValueError(f"protocols/train_subjects.txt and test_subjects.txt share subjects (e.g. "
                       f"{sorted(set(train) & set(test))[0]!r}); the protocol's splits are subject-disjoint.")
    return train, test
  needed = protocol.train_subjects + protocol.test_subjects
  if len(subjects) < needed:
    raise missing_directory(data_dir, protocol.source, f"{protocol.layout} ({len(subjects)} subjects have both NIR "
                            f"and VIS images; the protocol needs {needed}: {protocol.train_subjects} train + "
                            f"{protocol.test_subjects} test)")
  ordered = sorted(subjects, key=natural_key)
  return ordered[:protocol.train_subjects], ordered[protocol.train_subjects:needed]


def subject_images(data_dir: str, layout: str, illumination: str = "Strong") -> dict[str, dict[str, list[str]]]:
  if layout == "buaa":
    return buaa_subject_images(data_dir)
  if layout == "oulu":
    return oulu_subject_images(data_dir, illumination)
  raise ValueError(f"layout={layout!r} has no subject folders; expected one of {', '.join(PROTOCOLS)}.")


def single_split_images(data_dir: str, layout: str, split: str, illumination: str = "Strong",
                        gallery_per_subject: int | None | str = "protocol") -> tuple[Images, Images]:
  """(NIR images, VIS images) of a split of BUAA or Oulu: the training subjects' images, or (validation and
  test) the test subjects' NIR probes and VIS gallery. `gallery_per_subject`: "protocol" (the database's
  rule), or a count of VIS images per subject (the first ones in natural order), or None for all."""
  images = subject_images(data_dir, layout, illumination)
  subjects = [s for s in images["NIR"] if images["NIR"][s] and images["VIS"].get(s)]
  train, test = choose_subjects(data_dir, layout, subjects)
  if split == "train":
    return ([(path, s) for s in train for path in images["NIR"][s]],
            [(path, s) for s in train for path in images["VIS"][s]])
  if gallery_per_subject == "protocol":
    gallery_per_subject = PROTOCOLS[layout].gallery_per_subject
  return ([(path, s) for s in test for path in images["NIR"][s]],
          [(path, s) for s in test for path in images["VIS"][s][:gallery_per_subject]])


# ----------------------------------------------------------------------------- any layout


def check_layout(layout: str) -> str:
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r} is not a known NIR-VIS layout; expected one of {', '.join(LAYOUTS)} "
                     "(CASIA NIR-VIS 2.0, BUAA-VisNir, Oulu-CASIA NIR-VIS).")
  return layout


def split_images(data_dir: str, layout: str, split: str, fold: int = 1,
                 illumination: str = "Strong") -> tuple[Images, Images]:
  """(NIR images, VIS images) of a split of any layout (module docstring)."""
  if check_layout(layout) == "casia":
    return casia_split(data_dir, split, fold)
  return single_split_images(data_dir, layout, split, illumination)


def protocol_images(data_dir: str, layout: str, illumination: str = "Strong") -> list[str]:
  """Every image the layout's protocol uses (what the landmark cache must hold)."""
  if check_layout(layout) == "casia":
    return casia_images(data_dir)
  train = single_split_images(data_dir, layout, "train", illumination)
  test = single_split_images(data_dir, layout, "test", illumination, gallery_per_subject=None)
  return sorted({path for images in (*train, *test) for path, _ in images})


def cache_command(data_dir: str, layout: str) -> str:
  """The command that computes a layout's landmark cache."""
  layout_flag = "" if layout == "casia" else f" --layout {layout}"
  return f"python -m hallujax.tools.nir_vis_landmarks --data_dir {data_dir}{layout_flag}"


# ----------------------------------------------------------------------------- the landmark cache


def read_cache(data_dir: str) -> dict[str, list | None]:
  path = os.path.join(data_dir, CACHE_NAME)
  return json.load(open(path)) if os.path.isfile(path) else {}


def _detect(path: str) -> list | None:
  from hallujax.data import face_detection
  detector = _detect.detector = getattr(_detect, "detector", None) or face_detection.Detector()
  faces = detector(face_detection.read_photo(path))
  return faces[0].landmarks.tolist() if faces else None


def build_cache(data_dir: str, workers: int = 1, log=print, layout: str = "casia",
                illumination: str = "Strong") -> dict[str, list | None]:
  """Detects 68 landmarks in every image the protocol uses and that the cache lacks; saves as it goes."""
  listed = protocol_images(data_dir, layout, illumination)
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


# ----------------------------------------------------------------------------- the sources


class NirVisFolder(_FolderSource):
  """Unaligned NIR → VIS pairs of a NIR-VIS database (see the module docstring); `layout` names which."""

  source_name = ""
  layout = ""
  LAYOUT = ""

  def __init__(self, data_config, split: str):
    super().__init__(data_config, split)
    if self.pairing != "nir_unaligned":
      raise ValueError(f"{self.source_name} gives unaligned NIR → VIS pairs; config.data.pairing={self.pairing!r} "
                       "should be nir_unaligned.")
    self.fold = int(data_config.fold)
    self.illumination = str(data_config.illumination)
    self.size = int(data_config.target_size)
    self.input_channels = int(data_config.input_channels)
    cache = read_cache(self.data_dir)
    if not cache:
      raise FileNotFoundError(f"{os.path.join(self.data_dir, CACHE_NAME)} is missing: compute the landmarks once "
                              f"with {cache_command(self.data_dir, self.layout)}.")
    with_points = lambda pairs: [(path, subject, cache.get(os.path.relpath(path, self.data_dir)))
                                 for path, subject in pairs]
    nir, vis = (with_points(images) for images in
                split_images(self.data_dir, self.layout, split, self.fold, self.illumination))
    uncached = [path for path, _, points in nir + vis if os.path.relpath(path, self.data_dir) not in cache]
    if uncached:
      raise FileNotFoundError(f"{len(uncached)} listed images have no entry in {CACHE_NAME} (e.g. {uncached[0]}): "
                              f"rerun {cache_command(self.data_dir, self.layout)}.")
    self.visible: dict[str, list] = {}
    for path, subject, points in vis:
      if points is not None:
        self.visible.setdefault(subject, []).append((path, np.asarray(points, np.float32)))
    self.items = [(path, subject, np.asarray(points, np.float32)) for path, subject, points in nir
                  if points is not None and subject in self.visible]
    left_out = len(nir) + len(vis) - len(self.items) - sum(map(len, self.visible.values()))
    if left_out:
      logging.warning("%s %s %s: %d images left out (no face found, or no visible image of the subject).",
                      self.source_name, self.split_name(), split, left_out)
    if not self.items:
      raise missing_directory(self.data_dir, self.source_name,
                              self.LAYOUT + f" (no usable pairs in {self.split_name()})")
    subjects = sorted(self.visible)
    self.label = {subject: k for k, subject in enumerate(subjects)}

  def split_name(self) -> str:
    return f"fold {self.fold}" if self.layout == "casia" else "the protocol's split"

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


class CasiaNirVisFolder(NirVisFolder):
  """CASIA NIR-VIS 2.0's unaligned NIR → VIS pairs, fold `data.fold` of its protocol files."""
  source_name, layout, LAYOUT = "casia_nir_vis", "casia", LAYOUT


class BuaaVisNirFolder(NirVisFolder):
  """BUAA-VisNir's unaligned NIR → VIS pairs, NIR/<subject>/ and VIS/<subject>/ (50 train / 100 test subjects)."""
  source_name, layout, LAYOUT = "buaa_vis_nir", "buaa", BUAA_LAYOUT


class OuluCasiaNirVisFolder(NirVisFolder):
  """Oulu-CASIA NIR-VIS's unaligned NIR → VIS pairs, one illumination (20 train / 20 test subjects)."""
  source_name, layout, LAYOUT = "oulu_casia_nir_vis", "oulu", OULU_LAYOUT
