"""The evaluation behind ``python -m hallujax.evaluate`` (its docstring says what is written where).

Rows are the method's output columns against the ground truth; metrics come
from ``hallujax.metrics`` (image quality, and identity with a recognizer).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import time
from typing import Callable

import jax
import numpy as np
from absl import logging
from etils import epath

from hallujax import images as images_lib
from hallujax import run_setup, sharding
from hallujax.run_files import load_config_file
from hallujax.data import pipeline
from hallujax.methods import DATA_COLUMNS, get_method
from hallujax.metrics import diversity, identity, image_quality, niqe as niqe_lib

# Columns that are inputs, ground truth or intermediate maps, not results to score against the target
# (VividGAN's component prior is black outside the components; PCFH's attention is a mask).
# Interpolations of the input: the same images whichever run made them, so their rows are named plainly
# ("bicubic", not "<run>:bicubic"), like "input" and "target"; a run's other columns are "<run>:<column>".
INTERPOLATIONS = ("bicubic", "bilinear")
PLAIN_ROWS = ("input", "target") + INTERPOLATIONS
YAW_BUCKET_DEGREES = 15


@contextlib.contextmanager
def quiet_warnings():
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(level)


def all_processes(local_values: list[np.ndarray]) -> np.ndarray:
  """Per-batch host values of this process -> the global per-example values, flat, in the global order.

  Client-axis batches ((K, B) per field) are flattened client-major, as the images are.
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    local_values = [np.asarray(multihost_utils.process_allgather(v)) for v in local_values]
  return np.concatenate([np.reshape(v, (-1,)) for v in local_values])


def resize_to(images: jax.Array, size: int) -> jax.Array:
  if images.shape[1] == size and images.shape[2] == size:
    return images
  return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "bilinear")


def with_input_size(embed: Callable, size: int) -> Callable:
  """`embed` with the face size it resizes images to, so that a report can say when identity was not scored
  at the images' own size."""
  def recognize(images):
    return embed(images)
  recognize.input_size = size
  return recognize


def in_project_recognizer(config_spec: str, workdir: str, step: int | None = None) -> Callable:
  """Embedding function of an ArcFace run trained with configs/arcface.py."""
  recognizer_config = load_config_file(config_spec)
  module = get_method(recognizer_config.method)
  if not hasattr(module, "embed_function"):
    raise ValueError(f"--recognizer_config names method {recognizer_config.method!r}, which has no "
                     "embed_function(); use an ArcFace run (configs/arcface.py).")
  _, state, restored_step = run_setup.restore_run(recognizer_config, workdir, step)
  embed = module.embed_function(recognizer_config)
  size = recognizer_config.data.target_size
  logging.info("Recognizer: %s step %d (%dx%d faces)", workdir, restored_step, size, size)
  return with_input_size(jax.jit(lambda images: embed(state, resize_to(images, size))), size)


def arcface_torch_recognizer(path: str, stage_sizes: tuple[int, ...]) -> Callable:
  """Embedding function of an insightface arcface_torch iResNet checkpoint (112x112 faces)."""
  from hallujax.convert.arcface import load_arcface  # pylint: disable=import-outside-toplevel
  from hallujax.models.recognition import ResNetFace  # pylint: disable=import-outside-toplevel
  model = ResNetFace(stage_sizes=stage_sizes)
  variables = load_arcface(path, model)
  logging.info("Recognizer: arcface_torch iResNet from %s", path)
  return with_input_size(jax.jit(lambda images: model.apply(variables, resize_to(images, 112), train=False)), 112)


def lpips_scorer(lin_path: str, vgg16_path: str | None) -> Callable:
  """LPIPS (VGG, v0.1) per image pair from the lpips package's vgg.pth and torchvision's vgg16 file."""
  from hallujax.convert.lpips import load_lpips  # pylint: disable=import-outside-toplevel
  variables = load_lpips(lin_path, vgg16_path)
  logging.info("LPIPS: %s + %s", lin_path, vgg16_path)
  return lambda images, references: image_quality.lpips_distance(variables, images, references)


def lightcnn_recognizer(path: str) -> Callable:
  """Embedding function of LightCNN-29 v2 weights (paper 000's Deg. and paper 001's recognizer; 128² grey),
  or of an in-project configs/lightcnn.py run directory (at the run's own face size)."""
  from hallujax.models.recognition import LightCNN29  # pylint: disable=import-outside-toplevel
  if os.path.isdir(path):
    from hallujax.methods import lightcnn as lightcnn_method  # pylint: disable=import-outside-toplevel
    run_config, params, description = lightcnn_method.read_run(path, "--lightcnn_weights", run_setup.restore_state)
    model, size = lightcnn_method.network(run_config, classify=False), run_config.data.target_size
    variables = {"params": params}
    logging.info("Recognizer: %s", description)
  else:
    from hallujax.convert.lightcnn import load_lightcnn  # pylint: disable=import-outside-toplevel
    model, size = LightCNN29(), 128
    variables = load_lightcnn(path, model)
    logging.info("Recognizer: LightCNN-29 v2 from %s", path)
  return with_input_size(jax.jit(lambda images: model.apply(variables, resize_to(images, size))), size)


@jax.jit
def image_scores(images: jax.Array, references: jax.Array) -> dict[str, jax.Array]:
  unit = image_quality.from_unit_range
  images, references = unit(images), unit(references)
  return {"psnr": image_quality.psnr(images, references), "ssim": image_quality.ssim(images, references),
          "psnr_y": image_quality.psnr(images, references, y_channel=True),
          "ssim_y": image_quality.ssim(images, references, y_channel=True)}


class Row:
  """Per-example values (and embeddings) of one set of hallucinated images."""

  def __init__(self):
    self.scores = collections.defaultdict(list)
    self.embeddings = []

  def add(self, scores: dict, embeddings=None):
    for name, values in scores.items():
      self.scores[name].append(np.asarray(values))
    if embeddings is not None:
      self.embeddings.append(np.asarray(embeddings))

  def arrays(self) -> dict[str, np.ndarray]:
    return {name: np.concatenate(values) for name, values in self.scores.items()}


def verification_pairs(labels: np.ndarray, pairs_per_class: int = 3000) -> tuple[np.ndarray, np.ndarray]:
  """LFW-style pairs over (output i, ground truth j), i ≠ j: up to `pairs_per_class` genuine and as many
  impostor pairs, drawn with a fixed seed so that every run of a table is scored on the same pairs."""
  rng = np.random.default_rng(0)
  first, second = np.triu_indices(len(labels), k=1)
  same = labels[first] == labels[second]
  count = min(pairs_per_class, int(same.sum()), int((~same).sum()))
  chosen = np.concatenate([rng.choice(np.flatnonzero(same), count, replace=False),
                           rng.choice(np.flatnonzero(~same), count, replace=False)])
  rng.shuffle(chosen)
  return first[chosen], second[chosen]


def identity_summary(embeddings: np.ndarray, target_embeddings: np.ndarray, labels: np.ndarray,
                     input_embeddings: np.ndarray | None = None) -> dict:
  """Cosine to ground truth, verification over all pairs and by LFW's 10-fold protocol, Rank-1/5 with one
  gallery image per identity; with `input_embeddings` (an input at the target's size, e.g. NIR), also
  PCFH's fused Rank-1 (paper 001 §4.2: the mean of the original pair's and the generated pair's scores)."""
  same = labels[:, None] == labels[None, :]
  scores = np.asarray(identity.cosine_similarity_matrix(embeddings, target_embeddings))
  verification = identity.verification_summary(scores.ravel(), same.ravel())
  _, first = np.unique(labels, return_index=True)
  gallery_scores = scores[:, first]
  ranks = identity.identification_rates_from_scores(gallery_scores, labels, labels[first], ranks=(1, 5))
  probe, reference = verification_pairs(labels)
  accuracy, accuracy_std = identity.ten_fold_accuracy(scores[probe, reference], same[probe, reference])
  summary = {
      "identity_cosine": float(np.mean(np.diag(scores))),
      "verification_auc": float(verification["auc"]),
      "vr_at_far_1e-2": float(verification["vr_at_far_1e-2"]),
      "vr_at_far_1e-3": float(verification["vr_at_far_1e-3"]),
      "verification_accuracy": accuracy,
      "verification_accuracy_std": accuracy_std,
      "rank1": float(ranks[1]),
      "rank5": float(ranks[5]),
  }
  if input_embeddings is not None:
    original_scores = np.asarray(identity.cosine_similarity_matrix(input_embeddings, target_embeddings[first]))
    fused = identity.identification_rates_from_scores((original_scores + gallery_scores) / 2.0, labels,
                                                      labels[first], ranks=(1,))
    summary["rank1_fused"] = float(fused[1])
  return summary


def yaw_groups(yaw: np.ndarray, max_exact: int = 12) -> tuple[np.ndarray, list[str]]:
  """(group index per example, labels): per exact |yaw| when the data use a few discrete yaws (VividGAN's
  ±15 … ±90° set), else per 15° bucket, the last one closed (90° joins 75–90°)."""
  magnitude = np.round(np.abs(np.asarray(yaw, np.float64)), 3)
  values = np.unique(magnitude)
  if len(values) <= max_exact:
    return np.searchsorted(values, magnitude), [f"±{v:g}°" for v in values]
  last = 90 // YAW_BUCKET_DEGREES - 1
  edges = np.minimum(np.floor(magnitude / YAW_BUCKET_DEGREES), last).astype(int) * YAW_BUCKET_DEGREES
  buckets = np.unique(edges)
  return np.searchsorted(buckets, edges), [f"{b}-{b + YAW_BUCKET_DEGREES}°" for b in buckets]


def yaw_buckets(values: np.ndarray, yaw: np.ndarray) -> dict[str, float]:
  """Mean of `values` per yaw group (`yaw_groups`)."""
  groups, labels = yaw_groups(yaw)
  return {label: float(np.mean(values[groups == k])) for k, label in enumerate(labels)}


def same_size_input(images, target) -> bool:
  if images is None:
    return False
  shape, target_shape = np.shape(images), np.shape(target)
  return shape[:-1] == target_shape[:-1] and shape[-1] in (1, target_shape[-1])


def hallucinate_split(hallucinate, eval_step, state, frozen, feed, batches, recognizer, row_prefix: str,
                      include_baselines: bool, lpips: Callable | None = None,
                      not_scored: tuple[str, ...] = DATA_COLUMNS) -> tuple[dict[str, Row], dict, dict, float]:
  """Runs the jitted `hallucinate` (and `eval_step`, unless None) + metrics over `batches`; every column but
  `not_scored` (the data's columns and the method's `diagnostic_columns`) is scored as a row.

  Returns rows, eval_step means, the images of every column (uint8) and images/s.
  """
  rows: dict[str, Row] = collections.defaultdict(Row)
  scores = lambda images, target: dict(image_scores(images, target),
                                       **({"lpips": lpips(images, target)} if lpips else {}))
  eval_totals = collections.defaultdict(list)
  kept = collections.defaultdict(list)
  start, timed_images = None, 0
  for index, host_batch in enumerate(batches):
    if index == 1:
      start = time.perf_counter()  # the first batch pays for compilation
    batch = feed(host_batch)
    columns = jax.device_get(hallucinate(state, frozen, batch))
    if eval_step is not None:
      for name, values in jax.device_get(eval_step(state, frozen, batch)).items():
        eval_totals[name].append(np.asarray(values))
    target = columns.get("target", np.asarray(host_batch["target"]))
    target_embeddings = recognizer(target) if recognizer else None
    raw = columns.get("input", host_batch.get("input"))
    if include_baselines and recognizer and same_size_input(raw, target):
      # A cross-spectral input at the target's size (PCFH's NIR) is a row of its own: the recognizer on the
      # raw input, paper 001 Table 1's "LightCNN" row; grey inputs are repeated over the 3 channels.
      raw = np.broadcast_to(np.asarray(raw), target.shape)
      rows["input"].add(scores(raw, target), recognizer(raw))
    for name, images in columns.items():
      if name in not_scored or images.shape != target.shape:
        continue
      if name == "output":
        row_name = row_prefix
      elif include_baselines:
        row_name = name if name in INTERPOLATIONS else f"{row_prefix}:{name}"
      else:
        continue
      rows[row_name].add(scores(images, target), recognizer(images) if recognizer else None)
    if recognizer:
      rows["__target__"].add({}, target_embeddings)
    for name, images in columns.items():
      kept[name].append(images_lib.to_uint8(np.asarray(images)))
    if "target" not in columns:   # the ground truth's images too: the ceiling row's strip and diversity's reference
      kept["target"].append(images_lib.to_uint8(np.asarray(target)))
    if index >= 1:
      jax.block_until_ready(columns)
      timed_images += target.shape[0]
  seconds = time.perf_counter() - start if start is not None else float("nan")
  eval_means = {name: float(np.mean(np.concatenate(values))) for name, values in eval_totals.items()}
  kept = {name: np.concatenate(values) for name, values in kept.items()}
  return rows, eval_means, kept, (timed_images / seconds if timed_images else float("nan"))


def summarize(rows: dict[str, Row], labels: np.ndarray | None, yaw: np.ndarray | None) -> dict[str, dict]:
  summary = {}
  target_row, input_row = rows.get("__target__"), rows.get("input")
  input_embeddings = np.concatenate(input_row.embeddings) if input_row is not None and input_row.embeddings else None
  for name, row in rows.items():
    if name == "__target__":
      continue
    arrays = row.arrays()
    entry = {metric: float(np.mean(values)) for metric, values in arrays.items()}
    if target_row is not None and row.embeddings and labels is not None:
      fuse_with = input_embeddings if name not in ("input",) + INTERPOLATIONS else None
      entry.update(identity_summary(np.concatenate(row.embeddings), np.concatenate(target_row.embeddings), labels,
                                    fuse_with))
    if yaw is not None:
      entry["psnr_by_yaw"] = yaw_buckets(arrays["psnr"], yaw)
      entry["ssim_by_yaw"] = yaw_buckets(arrays["ssim"], yaw)
    summary[name] = entry
  if target_row is not None and target_row.embeddings and labels is not None:
    # The ceiling: the ground truth through the same recognizer (paper 003 Table 2's "FR-HR"), so every
    # identity cell has its range. Rank-k's gallery holds one of these images per identity, as for every row.
    target_embeddings = np.concatenate(target_row.embeddings)
    summary["target"] = identity_summary(target_embeddings, target_embeddings, labels)
  return summary


def column_of(row_name: str, run_name: str) -> str | None:
  """The image column a summary row scores (None for a compared run's rows, whose images are not kept)."""
  if row_name == run_name:
    return "output"
  if row_name in PLAIN_ROWS:
    return row_name
  prefix = f"{run_name}:"
  return row_name[len(prefix):] if row_name.startswith(prefix) else None


def image_figures(summary: dict[str, dict], kept: dict[str, np.ndarray], run_name: str,
                  diversity_examples: int = 256, niqe_examples: int = 32) -> None:
  """Adds, per row of `summary`, output diversity, nearest- and own-target shares against the targets
  (hallujax.metrics.diversity) and NIQE
  (hallujax.metrics.niqe, over the first `niqe_examples` images; the target row gets NIQE only)."""
  targets = kept["target"]
  for name, entry in summary.items():
    column = column_of(name, run_name)
    if column is None or column not in kept:
      continue
    images = kept[column]
    if images.shape[-1] == 1 and targets.shape[-1] == 3:   # grey inputs (NIR) as the recognizer saw them
      images = np.repeat(images, 3, axis=-1)
    if images.shape != targets.shape:
      continue
    if column != "target":
      entry.update(diversity.output_diversity(images, targets, diversity_examples))
    entry["niqe"] = niqe_lib.mean_niqe(images[:niqe_examples])


def save_strips(directory: epath.Path, kept: dict[str, np.ndarray], count: int = 8) -> None:
  """One PNG per image column: its first `count` examples side by side (the evaluation's order is fixed, so
  every run of a table shows the same held-out inputs; the results report puts one strip per row)."""
  for name, images in kept.items():
    strip = np.concatenate(list(images[:count]), axis=1)
    if strip.shape[-1] == 1:
      strip = np.repeat(strip, 3, axis=-1)
    images_lib.write_grid(directory / f"{name}.png", strip[..., :3])


def markdown_table(summary: dict[str, dict], title: str, notes: list[str]) -> str:
  columns = ["psnr", "ssim", "psnr_y", "ssim_y", "lpips", "niqe", "output_diversity", "nearest_target_share",
             "own_target_share", "identity_cosine", "verification_auc", "vr_at_far_1e-2",
             "vr_at_far_1e-3", "verification_accuracy", "rank1", "rank5", "rank1_fused"]
  present = [c for c in columns if any(c in entry for entry in summary.values())]
  lines = [f"# {title}", "", "| row | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
  for name, entry in summary.items():
    cells = [f"{entry[c]:.4f}" if c in entry else "" for c in present]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  for name, entry in summary.items():
    if "psnr_by_yaw" in entry:
      lines += ["", f"{name}: PSNR / SSIM by |yaw|", ""]
      lines += [f"- {bucket}: {entry['psnr_by_yaw'][bucket]:.3f} / {entry['ssim_by_yaw'][bucket]:.4f}"
                for bucket in entry["psnr_by_yaw"]]
  return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"


def save_grid(path: epath.Path, kept: dict, indices: np.ndarray, order: list[str]) -> None:
  """`order`: the method's column order (as the training grids have it); `kept` comes back from the devices in
  sorted key order, which would put an unlisted column (bilinear) elsewhere than in the training grids."""
  columns = {name: kept[name][indices] for name in [*order, *(name for name in kept if name not in order)]}
  grid = images_lib.image_grid({name: images.astype(np.float32) / 127.5 - 1.0 for name, images in columns.items()},
                               max_rows=len(indices))
  images_lib.write_grid(path, grid)


def evaluate(config, workdir: str, *, step: int | None = None, split: str = "test", batches: int | None = None,
             compare: tuple[str, ...] = (), recognizer: Callable | None = None, grid_rows: int = 8,
             lpips: Callable | None = None) -> dict:
  """Evaluates the run in `workdir` (and the runs in `compare`) on `split`; writes and returns the report."""
  run, state, step = run_setup.restore_run(config, workdir, step)
  method, mesh = run.method, run.mesh
  with quiet_warnings():   # where the frozen weights come from was said when the run trained
    frozen, frozen_shardings = run.frozen_networks()
  feed = run.feed()
  host_batches = pipeline.eval_batches(config, split, batches=batches, process_index=jax.process_index(),
                                       process_count=jax.process_count())
  labels = all_processes([b["identity"] for b in host_batches]) if "identity" in host_batches[0] else None
  yaw = all_processes([b["yaw"] for b in host_batches]) if "yaw" in host_batches[0] else None
  run_name = os.path.basename(os.path.normpath(workdir))
  grid_columns = run.grid_columns(frozen_shardings)
  hallucinate = grid_columns.jitted
  eval_step = jax.jit(method.eval_step, out_shardings=sharding.replicated(mesh))
  not_scored = DATA_COLUMNS + tuple(method.diagnostic_columns)
  rows, eval_means, kept, images_per_second = hallucinate_split(
      hallucinate, eval_step, state, frozen, feed, host_batches, recognizer, run_name, include_baselines=True,
      lpips=lpips, not_scored=not_scored)
  for other in compare:
    other_state, other_step = run.restore(other)
    other_rows, _, _, _ = hallucinate_split(hallucinate, None, other_state, frozen, feed, host_batches, recognizer,
                                            f"{os.path.basename(os.path.normpath(other))}@{other_step}",
                                            include_baselines=False, lpips=lpips, not_scored=not_scored)
    rows.update({name: row for name, row in other_rows.items() if name != "__target__"})
  summary = summarize(rows, labels, yaw)
  image_figures(summary, kept, run_name)
  examples = int(sum(np.prod(b["target"].shape[:-3]) for b in host_batches)) * jax.process_count()
  notes = [f"{config.method}, {workdir} step {step}, split {split!r}: {len(host_batches)} batches, "
           f"{examples} examples ({config.data.source}).",
           f"Throughput (hallucinate + metrics, after compilation): {images_per_second:.1f} images/s on "
           f"{jax.devices()[0].platform}."]
  notes.append("output_diversity: mean pairwise distance between a column's images over the same for the ground "
               "truths (first 256 examples; 0 = one image for every input); nearest_target_share: share of its images "
               "whose nearest ground truth is the most common one; own_target_share: share of its images whose "
               "best-matching ground truth (correlation of what varies across examples) is their own, chance 1 / "
               "diversity_examples (hallujax/metrics/diversity.py). niqe: NIQE over the first 32 images, enlarged to "
               "192² when smaller (hallujax/metrics/niqe.py); lower is more natural, read against the target row's.")
  if recognizer is None:
    notes.append("No recognizer given (--recognizer_workdir or --arcface_weights): identity metrics not computed.")
  side = int(host_batches[0]["target"].shape[-2])
  recognizer_size = getattr(recognizer, "input_size", None)
  if recognizer_size is not None and recognizer_size != side:
    notes.append(f"Identity is scored at {recognizer_size}²: the recognizer reads {recognizer_size}² faces, so the "
                 f"{side}² images are resized to it (a recognizer trained at {side}² scores them at their own size).")
  report = {"method": config.method, "workdir": str(workdir), "step": step, "split": split,
            "examples": examples, "rows": summary,
            "eval_step": eval_means, "images_per_second": images_per_second,
            "recognizer_input_size": recognizer_size}
  directory = epath.Path(workdir) / "eval"
  stem = f"step_{step}_{split}"
  report["files"] = str(directory / stem)
  if jax.process_index() != 0:   # every process computed the same report; process 0 writes it
    return report
  directory.mkdir(parents=True, exist_ok=True)
  (directory / f"{stem}.json").write_text(json.dumps(report, indent=2))
  (directory / f"{stem}.md").write_text(markdown_table(summary, f"{config.method} evaluation", notes))
  if run_name in rows:
    order = np.argsort(rows[run_name].arrays()["psnr"])
    save_grid(directory / f"{stem}_hardest.png", kept, order[:grid_rows], grid_columns.order)
    save_grid(directory / f"{stem}_easiest.png", kept, order[::-1][:grid_rows], grid_columns.order)
  save_strips(directory / f"{stem}_strips", kept)
  return report
