"""grain pipelines: source -> resized float examples -> per-process batches.

Training data is shuffled deterministically from ``config.seed`` (grain
shuffles indices, so the whole split is one global shuffle with no buffer)
and repeated without end. Every process computes the same order; process
``i`` of ``n`` reads its ``batch_size / n`` slice of each global batch
(``ProcessSlice``; the trainer assembles the global batch with
``jax.make_array_from_process_local_data``), so training is the same for any
number of processes. Evaluation data is the first ``eval_batches`` batches of
the validation split, in order. With ``config.data.clients`` = K each client
reads its own partition and batches are (K, B, ...).

The iterator's position is part of every checkpoint, so a resumed run reads
exactly the batches the uninterrupted run would have read.

With ``config.data.render_on="device"`` (face world only) the batches hold
each example's renderer parameters instead of images, read in the same order;
the trainer renders them on the devices (hallujax.data.device_render).

Reading, decoding (prepared records: hallujax.data.records) and degrading run
in ``config.data.worker_count`` grain worker processes (0: in this process;
-1: ``default_worker_count()``), each keeping ``worker_buffer_size`` batches
ready, with ``read_threads`` threads and ``read_buffer`` batches of prefetch
inside each. ``config.data.degradation`` (optional) adds random blur, noise and
JPEG compression to the low-resolution input after the downsampling; each
example's draw is a function of (config.seed, its position in the global
order), so it does not depend on the number of processes or workers.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Iterator

import grain
import numpy as np
import threadpoolctl

from hallujax.data import degradations, device_render
from hallujax.data.faceworld import DEGRADED, FaceWorldSource
from hallujax.data.sources import make_source
from hallujax.images import to_uint8, to_unit_range

IMAGE_FIELDS = ("input", "target")


@functools.cache
def limit_blas_to_one_thread() -> None:
  """Makes numpy's BLAS single-threaded in this process (once; grain workers call it too).

  The pipeline's matrix products are tiny (a resize of one image) and run in
  several grain threads next to XLA's own thread pool; OpenBLAS's spinning
  worker threads then cost far more than the products: resizing a 128² image
  to 16² measured 15 ms with OpenBLAS's default threads against 0.12 ms with
  one, and the face world's host pipeline ran at ~50 instead of ~500 faces/s.
  """
  threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def scale_points(points: np.ndarray, factor: float) -> np.ndarray:
  """Pixel coordinates (centres at integers) after resizing the image by `factor`."""
  return ((np.asarray(points, np.float32) + 0.5) * factor - 0.5).astype(np.float32)


def resize_region(region: np.ndarray, size: int) -> np.ndarray:
  """A float32 (S, S, 1) share of each pixel (e.g. the face world's degraded region) at size²: the mean over
  each output pixel's block when S is a multiple of `size` (the share of its area; a bicubic kernel would
  overshoot [0, 1] at the discs' edges), else the antialiased bilinear resize (non-negative weights)."""
  region = np.asarray(region, np.float32)
  side = region.shape[0]
  if side % size == 0 and region.shape[1] == side:
    factor = side // size
    return region.reshape(size, factor, size, factor, -1).mean(axis=(1, 3)).astype(np.float32)
  return np.clip(degradations.resize(region, size, "bilinear"), 0.0, 1.0).astype(np.float32)


class PrepareExample(grain.transforms.Map):
  """Resizes "input" to input_size² and "target" to target_size², scales to [-1, 1].

  "input" is resized with the config's downsampling kernel (e.g. FH-GAN's
  bilinear ×4, paper 003 §4.1); "target" with bicubic, only if the source's
  native size differs. Landmarks follow the target; "input_landmarks" (face
  world) follow "input", and "aligned_target" is prepared like "target".
  The face world's "degraded" region (data.local_degradation) follows "input"
  too, by area (`resize_region`), and stays a [0, 1] share, not an image.
  """

  def __init__(self, data_config):
    self.input_size = data_config.input_size
    self.target_size = data_config.target_size
    self.input_channels = data_config.input_channels
    self.downsample = data_config.downsample

  def map(self, example: dict) -> dict:
    limit_blas_to_one_thread()
    example = dict(example)
    target = example["target"]
    if target.shape[0] != self.target_size or target.shape[1] != self.target_size:
      scale = self.target_size / target.shape[1]
      target = degradations.resize(target, self.target_size, "bicubic")
      if "landmarks" in example:
        example["landmarks"] = scale_points(example["landmarks"], scale)   # pixel centres at integers
    source_image = example["input"]
    if source_image.ndim == 2:
      source_image = source_image[..., None]
    if source_image.shape[-1] != self.input_channels:
      raise ValueError(
          f"The source gives 'input' images with {source_image.shape[-1]} channels; "
          f"config.data.input_channels={self.input_channels}. Set input_channels to match the "
          f"source's modality (3 visible, 1 thermal/near-infrared).")
    if "aligned_target" in example:
      aligned = example["aligned_target"]
      if aligned.shape[0] != self.target_size or aligned.shape[1] != self.target_size:
        aligned = degradations.resize(aligned, self.target_size, "bicubic")
      example["aligned_target"] = to_unit_range(aligned)
    if source_image.shape[0] != self.input_size or source_image.shape[1] != self.input_size:
      if DEGRADED in example:
        example[DEGRADED] = resize_region(example[DEGRADED], self.input_size)
      if "input_landmarks" in example:
        example["input_landmarks"] = scale_points(example["input_landmarks"],
                                                  self.input_size / source_image.shape[1])
      source_image = degradations.resize(source_image, self.input_size, self.downsample)
      if source_image.ndim == 2:
        source_image = source_image[..., None]
    example["input"] = to_unit_range(source_image)
    example["target"] = to_unit_range(target)
    return example


DEGRADATION_KEYS = ("blur_sigma", "noise_sigma", "jpeg_quality")


def degradation_ranges(data_config) -> dict[str, tuple[float, float]]:
  """config.data.degradation -> {kind: (low, high)} of the kinds switched on ({} without any)."""
  section = data_config.degradation or {}
  section = dict(section.items()) if hasattr(section, "items") else {}
  unknown = sorted(set(section) - set(DEGRADATION_KEYS))
  if unknown:
    raise ValueError(f"config.data.degradation has {unknown}; expected keys among {list(DEGRADATION_KEYS)}, "
                     f"each a (low, high) range, e.g. blur_sigma=(0.2, 1.5), noise_sigma=(0, 5), jpeg_quality=(60, 95).")
  ranges = {}
  for kind, value in section.items():
    low, high = (float(value), float(value)) if np.ndim(value) == 0 else (float(value[0]), float(value[1]))
    if high < low or low < 0 or (kind == "jpeg_quality" and high > 95):
      raise ValueError(f"config.data.degradation.{kind}={value!r}; expected (low, high) with 0 <= low <= high"
                       f"{' <= 95' if kind == 'jpeg_quality' else ''}.")
    if high > 0:
      ranges[kind] = (low, high)
  return ranges


class DegradeInput(grain.transforms.RandomMap):
  """Random blur (Gaussian σ), additive noise (σ in 0..255 levels) and JPEG (quality) on the [-1, 1] "input".

  Applied in that order, each with parameters drawn uniformly from its range
  (config.data.degradation), after PrepareExample's downsampling: the usual
  blind-degradation model y = JPEG((x ↓s) ⊗ k + n). σ = 0 and quality 0 leave the input as it is.
  """

  def __init__(self, ranges: dict[str, tuple[float, float]]):
    self.ranges = dict(ranges)

  def random_map(self, example: dict, rng: np.random.Generator) -> dict:
    limit_blas_to_one_thread()
    example = dict(example)
    image = to_uint8(example["input"])
    draw = {kind: rng.uniform(low, high) for kind, (low, high) in self.ranges.items()}
    if draw.get("blur_sigma", 0.0) > 0:
      image = degradations.blur(image, degradations.gaussian_kernel(draw["blur_sigma"]))
    if draw.get("noise_sigma", 0.0) > 0:
      image = degradations.gaussian_noise(image, draw["noise_sigma"], rng)
    if draw.get("jpeg_quality", 0.0) >= 1:
      image = degradations.jpeg(image, int(round(draw["jpeg_quality"])))
    example["input"] = to_unit_range(image)
    return example


def available_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def default_worker_count() -> int:
  """Grain worker processes for config.data.worker_count = -1.

  On an accelerator host: every core this process may use but two (the
  training loop and the device transfers), at most 32; on a CPU backend 0,
  since the cores compute the step. A TPU v4/v5p host (one process, 100+
  cores) gets 32, a 16-core host 14; several processes on one node (one per
  GPU) should set worker_count to their own share of the cores.
  """
  import jax
  if jax.default_backend() == "cpu":
    return 0
  return max(1, min(available_cores() - 2, 32))


def reading_options(data_config) -> dict:
  """worker_count (resolved), worker_buffer_size, read_threads and read_buffer from config.data."""
  workers = int(data_config.worker_count)
  return {"worker_count": default_worker_count() if workers < 0 else workers,
          "worker_buffer_size": int(data_config.worker_buffer_size),
          "read_threads": int(data_config.read_threads),
          "read_buffer": int(data_config.read_buffer)}


def _absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; a program that is not an absl app has not parsed them."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(
        f"config.train.batch_size={global_batch_size} does not split over {process_count} "
        f"processes; use a multiple of {process_count}.")
  return global_batch_size // process_count


class RendererParameters:
  """A face-world source whose examples are renderer parameters, not images (render_on="device")."""

  def __init__(self, source: FaceWorldSource):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self.source.renderer_parameters(index)


def read_source(config, split: str):
  """(examples, per-example transform) for `split`.

  The source's images and PrepareExample; or, with config.data.render_on="device",
  the face world's renderer parameters and no transform (the trainer renders
  them on the devices: hallujax.data.device_render). Either way grain
  indexes, shuffles and shards the same indices, so the order is the same.
  """
  source = make_source(config.data, split)
  if not device_render.renders_on_device(config.data):
    return source, PrepareExample(config.data)
  if not isinstance(source, FaceWorldSource):
    raise ValueError(
        f"config.data.render_on='device' renders face-world examples on the accelerator, but "
        f"config.data.source={config.data.source!r} reads {type(source).__name__} images. "
        f"Use render_on='host' (the default) for this source, or source='faceworld'.")
  return RendererParameters(source), None


def client_partitions(config, split: str, length: int) -> list[np.ndarray]:
  """The example indices of each client (``config.data.clients`` > 0): client k reads k, k + K, ...

  Federated methods replace this split by their own through ``config.data.client_partition``:
  "interleaved" (built in), "dirichlet" (hallujax.data.partition: Dirichlet(α) label skew
  per site, ``config.data.partition``) or "sites" (one client per site holding that site's examples).
  """
  clients = int(config.data.clients)
  kind = config.data.client_partition
  if kind in ("dirichlet", "sites"):
    from hallujax.data import partition
    return partition.client_partitions(config, split, length)
  if kind != "interleaved":
    raise ValueError(f"config.data.client_partition={kind!r} is not known; expected 'interleaved', 'dirichlet' "
                     f"or 'sites'.")
  if length < clients:
    raise ValueError(f"The {split} split has {length} examples for config.data.clients={clients} clients.")
  return [np.arange(k, length, clients) for k in range(clients)]


class Subset:
  """The examples of `source` at `indices`, as a source of its own (a client's partition)."""

  def __init__(self, source, indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int):
    return self.source[int(self.indices[index])]


class ProcessSlice:
  """Process i's part of every global batch of `ordered` (a shuffled or plain MapDataset).

  Global batch k is elements [k·G, (k+1)·G) of the one order every process
  computes alike; process i reads its L = G / n of them, [k·G + i·L, k·G + (i+1)·L).
  So the global batches, and the training, are the same for any process count,
  and no example appears twice within a global batch.
  """

  def __init__(self, ordered, process_index: int, process_count: int, local_batch: int):
    self.ordered, self.index, self.count, self.local = ordered, process_index, process_count, local_batch
    self.global_batch = local_batch * process_count

  def __len__(self) -> int:
    return (len(self.ordered) // self.global_batch) * self.local

  def __getitem__(self, position: int):
    batch, offset = divmod(int(position), self.local)
    return self.ordered[batch * self.global_batch + self.index * self.local + offset]


def _process_view(dataset: grain.MapDataset, process_index: int, process_count: int,
                  local_batch: int) -> grain.MapDataset:
  if process_count == 1:
    return dataset
  return grain.MapDataset.source(ProcessSlice(dataset, process_index, process_count, local_batch))


def _transformed(dataset: grain.MapDataset, prepare, config, seed: int) -> grain.MapDataset:
  """PrepareExample, then the random input degradations (if any), per example of the global order.

  Applied before the process view, so example k of the global order gets the
  same degradation, drawn from (seed, k), whatever the number of processes.
  """
  if prepare is None:
    return dataset
  dataset = dataset.map(prepare)
  ranges = degradation_ranges(config.data)
  if ranges:
    dataset = dataset.random_map(DegradeInput(ranges), seed=seed)
  return dataset


def _batched(dataset: grain.MapDataset, batch_size: int) -> grain.MapDataset:
  return dataset.batch(batch_size, drop_remainder=True)


def _stack_clients(batches: list[dict]) -> dict:
  return {name: np.stack([batch[name] for batch in batches]) for name in batches[0]}


def _client_datasets(config, split: str, examples, prepare, batch_size: int, process_index: int,
                     process_count: int, shuffle: bool) -> grain.MapDataset:
  """One dataset of (K, batch_size, ...) batches: client k's batch i is its own partition's i-th batch."""
  per_client = []
  for k, indices in enumerate(client_partitions(config, split, len(examples))):
    dataset = grain.MapDataset.source(Subset(examples, indices))
    if shuffle:
      dataset = dataset.seed(config.seed + k).shuffle().repeat()
    dataset = _transformed(dataset, prepare, config, config.seed + k)
    dataset = _process_view(dataset, process_index, process_count, batch_size)
    per_client.append(_batched(dataset, batch_size))
  length = min(len(d) for d in per_client)
  return grain.MapDataset.range(length).map(lambda i: _stack_clients([d[i] for d in per_client]))


def train_dataset(config, *, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The endless, shuffled, process-sharded training batches ((K, B, ...) with config.data.clients = K)."""
  examples, prepare = read_source(config, "train")
  batch_size = local_batch_size(config.train.batch_size, process_count)
  if config.data.clients:
    dataset = _client_datasets(config, "train", examples, prepare, batch_size, process_index, process_count,
                               shuffle=True)
  else:
    dataset = grain.MapDataset.source(examples).seed(config.seed).shuffle().repeat()
    dataset = _transformed(dataset, prepare, config, config.seed)
    dataset = _batched(_process_view(dataset, process_index, process_count, batch_size), batch_size)
  options = reading_options(config.data)
  iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=options["read_threads"],
                                                           prefetch_buffer_size=options["read_buffer"]))
  if options["worker_count"] > 0:
    _absl_flags_parsed()
    iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=options["worker_count"], per_worker_buffer_size=options["worker_buffer_size"]))
  return iter_dataset


def eval_batches(config, split: str = "validation", *, batches: int | None = None, process_index: int = 0,
                 process_count: int = 1) -> list[dict]:
  """The first `batches` (default `config.train.eval_batches`) batches of `split`, in order (host arrays)."""
  examples, prepare = read_source(config, split)
  batch_size = local_batch_size(config.train.batch_size, process_count)
  if config.data.clients:
    dataset = _client_datasets(config, split, examples, prepare, batch_size, process_index, process_count,
                               shuffle=False)
  else:
    dataset = _transformed(grain.MapDataset.source(examples), prepare, config, config.seed)
    dataset = _batched(_process_view(dataset, process_index, process_count, batch_size), batch_size)
  count = min(config.train.eval_batches if batches is None else batches, len(dataset))
  if count == 0:
    raise ValueError(
        f"The {split} split has {len(examples)} examples, fewer than one batch of {batch_size}; "
        f"lower config.train.batch_size or enlarge the split.")
  return [dataset[i] for i in range(count)]


class IteratorStateRecorder:
  """Wraps a grain iterator and remembers its state after every batch it yields.

  The trainer prefetches batches to the device ahead of the step that
  consumes them, so the live iterator is always a few batches ahead. A
  checkpoint must instead record the position right after the last batch a
  step consumed; ``state_after(k)`` gives it. The object handed to grain's
  orbax handler (``checkpoint_item``) writes one JSON file per process.
  """

  def __init__(self, iterator: Iterator):
    self._iterator = iterator
    self._states: dict[int, bytes] = {}
    self._produced = 0

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._iterator)
    self._produced += 1
    self._states[self._produced] = json.dumps(self._iterator.get_state()).encode()
    # Keep only the recent states; the trainer never looks further back than its prefetch depth.
    self._states.pop(self._produced - 64, None)
    return batch

  def state_after(self, consumed_batches: int) -> bytes:
    if consumed_batches == 0:
      raise ValueError("No batch has been consumed yet.")
    return self._states[consumed_batches]

  def restore(self, state: bytes) -> None:
    self._iterator.set_state(json.loads(state.decode()))

  def close(self) -> None:
    """Stops grain's worker processes (config.data.worker_count > 0) and frees their shared memory."""
    getattr(self._iterator, "close", lambda: None)()


class SavedIteratorState:
  """The duck-typed iterator that grain's orbax CheckpointHandler saves and restores."""

  def __init__(self, state: bytes = b"{}"):
    self.state = state

  def get_state(self) -> bytes:
    return self.state

  def set_state(self, state: bytes) -> None:
    self.state = state

  def start_prefetch(self) -> None:
    """Called by grain's handler after restoring; nothing runs ahead here."""
