"""The generic trainer: resume, sharding, non-finite guard, batch checks, logs and images."""

import dataclasses
import json
import os
import signal
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from hallujax import checkpoint, progress, run_setup, sharding, loop
from hallujax.data import feed
from tests import tiny
from tests.tiny import tiny_config


def params_of(result):
  return jax.device_get(result.state.params)


def test_resume_matches_uninterrupted_run(tmp_path):
  config = tiny_config()
  config.train.steps = 4
  straight = loop.train(config, tmp_path / "straight")

  config.train.steps = 2
  loop.train(config, tmp_path / "interrupted")
  config.train.steps = 4
  resumed = loop.train(config, tmp_path / "interrupted")  # picks up at step 2, data and RNG included

  assert int(resumed.state.step) == 4
  chex.assert_trees_all_close(params_of(straight), params_of(resumed), atol=0, rtol=0)


def test_eight_devices_match_one_device(tmp_path):
  assert jax.device_count() == 8, "conftest.py asks XLA for 8 host devices"
  config = tiny_config()
  config.train.steps = 3
  config.train.checkpoint_every = 100
  one = loop.train(config, tmp_path / "one", devices=jax.devices()[:1])
  eight = loop.train(config, tmp_path / "eight", devices=jax.devices())
  # Same math; only the order of the batch reductions differs between layouts.
  chex.assert_trees_all_close(params_of(one), params_of(eight), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose([h["loss_pixel"] for h in one.history],
                             [h["loss_pixel"] for h in eight.history], rtol=1e-5)


def test_fsdp_shards_large_parameters_and_matches_replicated(tmp_path):
  config = tiny_config()
  config.train.steps = 2
  config.mesh.fsdp = True
  config.mesh.fsdp_min_size = 64  # the tiny net's 3×3×8×3 and 3×3×3×8 kernels qualify
  sharded = loop.train(config, tmp_path / "fsdp")
  kernel = sharded.state.params["Conv_1"]["kernel"]
  assert kernel.sharding.spec != jax.sharding.PartitionSpec(), "the large kernel should be split"
  assert len({shard.data.shape for shard in kernel.addressable_shards}) == 1
  assert kernel.addressable_shards[0].data.size == kernel.size // 8
  config.mesh.fsdp = False
  replicated = loop.train(config, tmp_path / "replicated")
  chex.assert_trees_all_close(params_of(sharded), params_of(replicated), atol=1e-5, rtol=1e-5)


def test_nonfinite_state_stops_names_step_leaves_and_last_good_checkpoint(tmp_path):
  # The tiny method's step 3 returns a finite loss but NaN parameters (as learning_rate=inf would).
  config = tiny_config()
  config.train.update(steps=6, checkpoint_every=1, log_every=10)
  config.train.nan_at_step = 3
  with pytest.raises(loop.NonFiniteError) as error:
    loop.train(config, tmp_path)
  message = str(error.value)
  assert "step 3" in message and "params/Conv_0/bias" in message
  assert str(tmp_path / "checkpoints" / "2") in message
  # The last good checkpoint is intact and no checkpoint of the bad state was saved.
  steps = sorted(int(p.name) for p in (epath.Path(tmp_path) / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [1, 2]
  _, state, _ = run_setup.restore_run(config, tmp_path)
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(jax.device_get(state)))


def test_nonfinite_state_can_be_skipped_and_the_old_state_is_kept_whole(tmp_path):
  config = tiny_config()
  config.train.update(steps=4, on_nonfinite="skip")
  config.train.nan_at_step = 3
  result = loop.train(config, tmp_path)
  assert int(result.state.step) == 4
  assert sum(h["skipped_steps"] for h in result.history) == 1
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(jax.device_get(result.state)))


def test_a_run_that_only_skips_stops_instead_of_exiting_cleanly(tmp_path):
  config = tiny_config()
  config.train.update(steps=8, on_nonfinite="skip", max_skipped_steps=2, log_every=1)
  config.optim.upsampler.learning_rate = float("inf")
  with pytest.raises(loop.NonFiniteError, match="in a row"):
    loop.train(config, tmp_path)


def test_wrong_batch_shape_names_field_and_expected_shape():
  spec = {"input": jax.ShapeDtypeStruct((8, 8, 3), np.float32)}
  with pytest.raises(ValueError, match=r"'input' has shape \(2, 4, 4, 3\); expected \(2, 8, 8, 3\)"):
    feed.validate_batch({"input": np.zeros((2, 4, 4, 3))}, spec, (2,))
  with pytest.raises(ValueError, match="no field 'target'"):
    feed.validate_batch({"input": np.zeros((2, 8, 8, 3))},
                        dict(spec, target=jax.ShapeDtypeStruct((16, 16, 3), np.float32)), (2,))


def test_run_writes_tensorboard_events_images_config_and_checkpoints(tmp_path):
  config = tiny_config()
  result = loop.train(config, tmp_path)
  assert list((epath.Path(tmp_path)).glob("events.out.tfevents.*")), "no TensorBoard event file"
  images = sorted((epath.Path(tmp_path) / "images").glob("*.png"))
  assert [p.name for p in images] == ["step_0000004.png"]
  assert "mse" in result.evaluation and np.isfinite(result.evaluation["mse"])
  assert json.loads((epath.Path(tmp_path) / "config.json").read_text())["method"] == "tests.tiny"
  # Checkpoints hold the data position too: one JSON file per process.
  data_files = list((epath.Path(tmp_path) / "checkpoints" / "4" / "data").glob("process_*.json"))
  assert len(data_files) == 1 and "next_index" in json.loads(data_files[0].read_text())
  assert not (epath.Path(tmp_path) / checkpoint.LOCK_FILE).exists(), "the workdir lock is released"


def test_named_steps_report_their_own_metrics_averaged_over_the_steps_that_ran(tmp_path):
  config = tiny_config()
  config.train.update(steps=4, warmup_steps=3, log_every=4, checkpoint_every=4)
  result = loop.train(config, tmp_path)
  # Steps 1-3 ("warmup") report loss_pixel only; step 4 ("main") also reports loss_colour.
  (window,) = result.history
  assert "loss_colour" in window and "loss_pixel" in window
  assert window["loss_colour"] > 0


def test_frozen_networks_are_not_checkpointed_and_are_passed_unchanged(tmp_path):
  config = tiny_config()
  loop.train(config, tmp_path)
  stored = (epath.Path(tmp_path) / "checkpoints" / "4" / "state" / "_METADATA").read_text()  # the saved tree
  assert "Conv_0" in stored and "colour" not in stored
  _, state, step = run_setup.restore_run(config, tmp_path)
  assert step == 4 and set(jax.device_get(state).params) == {"Conv_0", "Conv_1"}


def test_client_axis_batches_and_state_are_split_over_the_clients_mesh_axis(tmp_path):
  config = tiny_config()
  config.train.update(steps=2, eval_every=2, image_every=2)
  config.mesh.update(clients=2)
  config.data.update(clients=2)
  result = loop.train(config, tmp_path)
  kernel = result.state.params["Conv_0"]["kernel"]
  assert kernel.shape[0] == 2 and kernel.sharding.spec[0] == "clients"
  # The two clients start from different parameters and stay different.
  assert not np.allclose(np.asarray(kernel[0]), np.asarray(kernel[1]))


def test_model_axis_without_a_rule_is_refused_and_a_rule_uses_it():
  config = tiny_config()
  config.mesh.update(model=2)
  mesh = sharding.make_mesh(config.mesh)
  abstract = {"params": {"Conv_0": {"kernel": jax.ShapeDtypeStruct((3, 3, 3, 8), np.float32)}}}
  with pytest.raises(ValueError, match="no sharding rule splits any parameter over the 'model' axis"):
    sharding.state_shardings(abstract, mesh, config.mesh)
  config.mesh.rules = (("Conv_0/kernel", (None, None, None, "model")),)
  shardings = sharding.state_shardings(abstract, mesh, config.mesh)
  assert shardings["params"]["Conv_0"]["kernel"].spec == jax.sharding.PartitionSpec(None, None, None, "model")


def test_progress_line_reports_phase_wait_and_says_once_how_to_feed_the_devices(capsys, monkeypatch):
  clock = iter([0.0, 10.0, 20.0, 30.0])   # one window of 10 s per call
  monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
  line = progress.ProgressLine(total_steps=30, start_step=0, phase=lambda step: "pretrain" if step < 20 else "joint",
                               input_hint=loop.input_hint(tiny_config().data))
  line.waited(9.0)              # the first window (compilation, pipeline start): no advice
  first = line(10, {"loss_pixel": 1.0, "accuracy": 0.5})
  line.waited(5.0)
  second = line(20, {"loss_pixel": 0.5})
  line.waited(5.0)
  line(30, {"loss_pixel": 0.25})
  out = capsys.readouterr().out
  assert first == {"steps_per_second": 1.0, "input_wait_fraction": 0.9}
  assert second["input_wait_fraction"] == 0.5 and "wait 50%" in out
  assert out.count("The devices waited for input") == 1
  lines = [l for l in out.splitlines() if " step " in f" {l.split(' ', 1)[1]}"]
  assert all(len(l) <= progress.WIDTH + 9 for l in lines)   # 9: the time stamp
  assert "pretrain" in lines[0] and "joint" in lines[-1] and "accuracy" not in out


def test_eta_prices_each_phase_at_its_own_rate(monkeypatch):
  clock = iter([0.0, 10.0, 20.0])
  monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
  line = progress.ProgressLine(100, 0, lambda step: "fast" if step < 50 else "slow", "", enabled=False)
  line(10, {})                       # the first window holds compilation: no rate is kept
  line(20, {})                       # "fast" at 1 step/s
  # The slow phase has not run: it is not priced at the fast phase's rate, and the ETA says it leaves it out.
  assert line.eta(20, 1.0) == (pytest.approx(30 / 1.0), ["slow"])
  assert line.eta_text(20, 1.0) == "ETA 0:00:30 + slow (not yet timed)"
  line.rates["slow"] = 0.1           # as measured once the slow phase has run
  assert line.eta(20, 1.0) == (pytest.approx(30 / 1.0 + 50 / 0.1), [])


def test_a_corrupt_latest_checkpoint_is_set_aside_and_the_previous_one_resumes(tmp_path, capsys):
  config = tiny_config()
  config.train.update(steps=4, checkpoint_every=2, keep_checkpoints=3)
  straight = loop.train(config, tmp_path / "straight")
  loop.train(config, tmp_path / "run")
  latest = epath.Path(tmp_path) / "run" / "checkpoints" / "4"
  (latest / "state" / "_METADATA").unlink()       # as a crash or a bad disk could leave it
  resumed = loop.train(config, tmp_path / "run")
  out = capsys.readouterr().out
  assert "Checkpoint 4 does not restore" in out and "Resuming from" in out and "(step 2)" in out
  aside = [p.name for p in (epath.Path(tmp_path) / "run" / "checkpoints").iterdir() if "unreadable" in p.name]
  assert len(aside) == 1 and aside[0].startswith("4.unreadable-")   # kept, renamed, never deleted
  chex.assert_trees_all_close(params_of(straight), params_of(resumed), atol=0, rtol=0)


def test_a_stale_workdir_lock_is_taken_over_and_a_live_one_refuses(tmp_path):
  import socket
  lock = epath.Path(tmp_path) / checkpoint.LOCK_FILE
  lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "since": "yesterday"}))
  with checkpoint.WorkdirLock(tmp_path):     # the process that wrote it is gone: taken over
    assert json.loads(lock.read_text())["pid"] == __import__("os").getpid()
    with pytest.raises(checkpoint.WorkdirInUseError, match="in use by another run"):
      with checkpoint.WorkdirLock(tmp_path):
        pass
  assert not lock.exists()


# ----------------------------------------------------------------------------- Ctrl-C

SIGNAL_AT_DISPATCH = 30


def make(config, context=None):
  """tests.tiny with a step that keeps the devices busy for a while (config.method = "tests.test_trainer"):
  as on an accelerator, the host dispatches a step much faster than the devices run it."""
  method = tiny.make(config)

  def slowed(step_fn):
    def step(state, frozen, batch, rng):
      state, metrics = step_fn(state, frozen, batch, rng)
      work = jax.lax.fori_loop(0, 40, lambda _, x: jnp.tanh(x @ x), jnp.full((192, 192), 1e-3))
      return state, dict(metrics, loss_pixel=metrics["loss_pixel"] + 0.0 * jnp.mean(work))
    return step

  return dataclasses.replace(method, steps={name: slowed(fn) for name, fn in method.steps.items()})


def test_ctrl_c_saves_within_two_steps_of_the_signal(tmp_path, capsys, monkeypatch):
  """Ctrl-C while the host dispatches step SIGNAL_AT_DISPATCH: the devices run at most 2 steps after it."""
  dispatched, finished_at_signal = [], []
  jit_steps = run_setup.jit_steps

  def signalling_steps(*args):
    def with_signal(jitted):
      def step(*step_args):
        state, metrics = jitted(*step_args)
        dispatched.append(metrics)
        if len(dispatched) == SIGNAL_AT_DISPATCH:
          # Steps run in order on the devices: those finished are the ones whose outputs are ready.
          ready = [all(leaf.is_ready() for leaf in jax.tree.leaves(m)) for m in dispatched]
          finished_at_signal.append(ready.index(False) if False in ready else len(ready))
          os.kill(os.getpid(), signal.SIGINT)
        return state, metrics
      return step
    return {name: with_signal(jitted) for name, jitted in jit_steps(*args).items()}

  monkeypatch.setattr(run_setup, "jit_steps", signalling_steps)
  config = tiny_config()
  config.method = "tests.test_trainer"
  config.train.update(steps=400, log_every=1000, eval_every=1000, image_every=1000, checkpoint_every=1000)
  config.train.compile_ahead = False   # programs compiled ahead would run instead of the signalling wrappers
  with pytest.raises(loop.Interrupted, match="run the same command to resume"):
    loop.train(config, tmp_path, devices=jax.devices()[:1])
  saved = [int(p.name) for p in (epath.Path(tmp_path) / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(saved) == 1
  # Unbounded, the host had dispatched far ahead of the devices and every dispatched step ran before the save.
  steps_after_signal = saved[0] - finished_at_signal[0]
  assert steps_after_signal <= 2, (saved, finished_at_signal)
  out = capsys.readouterr().out
  assert f"(up to step {SIGNAL_AT_DISPATCH})" in out and "then saving a checkpoint" in out, out


def test_a_busy_workdir_is_refused_before_the_run_is_described_or_initialized(tmp_path, capsys, monkeypatch):
  import socket
  (epath.Path(tmp_path) / checkpoint.LOCK_FILE).write_text(
      json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": "now"}))   # a live run holds it

  def must_not_run(*args, **kwargs):
    raise AssertionError("the state was shaped or initialized before the lock was taken")

  monkeypatch.setattr(run_setup, "abstract_state", must_not_run)
  with pytest.raises(checkpoint.WorkdirInUseError, match="in use by another run"):
    loop.train(tiny_config(), tmp_path)
  assert capsys.readouterr().out == ""


def test_the_device_rendering_hint_is_given_only_when_the_devices_are_not_the_cpu():
  from hallujax.config_base import base_config
  data = base_config().data
  data.source = "faceworld"
  assert "render_on=device" in loop.input_hint(data, "gpu")
  assert "render_on=device" not in loop.input_hint(data, "cpu") and "worker_count" in loop.input_hint(data, "cpu")


def test_checkpointer_keeps_as_many_checkpoints_as_asked(tmp_path):
  # train.keep_checkpoints=5 must keep 5, not orbax's or the class's default (it once kept 3 whatever was asked).
  state = {"weights": jnp.arange(4.0)}
  rng_data = jax.random.key_data(jax.random.key(0))
  checkpointer = checkpoint.Checkpointer(tmp_path / "run", keep=5)
  for step in range(1, 8):
    checkpointer.save(step, state, rng_data, b"{}")
  checkpointer.close()
  assert checkpoint.Checkpointer(tmp_path / "run", keep=5).all_steps() == [3, 4, 5, 6, 7]
