"""What a run prints: one line per log window, a word before each compilation, evaluation results.

Printed by process 0 only. A progress line is at most ``WIDTH`` characters:
step/total, the phase, steps/s, the share of time the loop waited for input,
the ETA, and the loss terms the window's steps reported (the full metrics go
to TensorBoard). The ETA counts the remaining steps of each phase at that
phase's own measured rate. A phase that has not run yet has no rate: rather
than pricing it at the running phase's (a joint GAN phase after pixel
pretraining can be several times slower), the ETA leaves it out and says so:
``ETA 0:00:27 + joint (not yet timed)``.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

WIDTH = 120


def clock(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def stamp() -> str:
  return time.strftime("%H:%M:%S")


def evaluation_figures(step: int, values: dict) -> str:
  """"STEP: name value  name value ..." as a log's eval line reads after "eval at step " (results reports quote it)."""
  return f"{step}: " + "  ".join(f"{name} {value:.4g}" for name, value in sorted(values.items()))


class ProgressLine:
  """Progress, compilation notices and the input-starvation hint of one run.

  Input wait is the share of the window's wall time the loop spent blocked on
  the next batch: with batches prefetched to the devices, that is time the
  devices had nothing to train on. Above `STARVED` (after the first window,
  which holds compilation and the pipeline's start) it says once how to feed
  the devices faster.
  """

  STARVED = 0.2

  def __init__(self, total_steps: int, start_step: int, phase: Callable[[int], str], input_hint: str,
               enabled: bool = True):
    self.total_steps, self.enabled, self.input_hint = total_steps, enabled, input_hint
    self.last_step, self.last_time = start_step, time.perf_counter()
    self.input_wait, self.windows = 0.0, 0
    names = [phase(s) for s in range(start_step, total_steps)]
    self.phase_names = list(dict.fromkeys(names))
    self.phase_index = np.asarray([self.phase_names.index(n) for n in names], np.int32)
    self.start_step = start_step
    self.phase = phase
    self.rates: dict[str, float] = {}
    self.compiled: set[str] = set()

  def say(self, text: str) -> None:
    if self.enabled:
      print(f"{stamp()} {text}", flush=True)

  def waited(self, seconds: float) -> None:
    self.input_wait += seconds

  def compiling(self, name: str, steps: dict) -> None:
    """Announces the first call of a named step, which compiles it."""
    if name in self.compiled:
      return
    self.compiled.add(name)
    self.say(f"compiling the {name!r} step (first call; on a 2-core CPU a paper-size step takes minutes)")
    # The first window holds the compilation: restart its clock after the notice.

  def eta(self, step: int, current_rate: float) -> tuple[float, list[str]]:
    """(seconds for the remaining steps of the timed phases, the remaining phases not yet timed).

    The running phase counts as timed at `current_rate` until a later window measures it.
    """
    remaining = np.bincount(self.phase_index[step - self.start_step:], minlength=len(self.phase_names))
    running = self.phase(max(step - 1, 0))
    seconds, untimed = 0.0, []
    for name, count in zip(self.phase_names, remaining):
      if not count:
        continue
      rate = self.rates.get(name, current_rate if name == running else None)
      if rate is None:
        untimed.append(name)
      else:
        seconds += count / max(rate, 1e-9)
    return seconds, untimed

  def eta_text(self, step: int, current_rate: float) -> str:
    seconds, untimed = self.eta(step, current_rate)
    return f"ETA {clock(seconds)}" + (f" + {', '.join(untimed)} (not yet timed)" if untimed else "")

  def __call__(self, step: int, means: dict) -> dict[str, float]:
    now = time.perf_counter()
    window = max(now - self.last_time, 1e-9)
    steps_per_second = (step - self.last_step) / window
    input_wait = min(self.input_wait / window, 1.0)
    phase = self.phase(max(step - 1, 0))
    if self.windows > 0:            # the first window holds compilation
      self.rates[phase] = steps_per_second
    self.last_step, self.last_time, self.input_wait = step, now, 0.0
    self.windows += 1
    head = (f"step {step}/{self.total_steps} {phase} {steps_per_second:.2f}/s wait {input_wait:.0%} "
            f"{self.eta_text(step, steps_per_second)} |")
    line = head
    for name, value in sorted(means.items()):
      if name.startswith("loss"):
        part = f" {name[5:] or name} {value:.4g}"
        if len(line) + len(part) > WIDTH:
          break
        line += part
    self.say(line)
    if self.windows > 1 and input_wait > self.STARVED and self.input_hint:
      self.say(f"The devices waited for input {input_wait:.0%} of this window. {self.input_hint}")
      self.input_hint = ""
    return {"steps_per_second": steps_per_second, "input_wait_fraction": input_wait}

  def evaluation(self, step: int, values: dict) -> None:
    self.say(f"eval at step {evaluation_figures(step, values)}")
