"""How face-like the face world is, measured with dlib (tools nobody here wrote).

    python -m hallujax.tools.realism [--count 200] [--identities 40]

prints three figures (issue 3):

  1. detection rate: dlib's HOG frontal face detector (one upsampling, as
     face_recognition does) finds a face in frontal visible renders at 256²
     (|yaw| <= 10°, |pitch| <= 10°, |roll| <= 8°, random expression);
  2. landmark error: dlib's 68-point shape predictor, run on each detection,
     against the ground-truth landmarks: mean point-to-point distance divided
     by the inter-ocular (outer eye corner, points 36 and 45) distance, the
     300-W normalization; averaged over the detected renders;
  3. verification ROC AUC: dlib's 128-D ResNet face descriptor on renders with
     |yaw| <= 30°, scored by negative Euclidean distance, over all
     same-identity pairs and as many random different-identity pairs.
     Faces the detector misses are described from a box around the
     ground-truth landmarks, so every image counts.

Needs the "eval" extra: ``pip install dlib-bin face-recognition-models``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

import numpy as np

from hallujax.data import faceworld


def _model_path(name: str) -> str:
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None:
    raise ImportError("hallujax.tools.realism needs the eval extra: pip install dlib-bin face-recognition-models")
  return os.path.join(spec.submodule_search_locations[0], "models", name)


def _dlib():
  try:
    import dlib
  except ImportError as error:
    raise ImportError("hallujax.tools.realism needs the eval extra: pip install dlib-bin face-recognition-models") from error
  return (dlib, dlib.get_frontal_face_detector(),
          dlib.shape_predictor(_model_path("shape_predictor_68_face_landmarks.dat")),
          dlib.face_recognition_model_v1(_model_path("dlib_face_recognition_resnet_model_v1.dat")))


def roc_auc(positive_scores, negative_scores) -> float:
  """Area under the ROC curve = P(positive score > negative score), ties count half."""
  positive = np.asarray(positive_scores, np.float64)
  negative = np.asarray(negative_scores, np.float64)
  scores = np.concatenate([positive, negative])
  order = scores.argsort(kind="mergesort")
  ranks = np.empty(len(scores))
  ranks[order] = np.arange(1, len(scores) + 1)
  for value in np.unique(scores):          # average ranks of ties
    tied = scores == value
    ranks[tied] = ranks[tied].mean()
  return float((ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2)
               / (len(positive) * len(negative)))


def _renders(world_seed, identities, rng, size, max_yaw, max_pitch, max_roll):
  views = []
  for _ in identities:
    views.append(dict(yaw=rng.uniform(-max_yaw, max_yaw), pitch=rng.uniform(-max_pitch, max_pitch),
                      roll=rng.uniform(-max_roll, max_roll),
                      expression=faceworld.EXPRESSIONS[rng.integers(len(faceworld.EXPRESSIONS))],
                      intensity=rng.uniform(0.3, 1.0)))
  return faceworld.render_examples(world_seed, identities, views, size)


def detection_and_landmarks(count=200, size=256, world_seed=1234, seed=0):
  """(detection rate, mean landmark error / inter-ocular distance, detections)."""
  dlib, detector, predictor, _ = _dlib()
  rng = np.random.default_rng(seed)
  identities = rng.integers(0, 10_000, count)
  rendered = _renders(world_seed, identities, rng, size, 10.0, 10.0, 8.0)
  hits, errors = 0, []
  for image, truth in zip(rendered["visible"], rendered["landmarks"]):
    detections = detector(image, 1)
    if not len(detections):
      continue
    hits += 1
    centre = truth.mean(0)
    best = min(detections, key=lambda d: np.hypot(d.center().x - centre[0], d.center().y - centre[1]))
    shape = predictor(image, best)
    predicted = np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], np.float64)
    inter_ocular = np.linalg.norm(truth[36] - truth[45])
    errors.append(np.linalg.norm(predicted - truth, axis=1).mean() / inter_ocular)
  return hits / count, (float(np.mean(errors)) if errors else float("nan")), hits


def verification_auc(identities=40, per_identity=5, size=256, world_seed=1234, seed=1):
  """ROC AUC of dlib descriptors, same vs different identity, |yaw| <= 30°."""
  dlib, detector, predictor, recognizer = _dlib()
  rng = np.random.default_rng(seed)
  people = np.repeat(rng.choice(10_000, identities, replace=False), per_identity)
  rendered = _renders(world_seed, people, rng, size, 30.0, 15.0, 10.0)
  descriptors = []
  for image, truth in zip(rendered["visible"], rendered["landmarks"]):
    detections = detector(image, 1)
    if len(detections):
      box = detections[0]
    else:
      low, high = truth.min(0), truth.max(0)
      box = dlib.rectangle(int(low[0]), int(low[1] - 0.25 * (high[1] - low[1])), int(high[0]), int(high[1]))
    descriptors.append(np.array(recognizer.compute_face_descriptor(image, predictor(image, box))))
  descriptors = np.stack(descriptors)
  distance = np.linalg.norm(descriptors[:, None] - descriptors[None], axis=-1)
  same = people[:, None] == people[None]
  upper = np.triu(np.ones_like(same), 1)
  positive = -distance[same & upper]
  negative_all = -distance[~same & upper]
  negative = rng.choice(negative_all, min(len(negative_all), len(positive)), replace=False)
  return roc_auc(positive, negative), len(positive), len(negative)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--count", type=int, default=200, help="frontal renders for detection and landmarks")
  parser.add_argument("--identities", type=int, default=40)
  parser.add_argument("--per_identity", type=int, default=5)
  arguments = parser.parse_args(argv)
  rate, error, hits = detection_and_landmarks(arguments.count)
  print(f"dlib frontal detector hit rate at 256² (|yaw|<=10°): {rate:.3f} ({hits}/{arguments.count}; target >= 0.90)")
  print(f"dlib 68-point landmark error / inter-ocular distance: {error:.3f} (over {hits} detections; target <= 0.10)")
  auc, positives, negatives = verification_auc(arguments.identities, arguments.per_identity)
  print(f"dlib descriptor verification ROC AUC (|yaw|<=30°): {auc:.3f} "
        f"({positives} same / {negatives} different pairs; target >= 0.85)")


if __name__ == "__main__":
  main()
