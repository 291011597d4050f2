"""The command lines a user types: train (and resume after the process exits), bad flags, benchmark."""

import os
import pathlib
import subprocess
import sys

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


def run(module, *args, cwd=REPO):
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("XLA_FLAGS", None)  # one device, as a user's laptop
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=600)


def test_train_writes_everything_and_resumes_after_exit(tmp_path):
  # A relative --workdir, as a user types it (orbax itself wants absolute paths).
  first = run("hallujax.train", *TINY_FHGAN, "--workdir=run", "--config.train.steps=2", cwd=tmp_path)
  workdir = tmp_path / "run"
  assert first.returncode == 0, first.stderr[-3000:]
  assert "step 2/2" in first.stdout and "steps/s" in first.stdout and "ETA" in first.stdout
  assert "psnr_bicubic" in first.stdout  # the evaluation line
  assert list(workdir.glob("events.out.tfevents.*"))
  assert (workdir / "images" / "step_0000002.png").exists()
  assert (workdir / "checkpoints" / "2").is_dir()

  second = run("hallujax.train", *TINY_FHGAN, f"--workdir={workdir}", "--config.train.steps=4")
  assert second.returncode == 0, second.stderr[-3000:]
  assert f"Resuming from {workdir / 'checkpoints' / '2'} (step 2)" in second.stdout
  assert "step 3/4" in second.stdout and "step 1/4" not in second.stdout
  assert (workdir / "checkpoints" / "4").is_dir()


def test_unknown_config_field_lists_the_valid_ones(tmp_path):
  result = run("hallujax.train", "--config=configs/fhgan.py:smoke", f"--workdir={tmp_path}",
               "--config.train.batchsize=64")
  assert result.returncode != 0
  assert "config.train has no field 'batchsize'" in result.stderr
  assert "Valid fields of config.train:" in result.stderr and "batch_size" in result.stderr


def test_unknown_data_source_lists_the_known_ones(tmp_path):
  result = run("hallujax.train", *TINY_FHGAN, f"--workdir={tmp_path}", "--config.data.source=celebA")
  assert result.returncode != 0
  assert "config.data.source='celebA' is not a known source" in result.stderr
  assert "faceworld" in result.stderr


def test_benchmark_prints_its_figures_and_compiles_once():
  result = run("hallujax.benchmark", *TINY_FHGAN, "--steps=2")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [l for l in result.stdout.splitlines() if l.startswith("train_step[")]
  assert [l.split(":")[0] for l in lines] == ["train_step[pretrain]", "train_step[joint]"]
  for line in lines:
    for figure in ("compile", "median", "images/s", "GFLOP/call", "TFLOP/s", "traced 1x"):
      assert figure in line, line
