"""The benchmark behind ``python -m hallujax.benchmark``: one config, or a suite of every method's steps.

The one place throughput figures come from. For each jitted function, on the
mesh the trainer would use: compile time, how many programs XLA compiled for
it (a step that recompiles is a bug: it must be 1), how many times jax traced
it, the median and spread of the step time over timed calls after warm-up,
images/s, XLA's FLOP count (cost analysis), achieved TFLOP/s, MFU against the
device's dense peak (the table below, or --peak_tflops), the program's memory
(XLA memory analysis) and the device's peak memory so far (where the runtime
reports it). Inputs are random batches of the method's batch_spec; frozen
networks keep their random initialization (no file is read: throughput does
not depend on the weights).

A suite (``--suite paper|smoke``) runs this for every method that has a
config file, each named step, in each compute dtype, and writes one markdown
table and one JSON file. A method whose config or module does not exist yet is
listed in the table's notes, not an error; a config that fails (out of memory,
a bug) is noted with its error's first line and the suite goes on.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import gc
import json
import os
import platform
import statistics
import time
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from hallujax import run_setup
from hallujax.errors import named_first_line
from hallujax.data import feed as feed_lib
from hallujax.methods import METHODS
from hallujax.hlo_text import hlo_op_count

# Dense (no structured sparsity) peak TFLOP/s per chip: (float32 compute, bfloat16 compute), most specific
# device-kind substring first. float32 on NVIDIA Ampere/Hopper is the TF32 tensor-core peak: XLA:GPU runs
# float32 convolutions and matmuls in TF32 at the default precision. On TPU the default precision runs
# float32 matmuls as one bfloat16 pass, so both columns are the bfloat16 peak.
# Sources (datasheets halve the "with sparsity" figures they print first):
#   H100 SXM / H200: nvidia.com/en-us/data-center/h100 and /h200: BF16 1,979 and TF32 989 TFLOPS with sparsity.
#   H100 PCIe: the same page: BF16 1,513 and TF32 756 with sparsity.
#   A100: nvidia.com/en-us/data-center/a100: BF16 312, TF32 156 (dense).
#   TPU v4 275, v5e 197, v5p 459, v6e (Trillium) 918 bf16 TFLOP/s per chip: cloud.google.com/tpu/docs/v4, /v5e,
#   /v5p, /v6e ("System architecture" tables).
PEAK_TFLOPS = (
    ("H100 PCIe", 378.0, 756.5),
    ("H100", 494.7, 989.4),
    ("H200", 494.7, 989.4),
    ("GH200", 494.7, 989.4),
    ("A100", 156.0, 312.0),
    ("TPU v5 lite", 197.0, 197.0),   # v5e reports device_kind "TPU v5 lite"
    ("TPU v5e", 197.0, 197.0),
    ("TPU v5p", 459.0, 459.0),
    ("TPU v5", 459.0, 459.0),        # v5p reports "TPU v5"
    ("TPU v6 lite", 918.0, 918.0),   # v6e (Trillium)
    ("TPU v6e", 918.0, 918.0),
    ("TPU v4", 275.0, 275.0),
)

# What each suite benchmarks per method: config specs (configs/<file>.py[:variant]). A method not named
# here joins a suite as configs/<method>.py (paper) or configs/<method>.py:smoke when its config exists.
SUITES = {
    "paper": {
        "fhgan": ("fhgan.py",),                       # 28² → 112², batch 128 (paper 003 §4.1)
        "ipfh": ("ipfh.py:coarse", "ipfh.py:cognition", "ipfh.py:policy"),   # 16² → 128², per-stage batches
        "stylegan2": ("stylegan2.py", "stylegan2.py:512"),    # config-f 256² and 512², batch 32
        "arcface": ("arcface.py",),
        "vpgan": ("vpgan.py",),                       # 128² → 512², batch 4
        "pcfh": ("pcfh.py",),                         # 256²
        "pix2pix": ("pcfh.py:,ablation=pix2pix",),    # PCFH's Table 1 baselines, on its pairs
        "cyclegan": ("pcfh.py:,ablation=cyclegan",),
        "vividgan": ("vividgan.py",),                 # 16² → 128²
        "vpfl": ("vpfl.py",),                         # one round of K clients
    },
    "smoke": {
        "ipfh": ("ipfh.py:smoke",),
        # vpfl's smoke (8 clients, 16² → 64²) took 122 s per step on the loaded 2-core CPU; "tiny" is 2 clients.
        "vpfl": ("vpfl.py:tiny",),
        "pix2pix": ("pcfh.py:smoke,ablation=pix2pix",),
        "cyclegan": ("pcfh.py:smoke,ablation=cyclegan",),
    },
}


def peak_flops(device_kind: str, compute_dtype: str, devices: int, override_tflops: float = 0.0) -> float | None:
  """The mesh's dense peak FLOP/s for `compute_dtype` (None when the device is not in PEAK_TFLOPS)."""
  if override_tflops > 0:
    return override_tflops * 1e12 * devices
  for name, float32, bfloat16 in PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return (bfloat16 if compute_dtype == "bfloat16" else float32) * 1e12 * devices
  return None


def random_batch(spec: dict, leading: tuple[int, ...], seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  batch = {}
  for name, s in spec.items():
    shape = (*leading, *s.shape)
    if jnp.issubdtype(s.dtype, jnp.integer):
      batch[name] = rng.integers(0, 2, shape).astype(s.dtype)
    else:
      batch[name] = rng.uniform(-1, 1, shape).astype(s.dtype)
  return batch


def flops_of(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax returns one dict per program
    analysis = analysis[0] if analysis else {}
  flops = (analysis or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def program_bytes(compiled) -> int | None:
  """Device memory the program needs (XLA's memory analysis): its peak, or arguments + outputs + temporaries."""
  try:
    stats = compiled.memory_analysis()
  except Exception:   # some backends do not implement it
    return None
  if stats is None:
    return None
  peak = int(getattr(stats, "peak_memory_in_bytes", 0) or 0)
  if peak > 0:
    return peak
  total = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
  return int(total - stats.alias_size_in_bytes) or None


def device_peak_bytes() -> int | None:
  """The largest `peak_bytes_in_use` over local devices (process-wide so far), None where not reported."""
  peaks = []
  for device in jax.local_devices():
    try:
      stats = device.memory_stats()
    except Exception:
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None


class CompileCounter:
  """Counts XLA compilations while active, through jax.monitoring.

  jax records the backend-compile event once per program it compiles, whether XLA compiles it or the
  persistent compilation cache supplies it.
  """

  EVENTS = ("/jax/core/compile/backend_compile_duration",)

  def __init__(self):
    self.count = 0
    self.active = False
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if self.active and event in self.EVENTS:
      self.count += 1

  def __enter__(self):
    self.count, self.active = 0, True
    return self

  def __exit__(self, *exc):
    self.active = False


@functools.cache
def compile_counter() -> CompileCounter:
  return CompileCounter()


def time_calls(call: Callable, steps: int) -> list[float]:
  """Seconds per call, each call waited for (per-step times give the spread, not only the mean)."""
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return times


def counting(function, counter: dict, name: str):
  """`function`, counting how often jax traces it."""

  @functools.wraps(function)
  def traced(*args, **kwargs):
    counter[name] = counter.get(name, 0) + 1
    return function(*args, **kwargs)

  return traced


def percentile(values: list[float], q: float) -> float:
  return float(np.percentile(np.asarray(values), q))


@dataclasses.dataclass
class Row:
  """One benchmarked function of one config in one compute dtype."""
  method: str
  config: str
  step: str
  dtype: str
  devices: int
  device_kind: str
  images: int
  compile_seconds: float
  compiles: int
  traces: int
  median_seconds: float
  p10_seconds: float
  p90_seconds: float
  min_seconds: float
  max_seconds: float
  timed_steps: int
  images_per_second: float
  flops: float | None
  tflops_per_second: float | None
  mfu: float | None
  program_bytes: int | None
  device_peak_bytes: int | None
  hlo_ops: int | None = None   # instructions in the optimized HLO module (its size as compiled; issue 30)

  @property
  def spread(self) -> float:
    """(p90 − p10) / median."""
    return (self.p90_seconds - self.p10_seconds) / self.median_seconds


def make_row(*, method, config, step, dtype, images, compile_seconds, compiles, traces, times, flops, peak,
             memory, hlo_ops=None) -> Row:
  median = statistics.median(times)
  achieved = flops / median if flops else None
  return Row(method=method, config=config, step=step, dtype=dtype, devices=jax.device_count(),
             device_kind=jax.devices()[0].device_kind, images=images, compile_seconds=compile_seconds,
             compiles=compiles, traces=traces, median_seconds=median, p10_seconds=percentile(times, 10),
             p90_seconds=percentile(times, 90), min_seconds=min(times), max_seconds=max(times),
             timed_steps=len(times), images_per_second=images / median,
             tflops_per_second=achieved / 1e12 if achieved else None,
             mfu=achieved / peak if achieved and peak else None, flops=flops, program_bytes=memory,
             device_peak_bytes=device_peak_bytes(), hlo_ops=hlo_ops)


def line_of(row: Row) -> str:
  """The one-line report of a row (the single-config command prints these)."""
  line = (f"{row.step}: compile {row.compile_seconds:.2f} s ({row.hlo_ops} HLO ops) | "
          f"median {row.median_seconds * 1e3:.2f} ms (min {row.min_seconds * 1e3:.2f}, max {row.max_seconds * 1e3:.2f}, n={row.timed_steps}) | "
          f"{row.images_per_second:.1f} images/s")
  if row.flops:
    line += f" | {row.flops / 1e9:.2f} GFLOP/call | {row.tflops_per_second:.3f} TFLOP/s"
    line += f" | MFU {100 * row.mfu:.1f}%" if row.mfu is not None else " | MFU n/a (unknown peak)"
  if row.program_bytes:
    line += f" | program {row.program_bytes / 2**20:.0f} MiB"
  if row.device_peak_bytes:
    line += f" | device peak {row.device_peak_bytes / 2**20:.0f} MiB"
  return line + f" | traced {row.traces}x | compiled {row.compiles}x"


@dataclasses.dataclass
class Prepared:
  """A config's method, state, frozen tree and batch on the mesh: what every timed function needs."""
  method: object
  config: object
  mesh: object
  state: object
  state_shardings: object
  frozen: object
  frozen_shardings: object
  batch: dict
  images: int
  trace_counts: dict


def prepare(config) -> Prepared:
  run = run_setup.build(config)
  method, mesh = run.method, run.mesh
  counter: dict = {}
  counted = dataclasses.replace(
      method, steps={name: counting(fn, counter, name) for name, fn in method.steps.items()},
      hallucinate=counting(method.hallucinate, counter, "hallucinate"))
  run = dataclasses.replace(run, method=counted)   # the same init, so the same state layout
  batch_size = config.train.batch_size
  state, state_shardings = run.init_state(jax.random.key(config.seed)), run.state_shardings
  frozen, frozen_shardings = run.frozen_networks(jax.random.key(1), load=False)
  clients = int(config.data.clients)
  leading = (clients, batch_size) if method.batch_axes == ("clients", "batch") else (batch_size,)
  feed = feed_lib.Feed(config.data.copy_and_resolve_references(), mesh, method.batch_spec, method.batch_axes,
                       batch_size)
  feed.render = None   # random images, not renderer parameters
  batch = feed(random_batch(method.batch_spec, leading))
  return Prepared(counted, config, mesh, state, state_shardings, frozen, frozen_shardings, batch,
                  int(np.prod(leading)), counter)


def step_names(prepared: Prepared, named_steps: str) -> list[str]:
  """Every named step ("all"), or only the one that runs step 0 ("first")."""
  names = list(prepared.method.steps)
  if named_steps == "first":
    return [prepared.method.step_name(0)]
  if named_steps != "all":
    raise ValueError(f"named_steps={named_steps!r}; expected 'all' or 'first'.")
  return names


def run_train_step(prepared: Prepared, name: str, steps: int, warmup: int, label: dict, peak: float | None,
                   profile_dir: str | None = None) -> Row:
  """Compile, warm up and time the named train step (state donated, as the trainer runs it)."""
  program = run_setup.jit_steps(prepared.method, prepared.config, prepared.mesh, prepared.state_shardings,
                                prepared.frozen_shardings)[name]
  rng_data = jax.random.key_data(jax.random.key(1))
  holder = {"state": prepared.state}

  def call():
    holder["state"], metrics = program(holder["state"], prepared.frozen, prepared.batch, rng_data)
    return metrics

  with compile_counter() as compiles:
    start = time.perf_counter()
    compiled = program.lower(holder["state"], prepared.frozen, prepared.batch, rng_data).compile()
    compile_seconds = time.perf_counter() - start
    time_calls(call, warmup)   # the first call after donation allocates; later ones reuse buffers
    times = time_calls(call, steps)
  if profile_dir:
    jax.profiler.start_trace(profile_dir)
    time_calls(call, max(1, min(steps, 3)))
    jax.profiler.stop_trace()
  prepared.state = holder["state"]
  return make_row(**label, step=f"train_step[{name}]", images=prepared.images, compile_seconds=compile_seconds,
                  compiles=compiles.count, traces=prepared.trace_counts.get(name, 0), times=times,
                  flops=flops_of(compiled), peak=peak, memory=program_bytes(compiled),
                  hlo_ops=hlo_op_count(compiled))


def run_hallucinate(prepared: Prepared, steps: int, warmup: int, label: dict, peak: float | None) -> Row:
  generate = run_setup.GridColumns(prepared.method, prepared.mesh, prepared.state_shardings,
                                   prepared.frozen_shardings).jitted
  call = lambda: generate(prepared.state, prepared.frozen, prepared.batch)
  with compile_counter() as compiles:
    start = time.perf_counter()
    compiled = generate.lower(prepared.state, prepared.frozen, prepared.batch).compile()
    compile_seconds = time.perf_counter() - start
    time_calls(call, warmup)
    times = time_calls(call, steps)
  return make_row(**label, step="hallucinate", images=prepared.images, compile_seconds=compile_seconds,
                  compiles=compiles.count, traces=prepared.trace_counts.get("hallucinate", 0), times=times,
                  flops=flops_of(compiled), peak=peak, memory=program_bytes(compiled),
                  hlo_ops=hlo_op_count(compiled))


def with_dtype(config, dtype: str | None):
  if not dtype or dtype == config.train.compute_dtype:
    return config
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"compute dtype {dtype!r}; expected float32 or bfloat16.")
  config = config.copy_and_resolve_references()
  config.train.compute_dtype = dtype
  return config


def benchmark(config, steps: int, what: Iterable[str] = ("train_step", "hallucinate"), peak_tflops: float = 0.0,
              *, warmup: int = 2, named_steps: str = "all", spec: str = "", print_lines: bool = True) -> list[Row]:
  """Every named train step (and `hallucinate`) of one config; one line per function as it finishes."""
  prepared = prepare(config)
  dtype = config.train.compute_dtype
  kind = jax.devices()[0].device_kind
  peak = peak_flops(kind, dtype, jax.device_count(), peak_tflops)
  if print_lines:
    print(f"{config.method} | {jax.device_count()} × {kind} | mesh {dict(prepared.mesh.shape)} | "
          f"batch {config.train.batch_size} | {dtype}", flush=True)
  label = dict(method=config.method, config=spec or config.method, dtype=dtype)
  rows = []
  if "train_step" in what:
    for name in step_names(prepared, named_steps):
      rows.append(run_train_step(prepared, name, steps, warmup, label, peak))
      if print_lines:
        print(line_of(rows[-1]), flush=True)
  if "hallucinate" in what:
    rows.append(run_hallucinate(prepared, steps, warmup, label, peak))
    if print_lines:
      print(line_of(rows[-1]), flush=True)
  return rows


# ----------------------------------------------------------------------------- suites


@dataclasses.dataclass(frozen=True)
class Entry:
  method: str
  spec: str     # configs/<file>.py[:variant]


def suite_entries(suite: str, configs_dir: str = "configs", methods: Iterable[str] = ()) -> tuple[list[Entry], list[str]]:
  """(entries, notes): the suite's configs that exist, and a note for each method left out and why."""
  if suite not in SUITES:
    raise ValueError(f"--suite={suite!r} is not a suite; expected one of {', '.join(SUITES)} (or torch).")
  wanted = list(methods)
  unknown = [m for m in wanted if m not in METHODS]
  if unknown:
    raise ValueError(f"--methods names {', '.join(unknown)}, not known methods; known: {', '.join(METHODS)}.")
  entries, notes = [], []
  # StyleGAN2 first: its 256² step is the one with a stated goal (issue 17), so a short budget still measures it.
  for method in sorted(METHODS, key=lambda name: name != "stylegan2"):
    if wanted and method not in wanted:
      continue
    default = (f"{method}.py",) if suite == "paper" else (f"{method}.py:{suite}",)
    for relative in SUITES[suite].get(method, default):
      path = os.path.join(configs_dir, relative.partition(":")[0])
      if not os.path.isfile(path):
        notes.append(f"{method}: no {path} yet, left out.")
        continue
      entries.append(Entry(method, os.path.join(configs_dir, relative)))
  return entries, notes


def load_config(spec: str):
  from hallujax import run_files
  return run_files.load_config_file(spec)


def run_entries(entries: list[Entry], dtypes: list[str], *, steps: int, warmup: int, named_steps: str,
                budget_seconds: float = 0.0, peak_tflops: float = 0.0, log: Callable[[str], None] = print,
                loader: Callable = load_config) -> tuple[list[Row], list[str]]:
  """Every entry in every dtype; (rows, notes). Stops starting new work once `budget_seconds` is spent."""
  rows, notes = [], []
  start = time.monotonic()
  for entry in entries:
    for dtype in dtypes:
      if budget_seconds and time.monotonic() - start > budget_seconds:
        notes.append(f"{entry.spec} [{dtype}]: not run, the time budget ({budget_seconds:.0f} s) was spent.")
        continue
      prepared = None
      try:
        config = with_dtype(loader(entry.spec), dtype)
        prepared = prepare(config)
        names = step_names(prepared, named_steps)
        skipped = [n for n in prepared.method.steps if n not in names]
        if skipped:
          notes.append(f"{entry.spec} [{dtype}]: named steps {', '.join(skipped)} not run (--named_steps=first).")
        peak = peak_flops(jax.devices()[0].device_kind, dtype, jax.device_count(), peak_tflops)
        label = dict(method=entry.method, config=entry.spec, dtype=dtype)
        for name in names:
          if budget_seconds and time.monotonic() - start > budget_seconds:
            notes.append(f"{entry.spec} [{dtype}] {name}: not run, the time budget was spent.")
            continue
          rows.append(run_train_step(prepared, name, steps, warmup, label, peak))
          log(f"{entry.spec} [{dtype}] {line_of(rows[-1])}")
      except Exception as error:   # one failing config (a bug, out of memory) must not end the suite
        notes.append(f"{entry.spec} [{dtype}]: failed, {named_first_line(error)}")
        log(notes[-1])
      finally:
        del prepared
        gc.collect()
  return rows, notes


def trace_slowest(rows: list[Row], trace_dir: str, *, warmup: int, loader: Callable = load_config) -> str | None:
  """A jax.profiler trace (TensorBoard / Perfetto) of a few calls of the slowest step; its directory."""
  if not rows:
    return None
  slowest = max(rows, key=lambda row: row.median_seconds)
  config = with_dtype(loader(slowest.config), slowest.dtype)
  prepared = prepare(config)
  name = slowest.step[len("train_step["):-1]
  run_train_step(prepared, name, 1, warmup, dict(method=slowest.method, config=slowest.config, dtype=slowest.dtype),
                 None, profile_dir=trace_dir)
  return f"profiler trace of {slowest.config} {slowest.step} [{slowest.dtype}] in {trace_dir}"


def environment() -> dict:
  """Where the figures were taken: device, versions, host load (timings under load are labelled by it)."""
  load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
  return dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind, devices=jax.device_count(),
              processes=jax.process_count(), jax=jax.__version__, python=platform.python_version(),
              host=platform.node(), cpus=os.cpu_count(), load_average_1min=round(load[0], 2),
              xla_flags=os.environ.get("XLA_FLAGS", ""))


def under_load(env: dict) -> bool:
  """The host ran more runnable tasks than it has cores: timings are not a quiet machine's."""
  return env["backend"] == "cpu" and env["load_average_1min"] > (env["cpus"] or 1)


def _number(value, scale: float = 1.0) -> str:
  """Three significant digits (no exponent below 10⁶), or '–' when not known."""
  if value is None:
    return "–"
  value *= scale
  return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def markdown_table(rows: list[Row], notes: list[str], env: dict, title: str) -> str:
  lines = [f"## {title}", "",
           f"{env['devices']} × {env['device_kind']} ({env['backend']}), jax {env['jax']}, {env['date']}."]
  if under_load(env):
    lines.append(f"**Taken under load**: 1-minute load average {env['load_average_1min']} on {env['cpus']} "
                 f"CPUs; times are slower and noisier than a quiet machine's.")
  lines += ["", "| config | step | dtype | images/step | compile s | HLO ops | compiles | median ms | p10–p90 ms | "
                "spread % | images/s | GFLOP/step | TFLOP/s | MFU % | program MiB | device peak MiB |",
            "|" + "---|" * 16]
  for r in rows:
    lines.append(
        f"| {r.config} | {r.step} | {r.dtype} | {r.images} | {r.compile_seconds:.1f} | {_number(r.hlo_ops)} | "
        f"{r.compiles} | "
        f"{_number(r.median_seconds, 1e3)} | {_number(r.p10_seconds, 1e3)}–{_number(r.p90_seconds, 1e3)} | "
        f"{100 * r.spread:.0f} | {_number(r.images_per_second)} | {_number(r.flops, 1e-9)} | "
        f"{_number(r.tflops_per_second)} | {_number(r.mfu, 100)} | {_number(r.program_bytes, 2**-20)} | "
        f"{_number(r.device_peak_bytes, 2**-20)} |")
  lines += ["", f"Median and p10–p90 over the timed calls after warm-up (n = {rows[0].timed_steps if rows else 0}); "
                "MFU = XLA cost-analysis FLOPs / median time / dense peak of the compute dtype "
                "(hallujax.performance.PEAK_TFLOPS); '–' where the device does not report it."]
  if notes:
    lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
  return "\n".join(lines) + "\n"


def write_outputs(out_dir: str, name: str, rows: list[Row], notes: list[str], env: dict, title: str) -> tuple[str, str]:
  """<out_dir>/<name>.md and <name>.json; their paths."""
  os.makedirs(out_dir, exist_ok=True)
  markdown = os.path.join(out_dir, f"{name}.md")
  with open(markdown, "w") as f:
    f.write(markdown_table(rows, notes, env, title))
  path = os.path.join(out_dir, f"{name}.json")
  with open(path, "w") as f:
    json.dump(dict(environment=env, under_load=under_load(env), notes=notes,
                   rows=[dict(dataclasses.asdict(r), spread=r.spread) for r in rows]), f, indent=1)
  return markdown, path


# ----------------------------------------------------------------------------- bfloat16 numerics


def dtype_numerics(config, steps: int, log: Callable[[str], None] = print) -> dict:
  """The same `steps` training steps in float32 and bfloat16 compute; each metric's curves and their difference.

  Both runs start from the same initial state (parameters are float32 in both), see the same batch and the same
  per-step keys, and run the schedule's named step for each step number; only config.train.compute_dtype
  differs. Reported per metric: mean |bf16 − f32| over the steps, the same relative to mean |f32|, and the
  means of the first and last tenth of each curve (does bfloat16 train the same way?).
  """
  runs = {}
  for dtype in ("float32", "bfloat16"):
    prepared = prepare(with_dtype(config, dtype))
    programs = run_setup.jit_steps(prepared.method, prepared.config, prepared.mesh, prepared.state_shardings,
                                   prepared.frozen_shardings)
    rng_data = jax.random.key_data(jax.random.key(1))
    state, curves = prepared.state, []
    for step in range(steps):
      state, metrics = programs[prepared.method.step_name(step)](state, prepared.frozen, prepared.batch, rng_data)
      curves.append(metrics)
    runs[dtype] = [{k: float(v) for k, v in m.items()} for m in jax.device_get(curves)]
    del prepared, state
    gc.collect()
  tenth = max(1, steps // 10)
  report = {}
  names = sorted(set().union(*runs["float32"]) & set().union(*runs["bfloat16"]) - {"nonfinite"})
  for name in names:
    pairs = [(f[name], b[name]) for f, b in zip(runs["float32"], runs["bfloat16"]) if name in f and name in b]
    f32, bf16 = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    difference = float(np.mean(np.abs(bf16 - f32)))
    report[name] = dict(mean_abs_difference=difference,
                        relative=difference / max(float(np.mean(np.abs(f32))), 1e-12),
                        float32_first=float(np.mean(f32[:tenth])), float32_last=float(np.mean(f32[-tenth:])),
                        bfloat16_first=float(np.mean(bf16[:tenth])), bfloat16_last=float(np.mean(bf16[-tenth:])),
                        steps=len(pairs))
    r = report[name]
    log(f"{name:24s} mean |bf16 - f32| {difference:.4g} ({100 * r['relative']:.1f}% of mean |f32|) | "
        f"f32 {r['float32_first']:.4g} -> {r['float32_last']:.4g} | bf16 {r['bfloat16_first']:.4g} -> "
        f"{r['bfloat16_last']:.4g} (first/last {tenth} steps)")
  nonfinite = sum(m.get("nonfinite", 0.0) for m in runs["bfloat16"])
  log(f"bfloat16 non-finite steps: {nonfinite:.0f} of {steps}")
  return dict(metrics=report, curves=runs, bfloat16_nonfinite_steps=nonfinite)
