"""Convert a dataset into compact array_record shards, in parallel and resumably; read them back.

The command is ``python -m hallujax.prepare`` (hallujax/prepare.py: its flags). It
writes ``OUT/<split>-<k>-of-<n>.array_record`` for train, validation and test,
``OUT/plan.json`` (what is being prepared), ``OUT/manifest/`` (one entry per
finished shard) and, once every shard is done, ``OUT/info.json`` (counts,
format version, bytes per example) and ``OUT/unusable.txt`` (one line per left-out
file, non-printable characters of its name escaped as in Python: ``\\n``). Train with
``--config.data.source=prepared --config.data.data_dir=OUT`` (PreparedSource).

Records (hallujax.data.records, format version 2) hold each picture once,
encoded; labels and landmarks alongside. ``--encoding``:

    auto (default)  the source file's original JPEG bytes when no --target_size is
                    asked and the layout's example is a crop of one JPEG file
                    (celeba_folder, vggface2_folder, lfw_folder, image_folder),
                    PNG otherwise. Why: without a resize the original bytes are
                    the smallest exact copy (decoding + the stored crop gives the
                    folder source's pixels exactly; nothing is re-encoded, and
                    re-encoding as JPEG would add a second generation of artefacts
                    to the HR targets the losses compare against, while PNG of
                    JPEG-decoded pixels is ~3× the JPEG's size). With a resize the
                    pixels are new and PNG keeps them lossless.
    png             always PNG (lossless; each record decodes only the crop).
    jpeg            original bytes, and an error where they cannot be used.

The derived fields (the degraded low-resolution input, bicubic baselines) are
made by the input pipeline, never stored. With ``--target_size`` images are
resized (MATLAB bicubic) to target_size² before writing; the pipeline then
downsamples that HR image, as the papers downsample their HR ground truth.

Work is split into shards, contiguous ranges of the source's examples (about
``--examples_per_shard``, or ``--shards`` per split); ``--workers`` processes
(default: every core this process may use) write one shard each at a time,
into a temporary file renamed on completion, followed by its manifest entry.
Running the same command again after an interruption skips finished shards.
Unreadable source images are skipped and listed (in the shard's manifest entry
and ``unusable.txt``), or stop the run with ``--strict``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
import multiprocessing
import os
import sys
import time

import numpy as np

from hallujax.data import records
from hallujax.data.pipeline import available_cores, scale_points
from hallujax.errors import first_line

SPLITS = ("train", "validation", "test")
ENCODINGS = ("auto", "png", "jpeg")
ARRAY_RECORD_OPTIONS = "group_size:1,uncompressed"   # payloads are already compressed images


# ----- one example ------------------------------------------------------------------


def resize_example(example: dict, size: int) -> dict:
  """Images resized to size² (MATLAB bicubic); landmarks follow "target" about pixel centres."""
  from hallujax.data import degradations
  example = dict(example)
  same_view = example.get("input") is example.get("target")
  for key in ("target", "input", "aligned_target"):
    if key not in example:
      continue
    if key == "input" and same_view:
      example["input"] = example["target"]
      continue
    image = example[key]
    if image.shape[0] != size or image.shape[1] != size:
      example[key] = degradations.resize(image, size, "bicubic")
      if key == "target":
        for field in ("landmarks", "landmarks5"):
          if field in example:
            example[field] = scale_points(example[field], size / image.shape[1])
  return example


def original_bytes(source, index: int, example: dict, encoding: str):
  """{"target": (file bytes, crop box)} when the record can hold the source file's JPEG bytes for this
  example (checked: they decode to its pixels; a same-view "input" then refers to them), else {} (PNG);
  with encoding "jpeg" an error instead of {}."""
  if encoding == "png":
    return {}
  original = getattr(source, "original", lambda index: None)(index)
  reason = None
  if original is None:
    reason = f"{type(source).__name__} examples are not crops of one image file"
  else:
    path, box = original
    with open(path, "rb") as f:
      data = f.read()
    if data[:3] != b"\xff\xd8\xff":
      reason = f"{path} is not a JPEG file"
    else:
      channels = np.shape(example["target"])[-1]
      decoded = records.decode_image({"data": data, "channels": channels, "box": box})
      if decoded.shape != example["target"].shape or not np.array_equal(decoded, example["target"]):
        reason = f"{path}: its decoded crop differs from the source's example"
  if reason is None:
    return {"target": (data, box)}
  if encoding == "jpeg":
    raise ValueError(f"--encoding jpeg stores original JPEG files, but {reason}; use --encoding png or auto.")
  return {}


def escape_line(text: str) -> str:
  """`text` on one line: backslashes and characters that are not printable (a newline in a file name) written
  as Python escapes, so a file name cannot forge lines of unusable.txt or of the log."""
  return "".join(character if character.isprintable() and character != "\\"
                 else character.encode("unicode_escape").decode("ascii") for character in text)


# ----- the plan, shards and the manifest ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shard:
  split: str
  index: int
  count: int          # shards in the split
  start: int          # source examples [start, stop)
  stop: int

  @property
  def name(self) -> str:
    return f"{self.split}-{self.index:05d}-of-{self.count:05d}"

  def path(self, out_dir: str) -> str:
    return os.path.join(out_dir, self.name + ".array_record")

  def manifest_path(self, out_dir: str) -> str:
    return os.path.join(out_dir, "manifest", self.name + ".json")


def split_shards(split: str, length: int, shards: int) -> list[Shard]:
  """`shards` contiguous, near-equal ranges of [0, length)."""
  shards = max(1, min(shards, length)) if length else 1
  bounds = [k * length // shards for k in range(shards + 1)]
  return [Shard(split, k, shards, bounds[k], bounds[k + 1]) for k in range(shards)]


def shards_of_host(shards: list[Shard], host_index: int, num_hosts: int) -> list[Shard]:
  """Host i of n prepares the i-th contiguous block of the shards (its own shard range)."""
  if not 0 <= host_index < num_hosts:
    raise ValueError(f"--host_index={host_index} with --num_hosts={num_hosts}; expected 0 <= index < hosts.")
  lower, upper = host_index * len(shards) // num_hosts, (host_index + 1) * len(shards) // num_hosts
  return shards[lower:upper]


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def write_json(path: str, content) -> None:
  """Writes atomically (a temporary file renamed), so a reader never sees half a file."""
  temporary = f"{path}.tmp{os.getpid()}"
  with open(temporary, "w") as f:
    json.dump(content, f, indent=2)
  os.replace(temporary, path)


def finished(shard: Shard, out_dir: str) -> dict | None:
  """The shard's manifest entry if the shard was written completely, else None."""
  entry_path, path = shard.manifest_path(out_dir), shard.path(out_dir)
  if not (os.path.isfile(entry_path) and os.path.isfile(path)):
    return None
  entry = read_json(entry_path)
  return entry if entry.get("bytes") == os.path.getsize(path) else None


def check_plan(out_dir: str, plan: dict) -> None:
  """Writes OUT/plan.json, or checks that an earlier prepare into OUT had the same settings."""
  path = os.path.join(out_dir, "plan.json")
  if not os.path.isfile(path):
    write_json(path, plan)
    return
  earlier = read_json(path)
  keys = ("format_version", "source", "pairing", "target_size", "encoding", "splits")
  differing = [k for k in keys if earlier.get(k) != plan.get(k)]
  if differing:
    raise ValueError(f"{out_dir} holds a prepare with other settings ({', '.join(f'{k}: {earlier.get(k)!r}' for k in differing)}; "
                     f"now {', '.join(repr(plan.get(k)) for k in differing)}). Resume with the same settings or "
                     f"use another --out_dir.")


# ----- writing a shard (in a worker process) ------------------------------------------

_worker: dict = {}


def _init_worker(data_config: dict, settings: dict, counter, pool: bool = False) -> None:
  if pool:   # the parent handles Ctrl-C and SIGTERM and stops the workers; a stopped shard stays .partial
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
  _worker.update(data_config=data_config, settings=settings, counter=counter, sources={})
  if settings.get("threads_one"):   # each worker resizes on one core (see pipeline.limit_blas_to_one_thread)
    import threadpoolctl
    threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def _source(split: str):
  import ml_collections
  from hallujax.data.sources import make_source
  sources = _worker["sources"]
  if split not in sources:
    sources[split] = make_source(ml_collections.ConfigDict(_worker["data_config"]), split)
  return sources[split]


def write_shard(shard: Shard) -> dict:
  """Writes one shard (into a temporary file, renamed when complete) and its manifest entry."""
  from array_record.python.array_record_module import ArrayRecordWriter
  from hallujax.data.image_files import BadImageError
  settings, counter = _worker["settings"], _worker["counter"]
  out_dir = settings["out_dir"]
  source = _source(shard.split)
  load = getattr(source, "load", source.__getitem__)   # folder sources: no substitution of bad files
  started = time.time()
  temporary = shard.path(out_dir) + ".partial"
  writer = ArrayRecordWriter(temporary, ARRAY_RECORD_OPTIONS)
  written, unusable, originals_kept, pending, failed = 0, [], 0, 0, False
  encoding = "png" if settings["target_size"] else settings["encoding"]   # resized pixels are new: PNG
  try:
    for index in range(shard.start, shard.stop):
      try:
        example = load(index)
      except BadImageError as error:
        if settings["strict"]:
          raise
        unusable.append(escape_line(str(error)))
      else:
        if settings["target_size"]:
          example = resize_example(example, settings["target_size"])
        originals = original_bytes(source, index, example, encoding)
        originals_kept += bool(originals)
        writer.write(records.encode(example, originals))
        written += 1
      pending += 1
      if counter is not None and pending == 16:
        with counter.get_lock():
          counter.value += pending
        pending = 0
  except Exception:   # a failed shard leaves nothing behind (an interrupted one stays .partial, see _init_worker)
    failed = True
    raise
  finally:
    writer.close()
    if failed:
      os.remove(temporary)
  if counter is not None and pending:
    with counter.get_lock():
      counter.value += pending
  os.replace(temporary, shard.path(out_dir))
  entry = {"examples": written, "source_range": [shard.start, shard.stop], "unusable": unusable,
           "original_jpeg": originals_kept, "bytes": os.path.getsize(shard.path(out_dir)),
           "seconds": round(time.time() - started, 3), "pid": os.getpid()}
  write_json(shard.manifest_path(out_dir), entry)
  return {"shard": shard.name, **entry}


def read_shard(shard: Shard) -> dict:
  """Re-reads and decodes every record of a finished shard: {"shard", "records", "bad": [(index, error)]}."""
  from array_record.python.array_record_module import ArrayRecordReader
  out_dir, counter = _worker["settings"]["out_dir"], _worker["counter"]
  path = shard.path(out_dir)
  if not os.path.isfile(path):
    return {"shard": shard.name, "records": 0, "bad": [(-1, f"{path} is missing")]}
  bad, count = [], 0
  try:
    reader = ArrayRecordReader(path)
    count = reader.num_records()
  except Exception as error:   # array_record raises RuntimeError / ValueError subtypes for a damaged file
    return {"shard": shard.name, "records": 0, "bad": [(-1, f"{path}: the file does not open ({error})")]}
  for index in range(count):
    try:
      records.decode(reader.read([index])[0], where=f"{shard.name} record {index}")
    except Exception as error:   # a damaged chunk (array_record) or record (checksum, image decode)
      bad.append((index, first_line(error)))
    if counter is not None:
      with counter.get_lock():
        counter.value += 1
  reader.close()
  entry = finished(shard, out_dir)
  if entry is not None and entry["examples"] != count:
    bad.append((-1, f"{path} holds {count} records; its manifest entry says {entry['examples']}"))
  return {"shard": shard.name, "records": count, "bad": bad}


# ----- progress -----------------------------------------------------------------------


class Progress:
  """One line: done/total, a bar, examples/s and the time left (rewritten in place on a terminal)."""

  def __init__(self, label: str, total: int, stream=None, every: float = 0.5):
    self.label, self.total, self.stream = label, total, stream or sys.stderr
    self.started = time.time()
    self.every = every if self.stream.isatty() else 10.0
    self.last = 0.0

  def line(self, done: int, extra: str = "") -> str:
    elapsed = max(time.time() - self.started, 1e-9)
    rate = done / elapsed
    left = (self.total - done) / rate if rate > 0 else float("nan")
    filled = int(30 * done / self.total) if self.total else 30
    eta = time.strftime("%H:%M:%S", time.gmtime(left)) if math.isfinite(left) else "--:--:--"
    return (f"{self.label} {done}/{self.total} [{'#' * filled}{'.' * (30 - filled)}] "
            f"{rate:,.0f} ex/s, elapsed {time.strftime('%H:%M:%S', time.gmtime(elapsed))}, ETA {eta}{extra}")

  def update(self, done: int, extra: str = "", final: bool = False) -> None:
    now = time.time()
    if not final and now - self.last < self.every:
      return
    self.last = now
    end = "\n" if final or not self.stream.isatty() else ""
    self.stream.write(("\r" if self.stream.isatty() else "") + self.line(done, extra) + end)
    self.stream.flush()


def run_tasks(function, tasks: list, workers: int, data_config: dict, settings: dict, progress: Progress,
              total_label) -> list[dict]:
  """function(task) for every task, in `workers` processes (in this one when workers <= 1)."""
  # fork starts workers at once; a process that already runs JAX's or TensorFlow's threads must not fork.
  threaded = "jax" in sys.modules or "tensorflow" in sys.modules
  context = multiprocessing.get_context(
      "fork" if "fork" in multiprocessing.get_all_start_methods() and not threaded else "spawn")
  counter = context.Value("q", 0)
  results = []
  if workers <= 1 or len(tasks) <= 1:
    _init_worker(data_config, settings, counter)
    for task in tasks:
      results.append(function(task))
      progress.update(counter.value, total_label(results))
    progress.update(counter.value, total_label(results), final=True)
    return results
  with context.Pool(min(workers, len(tasks)), initializer=_init_worker,
                    initargs=(data_config, settings, counter, True)) as pool:
    pending = pool.imap_unordered(function, tasks)
    while len(results) < len(tasks):
      try:
        results.append(pending.next(timeout=0.5))
      except multiprocessing.TimeoutError:
        pass
      progress.update(counter.value, total_label(results))
  progress.update(counter.value, total_label(results), final=True)
  return results


# ----- the command ----------------------------------------------------------------------


def make_plan(data_config, arguments) -> tuple[dict, dict[str, list[Shard]]]:
  from hallujax.data.sources import make_source
  plan = {"format_version": records.FORMAT_VERSION, "source": arguments.source, "data_dir": arguments.data_dir,
          "pairing": arguments.pairing, "target_size": arguments.target_size, "encoding": arguments.encoding,
          "splits": {}}
  shards = {}
  for split in arguments.splits.split(","):
    length = len(make_source(data_config, split))
    count = arguments.shards or max(1, math.ceil(length / arguments.examples_per_shard))
    shards[split] = split_shards(split, length, count)
    plan["splits"][split] = {"source_examples": length, "shards": len(shards[split])}
  return plan, shards


def finalize(out_dir: str, plan: dict, shards: dict[str, list[Shard]]) -> dict | None:
  """Writes info.json and unusable.txt once every shard of every split is finished; returns the info."""
  entries = {split: [finished(shard, out_dir) for shard in split_list] for split, split_list in shards.items()}
  if any(entry is None for split_entries in entries.values() for entry in split_entries):
    return None
  unusable = [reason for split_entries in entries.values() for entry in split_entries for reason in entry["unusable"]]
  examples = sum(entry["examples"] for split_entries in entries.values() for entry in split_entries)
  stored = sum(entry["bytes"] for split_entries in entries.values() for entry in split_entries)
  info = {key: plan[key] for key in ("format_version", "source", "pairing", "target_size", "encoding")}
  info.update(
      splits={split: sum(entry["examples"] for entry in split_entries) for split, split_entries in entries.items()},
      shards={split: len(split_list) for split, split_list in shards.items()},
      unusable=len(unusable), bytes=stored, bytes_per_example=round(stored / max(examples, 1), 1),
      original_jpeg=sum(entry["original_jpeg"] for split_entries in entries.values() for entry in split_entries))
  with open(os.path.join(out_dir, "unusable.txt"), "w") as f:
    f.write("".join(reason + "\n" for reason in unusable))
  write_json(os.path.join(out_dir, "info.json"), info)
  return info


def prepare(arguments, log=print) -> dict:
  """Prepares (or resumes) this host's shards; returns {"written": [...], "skipped": [...], "info": ... | None}."""
  from hallujax.config_base import base_config
  data_config = base_config().data
  data_config.update(source=arguments.source, data_dir=arguments.data_dir, pairing=arguments.pairing,
                     target_size=arguments.target_size or 0, strict=arguments.strict)
  if arguments.max_pixels is not None:
    data_config.max_pixels = arguments.max_pixels
  os.makedirs(os.path.join(arguments.out_dir, "manifest"), exist_ok=True)
  plan, shards = make_plan(data_config, arguments)
  check_plan(arguments.out_dir, plan)
  mine = [shard for split in shards for shard in shards_of_host(shards[split], arguments.host_index,
                                                                 arguments.num_hosts)]
  done = [shard for shard in mine if finished(shard, arguments.out_dir) is not None]
  todo = [shard for shard in mine if shard not in done]
  examples = sum(shard.stop - shard.start for shard in todo)
  workers = arguments.workers or available_cores()
  log(f"{arguments.out_dir}: host {arguments.host_index} of {arguments.num_hosts} has {len(mine)} shards; "
      f"{len(done)} already finished (skipped), {len(todo)} to write ({examples} source examples) "
      f"with {min(workers, max(len(todo), 1))} worker processes.")
  settings = {"out_dir": arguments.out_dir, "target_size": arguments.target_size, "encoding": arguments.encoding,
              "strict": arguments.strict, "threads_one": True}
  progress = Progress("prepare", examples)
  results = run_tasks(write_shard, todo, workers, data_config.to_dict(), settings, progress,
                      lambda results: f", {len(results)}/{len(todo)} shards, "
                                      f"{sum(len(r['unusable']) for r in results)} unusable")
  for result in results:
    for reason in result["unusable"]:
      logging.warning("%s: left out %s", result["shard"], reason)
  info = finalize(arguments.out_dir, plan, shards)
  if info is None:
    log(f"host {arguments.host_index}: its shards are finished; info.json is written when every host's are "
        f"(the last host to finish writes it; or run the same command again with --num_hosts 1 to check).")
  else:
    log(f"{arguments.out_dir}: {info['splits']} examples, {info['unusable']} unusable source files left out "
        f"(unusable.txt), {info['bytes_per_example']:.0f} bytes per example.")
  return {"written": [r["shard"] for r in results], "skipped": [s.name for s in done], "info": info}


def verify(arguments, log=print) -> list[str]:
  """Re-reads every record of OUT; returns one line per unreadable record (or damaged shard)."""
  plan_path = os.path.join(arguments.out_dir, "plan.json")
  if not os.path.isfile(plan_path):
    raise FileNotFoundError(f"{arguments.out_dir} has no plan.json: it is not a prepare's output directory.")
  plan = read_json(plan_path)
  shards = [shard for split, entry in plan["splits"].items()
            for shard in split_shards(split, entry["source_examples"], entry["shards"])]
  total = sum(entry["examples"] for shard in shards if (entry := finished(shard, arguments.out_dir)))
  progress = Progress("verify", total)
  results = run_tasks(read_shard, shards, arguments.workers or available_cores(), {},
                      {"out_dir": arguments.out_dir}, progress, lambda results: f", {len(results)}/{len(shards)} shards")
  problems = [f"{result['shard']} record {index}: {error}" if index >= 0 else f"{result['shard']}: {error}"
              for result in sorted(results, key=lambda r: r["shard"]) for index, error in result["bad"]]
  read = sum(result["records"] for result in results)
  log(f"verify {arguments.out_dir}: {read} records in {len(shards)} shards, {len(problems)} unreadable"
      + "".join(f"\n  {line}" for line in problems))
  return problems


class PreparedSource:
  """Examples written by ``python -m hallujax.prepare`` (data.data_dir = its --out_dir)."""

  def __init__(self, data_config, split: str):
    import grain
    data_dir = os.path.expanduser(data_config.data_dir or "")
    info_path = os.path.join(data_dir, "info.json")
    self.paths = sorted(glob.glob(os.path.join(data_dir, f"{split}-*-of-*.array_record")))
    if not self.paths:
      raise FileNotFoundError(
          f"config.data.data_dir={data_dir!r} holds no {split}-*.array_record shards. Make them once with "
          f"`python -m hallujax.prepare --source SOURCE --data_dir RAW_DIR --out_dir {data_dir or 'OUT'}`.")
    if not os.path.isfile(info_path):
      raise FileNotFoundError(
          f"{data_dir} has no info.json: its prepare has not finished. Run the same prepare command again "
          f"to resume it (finished shards are kept).")
    info = read_json(info_path)
    version = info.get("format_version", 1)
    if version != records.FORMAT_VERSION:
      raise records.RecordVersionError(records.version_message(version, f"config.data.data_dir={data_dir!r}"))
    self.info = info
    self.records = grain.sources.ArrayRecordDataSource(self.paths)
    self.split = split

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return records.decode(self.records[int(index)], where=f"{self.split} record {index}")
