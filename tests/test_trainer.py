"""The generic trainer: resume, sharding, non-finite guard, batch checks, logs and images."""

import json

import chex
import jax
import numpy as np
import pytest
from etils import epath

from hallujax import trainer
from tests.tiny import tiny_config


def params_of(result):
  return jax.device_get(result.state.params)


def test_resume_matches_uninterrupted_run(tmp_path):
  config = tiny_config()
  config.train.steps = 4
  straight = trainer.train(config, tmp_path / "straight")

  config.train.steps = 2
  trainer.train(config, tmp_path / "interrupted")
  config.train.steps = 4
  resumed = trainer.train(config, tmp_path / "interrupted")  # picks up at step 2, data and RNG included

  assert int(resumed.state.step) == 4
  chex.assert_trees_all_close(params_of(straight), params_of(resumed), atol=0, rtol=0)


def test_eight_devices_match_one_device(tmp_path):
  assert jax.device_count() == 8, "conftest.py asks XLA for 8 host devices"
  config = tiny_config()
  config.train.steps = 3
  config.train.checkpoint_every = 100
  one = trainer.train(config, tmp_path / "one", devices=jax.devices()[:1])
  eight = trainer.train(config, tmp_path / "eight", devices=jax.devices())
  # Same math; only the order of the batch reductions differs between layouts.
  chex.assert_trees_all_close(params_of(one), params_of(eight), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose([h["loss_pixel"] for h in one.history],
                             [h["loss_pixel"] for h in eight.history], rtol=1e-5)


def test_fsdp_shards_large_parameters_and_matches_replicated(tmp_path):
  config = tiny_config()
  config.train.steps = 2
  config.mesh.fsdp = True
  config.mesh.fsdp_min_size = 64  # the tiny net's 3×3×8×3 and 3×3×3×8 kernels qualify
  sharded = trainer.train(config, tmp_path / "fsdp")
  kernel = sharded.state.params["Conv_1"]["kernel"]
  assert kernel.sharding.spec != jax.sharding.PartitionSpec(), "the large kernel should be split"
  assert len({shard.data.shape for shard in kernel.addressable_shards}) == 1
  assert kernel.addressable_shards[0].data.size == kernel.size // 8
  config.mesh.fsdp = False
  replicated = trainer.train(config, tmp_path / "replicated")
  chex.assert_trees_all_close(params_of(sharded), params_of(replicated), atol=1e-5, rtol=1e-5)


def test_nonfinite_loss_stops_and_names_step_term_and_last_checkpoint(tmp_path):
  config = tiny_config()
  config.train.update(steps=6, checkpoint_every=2, log_every=10)
  config.train.nan_at_step = 3
  with pytest.raises(trainer.NonFiniteLossError) as error:
    trainer.train(config, tmp_path)
  message = str(error.value)
  assert "step 3" in message and "loss_pixel=nan" in message
  assert str(tmp_path / "checkpoints" / "2") in message
  # The last good checkpoint is intact and nothing after the bad step was saved.
  steps = sorted(int(p.name) for p in (epath.Path(tmp_path) / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [2]


def test_nonfinite_loss_can_be_skipped(tmp_path):
  config = tiny_config()
  config.train.update(steps=4, on_nonfinite="skip")
  config.train.nan_at_step = 3
  result = trainer.train(config, tmp_path)
  assert int(result.state.step) == 4
  assert sum(h["skipped_steps"] for h in result.history) == 1
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(params_of(result)))


def test_wrong_batch_shape_names_field_and_expected_shape():
  spec = {"input": jax.ShapeDtypeStruct((8, 8, 3), np.float32)}
  with pytest.raises(ValueError, match=r"'input' has shape \(2, 4, 4, 3\); expected \(2, 8, 8, 3\)"):
    trainer.validate_batch({"input": np.zeros((2, 4, 4, 3))}, spec, batch_size=2)
  with pytest.raises(ValueError, match="no field 'target'"):
    trainer.validate_batch({"input": np.zeros((2, 8, 8, 3))},
                           dict(spec, target=jax.ShapeDtypeStruct((16, 16, 3), np.float32)), batch_size=2)


def test_run_writes_tensorboard_events_images_and_checkpoints(tmp_path):
  config = tiny_config()
  result = trainer.train(config, tmp_path)
  assert list((epath.Path(tmp_path)).glob("events.out.tfevents.*")), "no TensorBoard event file"
  images = sorted((epath.Path(tmp_path) / "images").glob("*.png"))
  assert [p.name for p in images] == ["step_0000004.png"]
  from PIL import Image
  grid = np.asarray(Image.open(images[0])).astype(np.float32)
  # rows: min(8, batch) examples of 16 px; columns in the method's order: output | lr | target.
  assert grid.shape == (8 * 16, 3 * 16, 3)
  output_column, lr_column, target_column = grid[:, :16], grid[:, 16:32], grid[:, 32:]
  # TinyFaces' LR is the block mean of a blocky target, so shown enlarged it equals the target.
  assert np.abs(lr_column - target_column).max() <= 1
  assert np.abs(output_column - target_column).max() > 1
  assert "mse" in result.evaluation and np.isfinite(result.evaluation["mse"])
  # Checkpoints hold the data position too: one JSON file per process.
  data_files = list((epath.Path(tmp_path) / "checkpoints" / "4" / "data").glob("process_*.json"))
  assert len(data_files) == 1 and "next_index" in json.loads(data_files[0].read_text())


def test_progress_line_reports_input_wait_and_says_once_how_to_feed_the_devices(capsys, monkeypatch):
  clock = iter([0.0, 10.0, 20.0, 30.0])   # one window of 10 s per call
  monkeypatch.setattr(trainer.time, "perf_counter", lambda: next(clock))
  progress = trainer.ProgressLine(total_steps=30, start_step=0,
                                  input_hint=trainer.input_hint(tiny_config().data))
  progress.waited(9.0)              # the first window (compilation, pipeline start): no advice
  first = progress(10, {"loss": 1.0})
  progress.waited(5.0)
  second = progress(20, {"loss": 0.5})
  progress.waited(5.0)
  progress(30, {"loss": 0.25})
  out = capsys.readouterr().out
  assert first == {"steps_per_second": 1.0, "input_wait_fraction": 0.9}
  assert second["input_wait_fraction"] == 0.5 and "input wait 50%" in out
  assert out.count("The devices waited for input") == 1
