"""The command lines a user types: train (and resume after the process exits), bad flags, benchmark."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys

import chex
import jax
import pytest

from hallujax import run_setup, loop
from tests.tiny import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
# A very small FH-GAN on the face world, so the two runs below compile and train in seconds.
TINY_FHGAN = [
    f"--config={REPO / 'configs' / 'fhgan.py'}:smoke",
    "--config.data.input_size=8", "--config.data.target_size=32", "--config.data.num_identities=8",
    "--config.data.train_size=64", "--config.data.eval_size=16",
    "--config.model.features=8", "--config.model.blocks=1", "--config.model.layers_per_block=2",
    "--config.model.growth=8", "--config.model.bottleneck=8", "--config.model.upsample_features=8",
    "--config.model.critic_features=8", "--config.model.recognizer_widths=(8,8,8,8)",
    "--config.model.embedding_dim=8", "--config.loss.perceptual_layer=relu1_1",
    "--config.train.batch_size=4", "--config.train.pretrain_steps=1", "--config.train.eval_batches=1",
    "--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.train.eval_every=2",
    "--config.train.image_every=2",
]


def run(module, *args, cwd=REPO, **environment):
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", **environment)
  env.pop("XLA_FLAGS", None)  # one device, as a user's laptop
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=600)


def test_train_writes_everything_and_resumes_after_exit(tmp_path):
  # A relative --workdir, as a user types it (orbax itself wants absolute paths). Both pretraining steps in the
  # first run and the joint phase in the resumed one: each run compiles one named step, and the resume crosses
  # the phase boundary.
  pretrain_both = "--config.train.pretrain_steps=2"
  first = run("hallujax.train", *TINY_FHGAN, pretrain_both, "--workdir=run", "--config.train.steps=2", cwd=tmp_path)
  workdir = tmp_path / "run"
  assert first.returncode == 0, first.stderr[-3000:]
  assert "step 2/2" in first.stdout and "/s wait" in first.stdout and "ETA" in first.stdout
  assert "psnr_bicubic" in first.stdout  # the evaluation line
  # Warnings read like the project's own lines, not absl's "W1206 16:26:40.237004 140358803331968 fhgan.py:175]".
  assert "warning: config.weights.vgg19 is empty" in first.stderr
  assert not re.search(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ ", first.stderr + first.stdout, re.MULTILINE), first.stderr
  summary = first.stdout.strip().splitlines()[-1]     # the run ends with one line saying what it did and where
  assert "done: 2 steps in" in summary and "final eval: " in summary and "psnr" in summary and "run" in summary
  assert list(workdir.glob("events.out.tfevents.*"))
  assert (workdir / "images" / "step_0000002.png").exists()
  assert (workdir / "checkpoints" / "2").is_dir()

  second = run("hallujax.train", *TINY_FHGAN, pretrain_both, f"--workdir={workdir}", "--config.train.steps=4")
  assert second.returncode == 0, second.stderr[-3000:]
  assert f"Resuming from {workdir / 'checkpoints' / '2'} (step 2)" in second.stdout
  assert "step 3/4 joint" in second.stdout and "step 1/4" not in second.stdout
  assert (workdir / "checkpoints" / "4").is_dir()


def bad_workdir(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  return str(blocker / "run")   # a directory inside a file: cannot be made (as root too)


def held_workdir(tmp_path):
  workdir = tmp_path / "busy"
  workdir.mkdir()
  (workdir / "LOCK").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": "now"}))
  return str(workdir)


# (arguments after --config, expected words of the one-line error). Every case must end in exit code 2
# with one line on stderr, before any model is built.
USER_ERRORS = [
    (["--config.train.batch_size=abc"], "batch_size"),
    (["--config.data.strict=yes"], "strict"),
    (["--config.train.batchsize=64"], "config.train has no field 'batchsize'. Valid fields of config.train:"),
    (["--config.data.source=celebA"], "config.data.source='celebA' is not a known source. Known sources: faceworld"),
    (["--config.train.batch_size=-4"], "config.train.batch_size=-4; expected a positive integer"),
    (["--config.train.batch_size=0"], "config.train.batch_size=0; expected a positive integer"),
    (["--config.weights.vgg19=/nonexistent/vgg19.pth"], "config.weights.vgg19='/nonexistent/vgg19.pth': no such file"),
    ("bad_workdir", "is not writable"),
    ("held_workdir", "is in use by another run"),
]


@pytest.mark.parametrize("arguments, expected", USER_ERRORS, ids=[str(a) for a, _ in USER_ERRORS])
def test_user_errors_end_in_one_line_and_exit_code_2(tmp_path, arguments, expected):
  workdir = str(tmp_path / "run")
  if isinstance(arguments, str):
    workdir, arguments = globals()[arguments](tmp_path), []
  result = run("hallujax.train", "--config=configs/fhgan.py:smoke", f"--workdir={workdir}", *arguments)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
  assert expected in lines[0]
  if arguments == [] and "in use" in expected:   # a busy workdir: refused before the banner and before JAX starts
    assert result.stdout == "", result.stdout


def test_config_file_errors_are_one_line_too(tmp_path):
  missing = run("hallujax.train", "--config=configs/nope.py", f"--workdir={tmp_path}")
  variant = run("hallujax.train", "--config=configs/fhgan.py:smok", f"--workdir={tmp_path}")
  for result, expected in ((missing, "no config file at 'configs/nope.py'"),
                           (variant, "Unknown variant 'smok' of configs/fhgan.py; known: '', smoke")):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr[-2000:]


def test_help_is_fast_and_exits_zero():
  for module in ("hallujax.train", "hallujax.evaluate", "hallujax.benchmark", "hallujax.sample"):
    result = run(module, "--help")
    assert result.returncode == 0 and "--workdir" in result.stdout, (module, result.stderr[-2000:])
  full = run("hallujax.train", "--helpfull", "--config=configs/fhgan.py:smoke")
  assert full.returncode == 0 and "--config.train.batch_size=8" in full.stdout
  printed = run("hallujax.train", "--config=configs/fhgan.py:smoke", "--print_config", "--config.train.steps=7")
  assert printed.returncode == 0 and "steps: 7" in printed.stdout
  # Plain YAML: tuples as lists, no anchors or Python tags.
  assert "&id" not in printed.stdout and "!!python" not in printed.stdout and "recognizer_stages:\n" in printed.stdout


def test_benchmark_prints_its_figures_and_compiles_once():
  result = run("hallujax.benchmark", *TINY_FHGAN, "--steps=2")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [l for l in result.stdout.splitlines() if l.startswith("train_step[")]
  assert [l.split(":")[0] for l in lines] == ["train_step[pretrain]", "train_step[joint]"]
  for line in lines:
    for figure in ("compile", "median", "images/s", "GFLOP/call", "TFLOP/s", "traced 1x"):
      assert figure in line, line


def test_finished_run_answers_at_once_and_evaluate_reads_its_config(tmp_path):
  cache = tmp_path / "cache"
  trained = run("hallujax.train", "--config=tests/tiny.py", f"--workdir={tmp_path}", "--config.train.steps=2",
                "--config.train.image_every=2", f"--compilation_cache={cache}",
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  assert trained.returncode == 0, trained.stderr[-2000:]
  assert any(cache.iterdir())          # the compiled programs, for the next command
  again = run("hallujax.train", "--config=tests/tiny.py", f"--workdir={tmp_path}", "--config.train.steps=2")
  assert again.returncode == 0 and "Run already complete at step 2" in again.stdout
  assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1   # no JAX work, no new event file
  unused = tmp_path / "unused_cache"
  unused.mkdir()
  evaluated = run("hallujax.evaluate", f"--workdir={tmp_path}", "--split=validation",   # config.json, no --config
                  "--compilation_cache=off", JAX_COMPILATION_CACHE_DIR=str(unused),
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  assert not any(unused.iterdir())     # off means off, whatever the environment says
  assert "read_only" not in evaluated.stderr and "warning" not in evaluated.stderr.lower(), evaluated.stderr
  assert (tmp_path / "eval" / "step_2_validation.md").exists()


def test_ctrl_c_saves_the_current_step_and_resuming_matches_an_uninterrupted_run(tmp_path):
  arguments = ["-m", "hallujax.train", "--config=tests/tiny.py", f"--workdir={tmp_path / 'run'}",
               "--config.train.steps=400", "--config.train.log_every=1", "--config.train.checkpoint_every=1000",
               "--config.train.eval_every=1000", "--config.train.image_every=1000"]
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("XLA_FLAGS", None)
  process = subprocess.Popen([sys.executable, *arguments], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  for line in process.stdout:   # wait until training runs, then press Ctrl-C
    if "step 20/400" in line:
      process.send_signal(signal.SIGINT)
      break
  out, err = process.communicate(timeout=120)
  assert process.returncode == 130, err[-2000:]
  saved = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(saved) == 1 and 20 <= int(saved[0]) < 400 and f"Stopped at step {saved[0]}: saved" in out
  resumed = subprocess.run([sys.executable, *arguments], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  config = tiny_config()
  config.train.update(steps=400, checkpoint_every=1000, eval_every=1000, image_every=1000)
  straight = loop.train(config, tmp_path / "straight", devices=jax.devices()[:1])
  _, state, step = run_setup.restore_run(config, tmp_path / "run")
  assert step == 400
  chex.assert_trees_all_close(jax.device_get(straight.state.params), jax.device_get(state.params), atol=1e-6)


def test_a_reader_that_stops_early_ends_the_command_quietly():
  """`python -m hallujax.experiments --list | head -1`: once head exits, the next write raises BrokenPipeError;
  the command ends with exit code 0 and no traceback."""
  program = ("from hallujax import cli\n"
             "def main(argv):\n"
             "  raise BrokenPipeError(32, 'Broken pipe')\n"
             "cli.run(main)\n")
  done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert "Traceback" not in done.stderr
