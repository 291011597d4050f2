"""Named steps compiled ahead of time in the background (train.compile_ahead, issue 30 item 3).

Also the test method of this module (`config.method = "tests.test_loop_compile_ahead"`): the tiny method whose
"main" step cannot be traced when `config.train.broken_main` is set.
"""

import dataclasses
import os
import signal
import threading

import chex
import jax
import pytest
from etils import epath

from hallujax import loop, run_setup
from tests import tiny
from tests.tiny import tiny_config


def make(config, context=None):
  method = tiny.make(config, context)

  def broken_main(state, frozen, batch, rng):
    raise ValueError("the main step's shapes do not match")

  if config.train.get("broken_main", False):
    return dataclasses.replace(method, steps=dict(method.steps, main=broken_main))
  return method


def two_phase_config():
  config = tiny_config()
  config.train.update(steps=5, warmup_steps=2, checkpoint_every=100)   # warmup for steps 0-1, main for 2-4
  return config


def recording_jit_steps(monkeypatch) -> list[dict]:
  """Records the jitted programs every run of the test builds."""
  built, jit_steps = [], run_setup.jit_steps

  def recorded(*args):
    built.append(jit_steps(*args))
    return built[-1]

  monkeypatch.setattr(run_setup, "jit_steps", recorded)
  return built


def test_steps_compiled_ahead_train_bitwise_like_steps_compiled_on_first_use(tmp_path, monkeypatch, capsys):
  built = recording_jit_steps(monkeypatch)
  config = two_phase_config()
  config.train.compile_ahead = False
  on_first_use = loop.train(config, tmp_path / "on_first_use")
  config.train.compile_ahead = True
  ahead = loop.train(config, tmp_path / "ahead")

  chex.assert_trees_all_close(jax.device_get(on_first_use.state.params), jax.device_get(ahead.state.params),
                              atol=0, rtol=0)
  # Each program compiled once: the ahead run never called its jitted "main" (the compiled-ahead program ran),
  # the first-use run compiled it on its first call.
  assert built[0]["main"]._cache_size() == 1 and built[0]["warmup"]._cache_size() == 1
  assert built[1]["main"]._cache_size() == 0 and built[1]["warmup"]._cache_size() == 1
  out = capsys.readouterr().out
  assert ("compiled the 'main' step in the background" in out
          or "waiting for the 'main' step's compile (running in the background)" in out), out


def test_step_names_are_read_from_the_schedule_in_order_of_first_use():
  config = two_phase_config()
  method = tiny.make(config)
  assert method.step_names(0, 5) == ["warmup", "main"]
  assert method.step_names(3, 5) == ["main"]   # a run resumed in its main phase compiles no warmup step


def test_a_failing_background_compile_stops_the_run_with_one_line_naming_the_step(tmp_path):
  config = two_phase_config()
  config.method = "tests.test_loop_compile_ahead"
  config.train.broken_main = True
  with pytest.raises(run_setup.CompileAheadError) as error:
    loop.train(config, tmp_path)
  message = str(error.value)
  assert len(message.splitlines()) == 1
  assert "'main' step ahead of time failed: ValueError: the main step's shapes do not match" in message
  assert "--config.train.compile_ahead=False" in message


def test_ctrl_c_while_waiting_for_a_background_compile_saves_and_stops_without_waiting(tmp_path, monkeypatch):
  """The "main" compile is held until the loop waits for it; Ctrl-C then saves step 2 and stops at once."""
  loop_waits, release = threading.Event(), threading.Event()
  compile_all, program = run_setup.StepsCompiledAhead.compile_all, run_setup.StepsCompiledAhead.program

  def held_compile(self, abstract):
    loop_waits.wait(timeout=60)
    os.kill(os.getpid(), signal.SIGINT)
    release.wait(timeout=60)
    compile_all(self, abstract)

  def waiting_program(self, name, stop_waiting=lambda: False):
    if self.compiling(name):
      loop_waits.set()
    return program(self, name, stop_waiting)

  monkeypatch.setattr(run_setup.StepsCompiledAhead, "compile_all", held_compile)
  monkeypatch.setattr(run_setup.StepsCompiledAhead, "program", waiting_program)
  try:
    with pytest.raises(loop.Interrupted, match="Stopped at step 2 while the next step's program compiled"):
      loop.train(two_phase_config(), tmp_path)
  finally:
    release.set()
  saved = sorted(int(p.name) for p in (epath.Path(tmp_path) / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == [2]
