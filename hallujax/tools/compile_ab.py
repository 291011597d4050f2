"""python -m hallujax.tools.compile_ab --config configs/pcfh.py:smoke [--step train] [--repeats 5] [--compiles 2]

The Python loop against the rolled loop (``hallujax.nn.repeat``) for one named train step, in one process:

  unrolled   the step as the library traces it (every repeated block written
             into the program);
  rolled     the step traced inside ``repeat.rolled()`` (the repeated blocks
             as one lax.scan).

Both programs take the same state, frozen tree and random batch. Printed: each
program's HLO ops (optimized module's instructions), its compile time (the two
compiled alternately --compiles times each; the persistent compilation cache is
off for this process), the step time (the two called alternately --repeats
times each after one warm-up call; each from its own copy of the same state),
the medians, and how far the first step's metrics differ (the same numbers
within float32 rounding is the condition for the change). Times on a shared
host are only comparable within one run; the host's load average is printed.
"""

from __future__ import annotations

import os
import statistics
import time

from absl import flags
from ml_collections import config_flags

from hallujax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Method config, e.g. configs/pcfh.py:smoke.")
_STEP = flags.DEFINE_string("step", None, "The named train step (default: the one step 0 runs).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per program, alternating.")
_COMPILES = flags.DEFINE_integer("compiles", 2, "Compilations per program, alternating.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _REPEATS.value < 1 or _COMPILES.value < 1:
    raise cli.UserError(f"--repeats={_REPEATS.value} --compiles={_COMPILES.value}; expected both ≥ 1.")
  import jax
  import jax.numpy as jnp
  import numpy as np
  from hallujax import performance, run_setup
  from hallujax.nn import repeat
  from hallujax.hlo_text import hlo_op_count
  jax.config.update("jax_enable_compilation_cache", False)
  config = cli.prepare_run(_CONFIG.value)
  prepared = performance.prepare(config)
  step = _STEP.value or prepared.method.step_name(0)
  if step not in prepared.method.steps:
    raise cli.UserError(f"--step={step}: no such named step; expected one of {', '.join(prepared.method.steps)}.")
  rng = jax.random.key_data(jax.random.key(1))
  arguments = lambda state: (state, prepared.frozen, prepared.batch, rng)
  programs = {variant: run_setup.jit_steps(prepared.method, config, prepared.mesh, prepared.state_shardings,
                                          prepared.frozen_shardings)[step] for variant in ("unrolled", "rolled")}

  def lower(variant):
    """A fresh trace and lowering each time (jax keeps compiled executables in memory: cleared first)."""
    jax.clear_caches()
    if variant == "rolled":
      with repeat.rolled():
        return programs[variant].lower(*arguments(prepared.state))
    return programs[variant].lower(*arguments(prepared.state))

  compile_seconds, compiled = {"unrolled": [], "rolled": []}, {}
  for _ in range(_COMPILES.value):
    for variant in programs:
      lowered = lower(variant)
      start = time.perf_counter()
      compiled[variant] = lowered.compile()
      compile_seconds[variant].append(time.perf_counter() - start)
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  states, first = {}, {}
  for variant, program in compiled.items():   # warm-up call, from the same state
    states[variant], metrics = program(*arguments(copy(prepared.state)))
    first[variant] = {name: float(value) for name, value in jax.device_get(metrics).items()}
  step_seconds = {"unrolled": [], "rolled": []}
  for _ in range(_REPEATS.value):
    for variant, program in compiled.items():
      start = time.perf_counter()
      states[variant], metrics = program(*arguments(states[variant]))
      jax.block_until_ready(metrics)
      step_seconds[variant].append(time.perf_counter() - start)
  print(f"{cli.config_argument(__import__('sys').argv)} step {step}, load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs")
  for variant in compiled:
    print(f"{variant:9s} HLO ops {hlo_op_count(compiled[variant]):6d} | compile median "
          f"{statistics.median(compile_seconds[variant]):7.1f} s {np.round(compile_seconds[variant], 1).tolist()} | "
          f"step median {1e3 * statistics.median(step_seconds[variant]):8.1f} ms "
          f"{np.round(1e3 * np.asarray(step_seconds[variant]), 1).tolist()}")
  differences = {name: abs(first["rolled"][name] - first["unrolled"][name]) for name in first["rolled"]
                 if name in first["unrolled"]}
  worst = max(differences, key=differences.get) if differences else None
  if worst:
    print(f"first step's metrics: largest |rolled - unrolled| {differences[worst]:.3g} ({worst} = "
          f"{first['unrolled'][worst]:.6g})")


if __name__ == "__main__":
  cli.run(main)
