"""python -m hallujax.tools.nir_vis_protocol --workdir PCFH_RUN --data_dir NIR-VIS-2.0 --recognizer_config ...

The NIR-VIS recognition protocols of paper 001 §4.1–4.2 for a NIR → VIS run. For every split one set of
visible images is the gallery; every NIR probe is turned visible by the run; Rank-1 and VR at FAR = 1% and
0.1% are measured for the raw NIR probe, the generated image, and the paper's fusion (the mean of the raw
pair's and the generated pair's scores).

- ``--layout casia`` (default), Table 2: CASIA NIR-VIS 2.0's 10 folds (``protocols/vis_gallery_K.txt``,
  ``protocols/nir_probe_K.txt``), one visible image per subject in the gallery; the table gives
  mean ± std over folds.
- ``--layout buaa``, Table 3: BUAA-VisNir's single split, the 100 test subjects' NIR probes against one
  VIS image per subject.
- ``--layout oulu``, Table 4: Oulu-CASIA NIR-VIS's single split, the 20 test subjects' NIR probes against
  all their VIS images (``--gallery one``: the first VIS image per subject instead); ``--illumination``
  picks the sequences (default Strong).

Paper 001 trains once on CASIA's first fold and tests that model on BUAA and Oulu ("the training sets in
these two databases are not used"), so the same ``--workdir`` serves all three. The layouts, the
protocols' subjects and their sources are in ``hallujax.data.nir_vis`` (its docstring shows them).

Faces: ``--faces detect`` (default) finds the largest face with dlib and aligns it to the run's
template, with dlib's 68 landmarks (PCFH's local paths read them); ``--faces aligned`` takes images
that are already face crops (e.g. the community 128×128 crops) and places the 68 points with dlib's
predictor on the whole image. Landmarks come from the dataset's ``landmarks.json`` when
``python -m hallujax.tools.nir_vis_landmarks`` has made it, else they are detected here and cached in
``RUN/eval/nir_vis_faces.json``, so a second run (or fold) detects nothing again. Images where no face is
found are counted as misses for probes, and listed; a gallery image without a face is an error
(the subject could not be matched at all).

Writes ``RUN/eval/nir_vis_protocol.json`` and ``.md`` (CASIA; ``nir_vis_protocol_buaa.*`` and
``nir_vis_protocol_oulu.*`` for the others). Needs the "eval" extra (dlib) and a
recognizer: an in-project ArcFace run (``--recognizer_config`` + ``--recognizer_workdir``) or
arcface_torch weights (``--arcface_weights``). LightCNN-29 v2 (the paper's) plugs in the same way once
its weights are converted (``hallujax.convert.lightcnn``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import numpy as np
from absl import flags

from hallujax import cli, images
from hallujax.data import face_detection, nir_vis
from hallujax.data.nir_vis import protocol_folds, read_cache, read_list

FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------- scores


def fold_scores(probe_raw: np.ndarray, probe_generated: np.ndarray, probe_subjects: np.ndarray,
                gallery: np.ndarray, gallery_subjects: np.ndarray) -> dict[str, float]:
  """Rank-1 and VR@FAR for raw NIR, generated and fused probes against a one-image-per-subject gallery.

  Probes with no face (NaN embeddings) count as misses and as non-matching pairs.
  """
  from hallujax.metrics import identity
  _, codes = np.unique(np.concatenate([probe_subjects, gallery_subjects]), return_inverse=True)
  probe_subjects, gallery_subjects = codes[:len(probe_subjects)], codes[len(probe_subjects):]   # names -> ints
  same = probe_subjects[:, None] == gallery_subjects[None, :]
  results = {}
  raw = np.asarray(identity.cosine_similarity_matrix(np.nan_to_num(probe_raw), gallery))
  generated = np.asarray(identity.cosine_similarity_matrix(np.nan_to_num(probe_generated), gallery))
  found = ~np.isnan(probe_generated).any(axis=1)
  for name, scores in (("nir", raw), ("generated", generated), ("fused", (raw + generated) / 2.0)):
    # A probe without a face: its own subject scores below every other (a miss at rank 1), and every one of
    # its pairs is rejected in verification (cosines lie in [-1, 1]).
    ranked = np.where(found[:, None], scores, np.where(same, -2.0, 2.0))
    rank1 = identity.identification_rates_from_scores(ranked, probe_subjects, gallery_subjects, ranks=(1,))[1]
    results[f"rank1_{name}"] = float(rank1)
    verified = np.where(found[:, None], scores, -2.0).ravel()
    for far, key in ((1e-2, "vr_at_far_1e-2"), (1e-3, "vr_at_far_1e-3")):
      results[f"{key}_{name}"] = float(identity.verification_rate_at_far(verified, same.ravel(), far))
  return results


def summary_over_folds(per_fold: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
  names = next(iter(per_fold.values())).keys()
  return {name: {"mean": float(np.mean([fold[name] for fold in per_fold.values()])),
                 "std": float(np.std([fold[name] for fold in per_fold.values()]))} for name in names}


TITLES = {"casia": "CASIA NIR-VIS 2.0 protocol (paper 001 Table 2)",
          "buaa": "BUAA-VisNir protocol (paper 001 Table 3)",
          "oulu": "Oulu-CASIA NIR-VIS protocol (paper 001 Table 4)"}


def markdown(summary: dict, per_fold: dict, notes: list[str], layout: str = "casia") -> str:
  """The table: mean ± std over CASIA's folds, or the single split's values (BUAA, Oulu)."""
  folds = layout == "casia"
  lines = [f"# {TITLES[layout]}", "",
           (f"Folds: {', '.join(map(str, per_fold))}. Cells: mean ± std over folds." if folds else
            "One split: the protocol's test subjects (hallujax.data.nir_vis)."), "",
           "| probe | Rank-1 | VR@FAR=1% | VR@FAR=0.1% |", "|---|---|---|---|"]
  cell = (lambda c: f"{c['mean']:.4f} ± {c['std']:.4f}") if folds else (lambda c: f"{c['mean']:.4f}")
  for name, label in (("nir", "raw NIR"), ("generated", "generated VIS"), ("fused", "fused (paper)")):
    cells = [summary[f"{metric}_{name}"] for metric in ("rank1", "vr_at_far_1e-2", "vr_at_far_1e-3")]
    lines.append(f"| {label} | " + " | ".join(map(cell, cells)) + " |")
  return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"


# ----------------------------------------------------------------------------- faces


class Faces:
  """Aligned crops of protocol images, with dlib landmarks cached by path."""

  def __init__(self, model, mode: str, cache_path: str, data_dir: str = ""):
    from hallujax import photos
    self.photos, self.model, self.mode, self.cache_path = photos, model, mode, cache_path
    self.cache = json.load(open(cache_path)) if os.path.isfile(cache_path) else {}
    if data_dir and mode == "detect":   # the dataset's own landmark cache (python -m hallujax.tools.nir_vis_landmarks)
      self.cache.update({os.path.join(data_dir, path): points for path, points in read_cache(data_dir).items()})
    self.missing: list[str] = []

  @functools.cached_property
  def detector(self):
    """dlib's detector and 68-point predictor, loaded only when an image is not in the cache."""
    if self.mode == "detect":
      return face_detection.Detector()
    try:
      return face_detection.Detector()
    except ImportError:
      return None   # aligned crops without dlib: no 68 points (the method's landmark input is zeros)

  def landmarks(self, path: str, photo: np.ndarray) -> np.ndarray | None:
    if path in self.cache:
      return None if self.cache[path] is None else np.asarray(self.cache[path])
    if self.mode == "detect":
      faces = self.detector(photo)
      points = faces[0].landmarks if faces else None
    elif self.detector is not None:
      import dlib
      height, width = photo.shape[:2]
      shape = self.detector.predictor(np.ascontiguousarray(photo), dlib.rectangle(0, 0, width - 1, height - 1))
      points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    else:
      points = None
    self.cache[path] = None if points is None else points.tolist()
    return points

  def prepare(self, path: str):
    """The PreparedFace of one image, or None when no face was found."""
    photos = self.photos
    photo = photos.read_photo(path)
    points = self.landmarks(path, photo)
    if self.mode == "aligned":   # the whole image is the crop; the 68 points (if any) feed the method
      face, unit_matrix = photos.aligned_face(photo, self.model.template)
      matrix = unit_matrix * self.model.output_size   # photo pixels -> aligned output pixels
      if points is not None:
        face = dataclasses.replace(face, landmarks=points)
    elif points is None:
      self.missing.append(path)
      return None
    else:
      face = photos.Face(box=(0.0, 0.0, float(photo.shape[1]), float(photo.shape[0])), score=None, landmarks=points)
      matrix = photos.face_matrix(points, self.model.template, self.model.output_size)
    return photos.prepare_face(photo, face, matrix, self.model, "real")

  def save(self) -> None:
    os.makedirs(os.path.dirname(self.cache_path), exist_ok=True)
    with open(self.cache_path, "w") as f:
      json.dump(self.cache, f)


def run_fold(fold: int, data_dir: str, model, faces: Faces, recognizer, batch_size: int) -> dict[str, float]:
  """CASIA fold K: protocols/vis_gallery_K.txt against protocols/nir_probe_K.txt."""
  return run_split(f"Fold {fold}", read_list(data_dir, f"vis_gallery_{fold}.txt"),
                   read_list(data_dir, f"nir_probe_{fold}.txt"), model, faces, recognizer, batch_size)


def run_split(name: str, gallery_list, probe_list, model, faces: Faces, recognizer,
              batch_size: int) -> dict[str, float]:
  """Scores of NIR probes [(path, subject)] against a visible gallery [(path, subject)]."""
  gallery_crops = []
  for path, _ in gallery_list:
    prepared = faces.prepare(path)
    if prepared is None:
      raise ValueError(f"{name}: no face found in gallery image {path}; its subject cannot be matched. "
                       "Use --faces aligned for pre-cropped images, or fix the image.")
    gallery_crops.append(images.to_unit_range(prepared.crop))
  gallery = np.asarray(recognizer(np.stack(gallery_crops)))
  prepared_probes = [faces.prepare(path) for path, _ in probe_list]
  size = model.output_size
  raw = np.full((len(probe_list), gallery.shape[1]), np.nan, np.float32)
  generated = np.full_like(raw, np.nan)
  kept = [i for i, p in enumerate(prepared_probes) if p is not None]
  for start in range(0, len(kept), batch_size):
    indices = kept[start:start + batch_size]
    inputs = np.stack([prepared_probes[i].input for i in indices])
    landmarks = np.stack([prepared_probes[i].landmarks if prepared_probes[i].landmarks is not None
                          else np.zeros((68, 2), np.float32) for i in indices])
    padding = batch_size - len(indices)   # the compiled program has one batch size
    outputs = model.run(np.concatenate([inputs, np.repeat(inputs[-1:], padding, 0)]),
                        np.concatenate([landmarks, np.repeat(landmarks[-1:], padding, 0)]))[:len(indices)]
    crops = np.stack([images.to_unit_range(images.grey(prepared_probes[i].crop)) for i in indices])
    raw[indices] = np.asarray(recognizer(np.broadcast_to(crops, (len(indices), size, size, 3))))
    generated[indices] = np.asarray(recognizer(outputs))
  return fold_scores(raw, generated, np.array([s for _, s in probe_list]), gallery,
                     np.array([s for _, s in gallery_list]))


def protocol_splits(data_dir: str, layout: str, folds=(), illumination: str = "Strong",
                    gallery: str = "protocol") -> dict:
  """{fold, or "test" for BUAA / Oulu: (gallery, probes)}, each a [(path, subject)] list, read (and the layout
  checked) before any model is loaded."""
  if layout == "casia":
    folds = [int(f) for f in folds] if folds else protocol_folds(data_dir)
    lists = {fold: (read_list(data_dir, f"vis_gallery_{fold}.txt"), read_list(data_dir, f"nir_probe_{fold}.txt"))
             for fold in folds}
  else:
    probes, visible = nir_vis.single_split_images(data_dir, layout, "test", illumination,
                                                  "protocol" if gallery == "protocol" else 1)
    lists = {"test": (visible, probes)}
  return lists


# ----------------------------------------------------------------------------- the command


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The NIR → VIS training run (e.g. configs/pcfh.py).")
  flags.DEFINE_string("data_dir", None, "The database's root: CASIA NIR-VIS 2.0 (s1..s4/ and protocols/), "
                      "BUAA-VisNir (NIR/, VIS/) or Oulu-CASIA's OriginalImg/ (NI/, VL/).")
  flags.DEFINE_enum("layout", "casia", list(nir_vis.LAYOUTS), "casia: CASIA NIR-VIS 2.0 (10 folds, Table 2); "
                    "buaa: BUAA-VisNir (Table 3); oulu: Oulu-CASIA NIR-VIS (Table 4).")
  flags.DEFINE_list("folds", [], "casia: folds to run (default: every fold with both protocol files).")
  flags.DEFINE_string("illumination", "Strong", "oulu: which illumination's sequences (Strong, Weak, Dark).")
  flags.DEFINE_enum("gallery", "protocol", ["protocol", "one"], "buaa / oulu: the protocol's gallery (BUAA: one "
                    "VIS image per subject; Oulu: all of them), or one VIS image per subject.")
  flags.DEFINE_enum("faces", "detect", ["detect", "aligned"], "Find faces with dlib, or images are face crops.")
  flags.DEFINE_integer("batch_size", 16, "Probes per compiled batch.")
  flags.DEFINE_string("recognizer_config", None, "ArcFace config (configs/arcface.py[:variant]).")
  flags.DEFINE_string("recognizer_workdir", None, "ArcFace run trained with that config.")
  flags.DEFINE_string("arcface_weights", None, "insightface arcface_torch backbone.pth.")


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir or not FLAGS.data_dir:
    raise cli.UserError("Give --workdir=RUN (a NIR → VIS run) and --data_dir=NIR-VIS-2.0 (see --help).")
  if FLAGS.layout != "casia" and FLAGS.folds:
    raise cli.UserError(f"--folds is CASIA's; --layout={FLAGS.layout} has a single split (drop --folds).")
  splits = protocol_splits(FLAGS.data_dir, FLAGS.layout, FLAGS.folds, FLAGS.illumination, FLAGS.gallery)
  from hallujax import scoring, hallucinate
  if FLAGS.recognizer_workdir:
    recognizer = scoring.in_project_recognizer(FLAGS.recognizer_config, FLAGS.recognizer_workdir)
  elif FLAGS.arcface_weights:
    recognizer = scoring.arcface_torch_recognizer(FLAGS.arcface_weights, (3, 4, 6, 3))
  else:
    raise cli.UserError("Give a recognizer: --recognizer_config + --recognizer_workdir, or --arcface_weights.")
  model = hallucinate.load_model(FLAGS.workdir, None, None, batch_size=FLAGS.batch_size)
  if model.input_channels != 1:
    raise cli.UserError(f"{FLAGS.workdir} reads {model.input_channels}-channel inputs; the protocol's probes are "
                        "NIR (one channel): give a NIR → VIS run (configs/pcfh.py).")
  directory = os.path.join(FLAGS.workdir, "eval")
  faces = Faces(model, FLAGS.faces, os.path.join(directory, "nir_vis_faces.json"), FLAGS.data_dir)
  per_fold = {}
  try:
    for fold, (gallery, probes) in splits.items():
      name = f"Fold {fold}" if FLAGS.layout == "casia" else f"{FLAGS.layout} {fold}"
      per_fold[fold] = run_split(name, gallery, probes, model, faces, recognizer, FLAGS.batch_size)
      print(f"{name.lower()}: " + "  ".join(f"{k} {v:.4f}" for k, v in per_fold[fold].items()), flush=True)
  finally:
    faces.save()
  summary = summary_over_folds(per_fold)
  notes = [f"Run {model.name}; faces: {FLAGS.faces}; probes without a face: {len(faces.missing)} "
           "(counted as misses).", "Raw NIR probes are the aligned grey crops, repeated over RGB."]
  if FLAGS.layout != "casia":
    gallery, probes = splits["test"]
    notes.append(f"Gallery: {FLAGS.gallery} ({len(gallery)} VIS images), {len(probes)} NIR probes"
                 + (f"; illumination {FLAGS.illumination}." if FLAGS.layout == "oulu" else "."))
  os.makedirs(directory, exist_ok=True)
  stem = "nir_vis_protocol" + ("" if FLAGS.layout == "casia" else f"_{FLAGS.layout}")
  with open(os.path.join(directory, stem + ".json"), "w") as f:
    json.dump({"folds": per_fold, "summary": summary, "missing_faces": faces.missing}, f, indent=2)
  text = markdown(summary, per_fold, notes, FLAGS.layout)
  with open(os.path.join(directory, stem + ".md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
