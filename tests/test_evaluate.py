"""hallujax.evaluate restores a run, scores it against the ground truth and writes the report files."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from hallujax import scoring as evaluate, images, run_setup, loop
from hallujax.metrics import image_quality
from tests import tiny
from tests.tiny import tiny_config

README_ORDER = ["lr", "bilinear", "bicubic", "output", "target"]   # input, baselines, output, ground truth


def block_colour_recognizer(images):
  """A stand-in recognizer: TinyFaces' identity is its 4x4 colour pattern (the mean of each block)."""
  batch, size = images.shape[0], images.shape[1]
  blocks = images.reshape(batch, 4, size // 4, 4, size // 4, 3).mean(axis=(2, 4))
  return blocks.reshape(batch, -1) - jnp.mean(blocks, axis=(1, 2, 3))[:, None]


def test_evaluate_writes_tables_grids_and_identity_metrics(tmp_path):
  config = tiny_config()
  config.train.steps = 2
  workdir = tmp_path / "run"
  loop.train(config, workdir)
  mean_absolute = lambda images, references: jnp.mean(jnp.abs(images - references), axis=(1, 2, 3))
  report = evaluate.evaluate(config, str(workdir), split="test", batches=2, compare=(str(workdir),),
                             recognizer=block_colour_recognizer, grid_rows=4, lpips=mean_absolute)
  rows = report["rows"]
  assert set(rows) == {"run", "run@2", "target"}  # the comparison is the same checkpoint: same numbers
  # The ceiling row: the ground truth through the same recognizer, its own best match.
  assert abs(rows["target"]["identity_cosine"] - 1.0) < 1e-5
  assert rows["target"]["rank1"] >= rows["run"]["rank1"] and "psnr" not in rows["target"]
  # Output diversity against the targets and NIQE for every kept image column.
  assert 0.0 <= rows["run"]["output_diversity"] and 0.0 < rows["run"]["nearest_target_share"] <= 1.0
  assert np.isfinite(rows["run"]["niqe"]) and np.isfinite(rows["target"]["niqe"])
  assert rows["run"]["psnr"] == rows["run@2"]["psnr"]
  for name in ("psnr", "ssim", "psnr_y", "ssim_y", "lpips", "identity_cosine", "verification_auc", "rank1", "rank5",
               "verification_accuracy"):
    assert np.isfinite(rows["run"][name]), name
  assert 0.0 <= rows["run"]["rank1"] <= rows["run"]["rank5"] <= 1.0
  assert 0.0 <= rows["run"]["verification_auc"] <= 1.0
  assert report["examples"] == 16 and report["step"] == 2
  assert "mse" in report["eval_step"]  # the method's own eval_step values

  # The PSNR row is the mean over the split of the metric on the method's outputs.
  batches = evaluate.pipeline.eval_batches(config.copy_and_resolve_references(), "test")[:2]
  run, state, _ = run_setup.restore_run(config, str(workdir))
  method = run.method
  frozen, _ = run.frozen_networks()
  values = [image_quality.psnr_from_unit_range(method.hallucinate(state, frozen, b)["output"], b["target"])
            for b in batches]
  np.testing.assert_allclose(rows["run"]["psnr"], float(np.mean(np.concatenate(values))), rtol=1e-5)
  outputs = [method.hallucinate(state, frozen, b)["output"] for b in batches]   # the perceptual column's scorer
  expected_lpips = np.mean(np.concatenate([mean_absolute(o, b["target"]) for o, b in zip(outputs, batches)]))
  np.testing.assert_allclose(rows["run"]["lpips"], float(expected_lpips), rtol=1e-5)

  files = tmp_path / "run" / "eval"
  saved = json.loads((files / "step_2_test.json").read_text())
  assert saved["rows"]["run"]["psnr"] == rows["run"]["psnr"]
  table = (files / "step_2_test.md").read_text()
  assert "| run |" in table and "rank1" in table and "images/s" in table
  assert (files / "step_2_test_hardest.png").exists() and (files / "step_2_test_easiest.png").exists()
  assert (files / "step_2_test_strips" / "output.png").exists() and (files / "step_2_test_strips" / "target.png").exists()


def test_evaluate_without_checkpoint_says_how_to_train(tmp_path):
  config = tiny_config()
  try:
    evaluate.evaluate(config, str(tmp_path / "empty"))
  except FileNotFoundError as error:
    assert "Train first" in str(error)
  else:
    raise AssertionError("evaluate() on a run without checkpoints should fail")


def make(config, context=None):
  """tests.tiny with both baselines among its columns, in the README's order (config.method = "tests.test_evaluate")."""
  method = tiny.make(config)

  def hallucinate(state, frozen, batch):
    columns = method.hallucinate(state, frozen, batch)
    low, size = columns["lr"], columns["target"].shape[1]
    upsample = lambda kind: jax.image.resize(low, (low.shape[0], size, size, low.shape[3]), kind)
    return {"lr": low, "bilinear": upsample("bilinear"), "bicubic": upsample("cubic"), "output": columns["output"],
            "target": columns["target"]}

  return dataclasses.replace(method, hallucinate=hallucinate)


def test_every_grid_has_the_readme_column_order(tmp_path, monkeypatch):
  drawn = []
  image_grid = images.image_grid
  monkeypatch.setattr(images, "image_grid", lambda columns, **kw: drawn.append(list(images.order_columns(columns)))
                      or image_grid(columns, **kw))
  config = tiny_config()
  config.method = "tests.test_evaluate"
  config.train.update(steps=2, image_every=2)
  loop.train(config, tmp_path / "run")                         # the training grid
  report = evaluate.evaluate(config, str(tmp_path / "run"), batches=1)   # the hardest and easiest examples' grids
  assert len(drawn) >= 3 and all(order == README_ORDER for order in drawn), drawn
  # Both interpolations of the input are named plainly, like each other (not "bicubic" beside "run:bilinear").
  assert {"bilinear", "bicubic", "run"} <= set(report["rows"]), list(report["rows"])
  assert not any(name.endswith((":bilinear", ":bicubic")) for name in report["rows"]), list(report["rows"])


def test_evaluate_at_a_step_without_checkpoint_lists_the_steps_that_exist(tmp_path):
  config = tiny_config()
  config.train.update(steps=4, checkpoint_every=2, eval_every=4, image_every=4)
  loop.train(config, tmp_path / "run")
  try:
    evaluate.evaluate(config, str(tmp_path / "run"), step=5)
  except FileNotFoundError as error:
    assert "--step=5" in str(error) and "the steps that exist are 2, 4" in str(error), error
  else:
    raise AssertionError("evaluate(step=5) should fail: there is no checkpoint 5")
