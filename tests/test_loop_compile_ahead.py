"""Named steps, the evaluation and the image grid compiled ahead of time in the background (train.compile_ahead,
issue 30 item 3).

Also the test method of this module (`config.method = "tests.test_loop_compile_ahead"`): the tiny method whose
"main" step cannot be traced when `config.train.broken_main` is set, nor its evaluation with `broken_eval`.
"""

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import threading

import chex
import jax
import pytest
from etils import epath

from hallujax import loop, run_setup
from tests import tiny
from tests.tiny import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def make(config, context=None):
  method = tiny.make(config, context)

  def broken_main(state, frozen, batch, rng):
    raise ValueError("the main step's shapes do not match")

  def broken_eval(state, frozen, batch):
    raise ValueError("the evaluation's shapes do not match")

  if config.train.get("broken_main", False):
    return dataclasses.replace(method, steps=dict(method.steps, main=broken_main))
  if config.train.get("broken_eval", False):
    return dataclasses.replace(method, eval_step=broken_eval)
  return method


def two_phase_config():
  config = tiny_config()
  config.train.update(steps=5, warmup_steps=2, checkpoint_every=100)   # warmup for steps 0-1, main for 2-4
  return config


def evaluated_config():
  """The two phases, evaluated and drawn at step 3 (inside the run) and at the end (step 5)."""
  config = two_phase_config()
  config.train.update(eval_every=3, image_every=3)
  return config


def recording_jit_steps(monkeypatch) -> list[dict]:
  """Records the jitted programs every run of the test builds."""
  built, jit_steps = [], run_setup.jit_steps

  def recorded(*args):
    built.append(jit_steps(*args))
    return built[-1]

  monkeypatch.setattr(run_setup, "jit_steps", recorded)
  return built


def recording_eval_and_grid_programs(monkeypatch) -> tuple[list, list, list]:
  """(jitted evaluation programs, GridColumns, evaluation results) of every run of the test, in order."""
  evaluations, grids, results = [], [], []
  jit_eval_step, grid_columns, run_evaluation = (run_setup.jit_eval_step, run_setup.Run.grid_columns,
                                                 run_setup.run_evaluation)

  def recorded_eval_step(*args):
    evaluations.append(jit_eval_step(*args))
    return evaluations[-1]

  def recorded_grid_columns(self, frozen_shardings):
    grids.append(grid_columns(self, frozen_shardings))
    return grids[-1]

  def recorded_evaluation(*args):
    results.append(run_evaluation(*args))
    return results[-1]

  monkeypatch.setattr(run_setup, "jit_eval_step", recorded_eval_step)
  monkeypatch.setattr(run_setup.Run, "grid_columns", recorded_grid_columns)
  monkeypatch.setattr(run_setup, "run_evaluation", recorded_evaluation)
  return evaluations, grids, results


def test_compiled_ahead_train_evaluate_and_draw_bitwise_like_programs_compiled_on_first_use(tmp_path, monkeypatch,
                                                                                            capsys):
  built = recording_jit_steps(monkeypatch)
  evaluations, grids, results = recording_eval_and_grid_programs(monkeypatch)
  config = evaluated_config()
  config.train.compile_ahead = False
  on_first_use = loop.train(config, tmp_path / "on_first_use")
  config.train.compile_ahead = True
  ahead = loop.train(config, tmp_path / "ahead")

  chex.assert_trees_all_close(jax.device_get(on_first_use.state.params), jax.device_get(ahead.state.params),
                              atol=0, rtol=0)
  assert len(results) == 4 and results[0] == results[2] and results[1] == results[3]   # steps 3 and 5, exactly
  assert ahead.evaluation == on_first_use.evaluation
  for step in (3, 5):
    png = f"images/step_{step:07d}.png"
    assert (tmp_path / "ahead" / png).read_bytes() == (tmp_path / "on_first_use" / png).read_bytes()
  # Each program compiled once: the ahead run never called its jitted "main", evaluation or image grid (the
  # compiled-ahead programs ran), the first-use run compiled each on its first call.
  assert built[0]["main"]._cache_size() == 1 and built[0]["warmup"]._cache_size() == 1
  assert built[1]["main"]._cache_size() == 0 and built[1]["warmup"]._cache_size() == 1
  assert evaluations[0]._cache_size() == 1 and grids[0].jitted._cache_size() == 1
  assert evaluations[1]._cache_size() == 0 and grids[1].jitted._cache_size() == 0
  out = capsys.readouterr().out
  for label in ("the 'main' step", "the evaluation program", "the image-grid program"):
    assert (f"compiled {label} in the background" in out
            or f"waiting for {label}'s compile (running in the background)" in out), (label, out)


def test_programs_compile_ahead_in_order_of_first_use(tmp_path, monkeypatch):
  """An evaluation due before the next phase compiles before that phase's step (the loop would wait for it)."""
  queues, compiled_ahead = [], run_setup.StepsCompiledAhead

  def recorded(entries):
    queues.append([label for label, _, _ in entries])
    return compiled_ahead(entries)

  monkeypatch.setattr(run_setup, "StepsCompiledAhead", recorded)
  config = two_phase_config()
  config.train.update(steps=3, eval_every=2, image_every=100)   # warmup 0-1, evaluation at 2 and 3, main at 2
  loop.train(config, tmp_path)
  assert queues == [["the evaluation program", "the 'main' step", "the image-grid program"]]


def test_step_names_are_read_from_the_schedule_in_order_of_first_use():
  config = two_phase_config()
  method = tiny.make(config)
  assert method.step_names(0, 5) == ["warmup", "main"]
  assert method.step_names(3, 5) == ["main"]   # a run resumed in its main phase compiles no warmup step


@pytest.mark.parametrize("make_config, broken, expected", [
    (two_phase_config, "broken_main", "Compiling the 'main' step ahead of time failed: ValueError: the main step's "
                                      "shapes do not match"),
    (evaluated_config, "broken_eval", "Compiling the evaluation program ahead of time failed: ValueError: the "
                                      "evaluation's shapes do not match"),
])
def test_a_failing_background_compile_stops_the_run_with_one_line_naming_the_program(tmp_path, make_config, broken,
                                                                                   expected):
  config = make_config()
  config.method = "tests.test_loop_compile_ahead"
  config.train[broken] = True
  with pytest.raises(run_setup.CompileAheadError) as error:
    loop.train(config, tmp_path)
  message = str(error.value)
  assert len(message.splitlines()) == 1
  assert expected in message
  assert "--config.train.compile_ahead=False" in message


@pytest.mark.parametrize("eval_every, stopped", [
    (100, "Stopped at step 2 while the next step's program compiled"),   # waiting for the "main" step
    (2, "Stopped at step 2: saved"),                                      # waiting for the evaluation, due first
])
def test_ctrl_c_while_waiting_for_a_background_compile_saves_and_stops_without_waiting(tmp_path, monkeypatch,
                                                                                       eval_every, stopped):
  """The compiles are held until the loop waits for one; Ctrl-C then saves step 2 and stops at once."""
  loop_waits, release = threading.Event(), threading.Event()
  compile_all, program = run_setup.StepsCompiledAhead.compile_all, run_setup.StepsCompiledAhead.program
  _, _, evaluations = recording_eval_and_grid_programs(monkeypatch)

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
  config = two_phase_config()
  config.train.eval_every = eval_every
  try:
    with pytest.raises(loop.Interrupted, match=stopped):
      loop.train(config, tmp_path)
  finally:
    release.set()
  saved = sorted(int(p.name) for p in (epath.Path(tmp_path) / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == [2]
  assert evaluations == []   # the run stopped before evaluating


def train_command(*arguments, **environment) -> subprocess.CompletedProcess:
  """`python -m hallujax.train` in a new process (one device, as on a laptop)."""
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", **environment)
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "hallujax.train", *arguments], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def test_a_resumed_process_loads_the_step_its_first_run_compiled_ahead_from_the_compilation_cache(tmp_path):
  """The first process trains warmup (steps 0-1) and main (step 2, compiled ahead in the background); the
  second resumes at step 3 and calls main's jitted step, compiled on first use. JAX's persistent cache key is
  the lowered program's, so the second process finds main there only if the ahead-of-time lowering is the
  one a call builds: with arguments that lacked the arrays' shardings it was not, and the resumed process
  compiled main again, writing a second `jit_step` entry."""
  cache = tmp_path / "cache"
  arguments = ["--config=tests/tiny.py", f"--workdir={tmp_path / 'run'}", "--config.train.warmup_steps=2",
               "--config.train.checkpoint_every=100", "--config.train.eval_every=100",
               "--config.train.image_every=100", f"--compilation_cache={cache}"]
  every_program = dict(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")   # tiny programs compile in < 1 s
  step_entries = lambda: sorted(path.name for path in cache.glob("jit_step-*"))

  first = train_command(*arguments, "--config.train.steps=3", **every_program)
  assert first.returncode == 0, first.stderr[-3000:]
  assert ("compiled the 'main' step in the background" in first.stdout
          or "waiting for the 'main' step's compile (running in the background)" in first.stdout), first.stdout
  written = step_entries()
  assert len(written) == 2, written   # warmup (on first use) and main (ahead)

  second = train_command(*arguments, "--config.train.steps=5", **every_program)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "(step 3)" in second.stdout and "compiling the 'main' step" in second.stdout, second.stdout
  assert step_entries() == written
