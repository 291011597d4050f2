"""The benchmark suite: peak table, discovery of methods and configs, rows, table/JSON, budget, trace; torch side."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from hallujax import performance

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "tiny.py")


def test_peak_table_matches_device_kinds_most_specific_first():
  cases = {("NVIDIA H100 80GB HBM3", "bfloat16"): 989.4, ("NVIDIA H200", "bfloat16"): 989.4,
           ("NVIDIA H100 PCIe", "bfloat16"): 756.5, ("NVIDIA A100-SXM4-80GB", "bfloat16"): 312.0,
           ("NVIDIA A100-SXM4-80GB", "float32"): 156.0, ("TPU v4", "bfloat16"): 275.0,
           ("TPU v5 lite", "bfloat16"): 197.0, ("TPU v5", "bfloat16"): 459.0, ("TPU v5p", "float32"): 459.0}
  for (kind, dtype), tflops in cases.items():
    assert performance.peak_flops(kind, dtype, 1) == pytest.approx(tflops * 1e12), kind
  assert performance.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16", 8) == pytest.approx(8 * 989.4e12)
  assert performance.peak_flops("cpu", "float32", 1) is None
  assert performance.peak_flops("cpu", "float32", 2, override_tflops=1.5) == pytest.approx(3e12)


def test_suites_discover_every_method_with_a_config_and_note_the_others(tmp_path):
  entries, notes = performance.suite_entries("paper", str(REPO / "configs"))
  specs = [os.path.relpath(e.spec, REPO) for e in entries]
  for expected in ("configs/fhgan.py", "configs/ipfh.py:coarse", "configs/ipfh.py:cognition", "configs/ipfh.py:policy",
                   "configs/stylegan2.py", "configs/stylegan2.py:512", "configs/arcface.py"):
    assert expected in specs
  # Every registered method is either benchmarked or named in a note.
  from hallujax.methods import METHODS
  covered = {e.method for e in entries} | {note.split(":")[0] for note in notes}
  assert covered == set(METHODS)

  (tmp_path / "fhgan.py").write_text("")
  entries, notes = performance.suite_entries("smoke", str(tmp_path), methods=["fhgan", "vpfl"])
  assert [(e.method, os.path.basename(e.spec)) for e in entries] == [("fhgan", "fhgan.py:smoke")]
  assert notes == [f"vpfl: no {tmp_path / 'vpfl.py'} yet, left out."]
  with pytest.raises(ValueError, match="not known methods"):
    performance.suite_entries("smoke", str(tmp_path), methods=["nope"])
  with pytest.raises(ValueError, match="not a suite"):
    performance.suite_entries("huge")


def test_suite_rows_table_json_budget_failures_and_trace(tmp_path):
  entries = [performance.Entry("tiny", TINY), performance.Entry("broken", str(tmp_path / "missing.py"))]
  logged = []
  rows, notes = performance.run_entries(entries, ["float32"], steps=3, warmup=1, named_steps="first",
                                         log=logged.append)
  assert [(r.config, r.step, r.dtype) for r in rows] == [(TINY, "train_step[warmup]", "float32")]
  row = rows[0]
  assert row.compiles == 1 and row.traces == 1 and row.timed_steps == 3 and row.images == 8
  assert 0 < row.min_seconds <= row.p10_seconds <= row.median_seconds <= row.p90_seconds <= row.max_seconds
  assert row.flops > 0 and row.tflops_per_second == pytest.approx(row.flops / row.median_seconds / 1e12)
  assert row.images_per_second == pytest.approx(8 / row.median_seconds)
  assert row.mfu is None   # a CPU is not in the peak table
  assert row.hlo_ops > 10   # the optimized module's instructions (the tiny step's forward, backward and Adam)
  assert any("named steps main not run" in n for n in notes)
  assert any(n.startswith(f"{tmp_path / 'missing.py'} [float32]: failed") for n in notes)

  env = dict(performance.environment(), backend="cpu", cpus=2, load_average_1min=9.0)
  markdown, json_path = performance.write_outputs(str(tmp_path), "suite_x", rows, notes, env, "x")
  table = pathlib.Path(markdown).read_text()
  assert "Taken under load" in table and "| MFU % |" in table and "| HLO ops |" in table
  assert f"| {row.hlo_ops} |" in table and "train_step[warmup]" in table
  assert table.count("\n| ") == 2   # header and one row
  data = json.loads(pathlib.Path(json_path).read_text())
  assert data["under_load"] and data["rows"][0]["flops"] == row.flops and data["notes"] == notes

  spent, budget_notes = performance.run_entries(entries[:1], ["float32"], steps=1, warmup=0, named_steps="first",
                                                 budget_seconds=1e-9, log=logged.append)
  assert spent == [] and "time budget" in budget_notes[0]

  message = performance.trace_slowest(rows, str(tmp_path / "trace"), warmup=0)
  assert "train_step[warmup]" in message
  assert list((tmp_path / "trace").rglob("*.xplane.pb")), "no profiler trace written"


def test_dtype_numerics_compares_the_same_steps_from_the_same_start():
  """tests.tiny ignores compute_dtype: both runs are then the same program on the same batches and keys, so any
  difference the report shows comes from the dtype alone."""
  from hallujax import run_files
  config = run_files.load_config_file(TINY)
  report = performance.dtype_numerics(config, 3, log=lambda line: None)
  assert set(report["metrics"]) >= {name for name in report["curves"]["float32"][0] if name.startswith("loss")}
  assert len(report["curves"]["float32"]) == len(report["curves"]["bfloat16"]) == 3
  for values in report["metrics"].values():
    assert values["mean_abs_difference"] == 0.0 and values["steps"] >= 1
  assert report["bfloat16_nonfinite_steps"] == 0


def run(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", "hallujax.benchmark", *args], capture_output=True, text=True,
                        cwd=REPO, env=env, timeout=300)


def test_suite_command_errors_are_one_line():
  both = run("--suite=smoke", "--config=configs/fhgan.py:smoke")
  unknown = run("--suite=smoke", "--methods=nope")
  for result, expected in ((both, "not both"), (unknown, "not known methods")):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr[-2000:]


# ----------------------------------------------------------------------------- the PyTorch side

torch = pytest.importorskip("torch")


def tiny_stylegan2_config():
  from hallujax import run_files
  config = run_files.load_config_file(str(REPO / "configs" / "stylegan2.py") + ":smoke")
  config.model.update(resolution=8, style_dim=8, mapping_layers=2, channel_max=8, channel_base=32)
  config.data.update(input_size=8, target_size=8)
  config.train.batch_size = 4
  return config


def test_torch_reference_has_hallujax_architecture_and_trains():
  import jax
  from hallujax.methods import stylegan2
  from hallujax.tools import torch_reference
  config = tiny_stylegan2_config()
  generator, discriminator = stylegan2.networks(config)
  state = jax.eval_shape(lambda: stylegan2.initial_state(generator, discriminator, stylegan2.optimizers(config),
                                                         jax.random.key(0)))
  count = lambda tree: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
  step, torch_generator = torch_reference.make_train_step(config, batch_size=4)
  g, d = torch_reference.build(8, tuple(generator.channels), 8, 2)
  assert sum(p.numel() for p in g.parameters()) == count(state.params["generator"])
  assert sum(p.numel() for p in d.parameters()) == count(state.params["discriminator"])
  real = torch.rand(4, 3, 8, 8) * 2 - 1
  assert d(real).shape == (4,)
  before = [p.detach().clone() for p in torch_generator.parameters()]
  losses = [step(real) for _ in range(2)]
  assert all(torch.isfinite(torch.stack(pair)).all() for pair in losses)
  assert any(not torch.equal(b, p) for b, p in zip(before, torch_generator.parameters()))


# ----------------------------------------------------------------------------- launch/ scripts


def make_wheel(directory: pathlib.Path, name: str, version: str = "1.0", requires: tuple[str, ...] = ()) -> None:
  """A minimal pure-Python wheel (py3-none-any) that pip can download and install."""
  import base64
  import hashlib
  import zipfile
  module = name.replace("-", "_")
  info = f"{module}-{version}.dist-info"
  files = {f"{module}/__init__.py": f"NAME = {name!r}\n",
           f"{info}/METADATA": "Metadata-Version: 2.1\nName: " + name + "\nVersion: " + version + "\n"
                               + "".join(f"Requires-Dist: {r}\n" for r in requires),
           f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
  record = []
  for path, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record.append(f"{path},sha256={digest},{len(text.encode())}")
  files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
  directory.mkdir(parents=True, exist_ok=True)
  with zipfile.ZipFile(directory / f"{module}-{version}-py3-none-any.whl", "w") as archive:
    for path, text in files.items():
      archive.writestr(path, text)


def script(name, *args, **env):
  return subprocess.run(["bash", str(REPO / "launch" / name), *map(str, args)], capture_output=True, text=True,
                        cwd=REPO, env=dict(os.environ, PYTHON=sys.executable, **env), timeout=400)


def test_prepare_wheels_downloads_the_closure_for_the_target_python_and_drops_jax(tmp_path):
  source = tmp_path / "index"
  make_wheel(source, "hjx-probe", requires=("hjx-helper", "jax"))
  make_wheel(source, "hjx-helper")
  make_wheel(source, "jax", "99.0")
  result = script("prepare_wheels.sh", tmp_path / "wheels", "3.12",
                  PIP_SOURCE=f"--no-index --find-links {source}", REQUIREMENTS="hjx-probe")
  assert result.returncode == 0, result.stderr[-3000:]
  names = sorted(p.name for p in (tmp_path / "wheels").glob("*.whl"))
  assert names == ["hjx_helper-1.0-py3-none-any.whl", "hjx_probe-1.0-py3-none-any.whl"]
  assert "dropped (the host brings it)" in result.stdout
  assert (tmp_path / "wheels" / "requirements.txt").read_text().split() == ["hjx-probe"]

  # With no REQUIREMENTS, the list is pyproject's dependencies without jax (nothing is downloaded: no index).
  listed = script("prepare_wheels.sh", tmp_path / "empty", PIP_SOURCE=f"--no-index --find-links {source}")
  assert listed.returncode != 0 and "flax>=" in listed.stdout and " jax>=" not in listed.stdout


def test_accelerator_script_installs_without_an_index_runs_the_suite_and_traces(tmp_path):
  wheels = tmp_path / "wheels"
  make_wheel(wheels, "hjx-probe")
  (wheels / "requirements.txt").write_text("hjx-probe\n")
  configs = tmp_path / "configs"   # a suite whose one "method" is the tiny test method
  configs.mkdir()
  (configs / "fhgan.py").write_text("from tests.tiny import get_config  # noqa: F401\n")
  out = tmp_path / "out"
  result = script("accelerator_benchmark.sh", wheels, out, f"--configs_dir={configs}", "--methods=fhgan",
                  "--steps=2", "--warmup=0", SUITE="smoke", BUDGET_SECONDS="300", TORCH_SIDE_BY_SIDE="0",
                  PIP_INSTALL_ARGS=f"--target {tmp_path / 'site'}")
  assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
  assert (tmp_path / "site" / "hjx_probe" / "__init__.py").is_file()   # installed from the folder, no index
  table = (out / "suite_smoke.md").read_text()
  assert "train_step[warmup]" in table and "profiler trace of" in table
  assert list((out / "trace").rglob("*.xplane.pb"))
  assert json.loads((out / "suite_smoke.json").read_text())["rows"][0]["compiles"] == 1

  missing = script("accelerator_benchmark.sh", tmp_path / "nowhere", out)
  assert missing.returncode == 2 and "launch/prepare_wheels.sh" in missing.stderr
