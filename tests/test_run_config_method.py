"""A run's config.json may name only registered methods: naming a module must not run it."""

import json
import os
import subprocess
import sys

import pytest

from hallujax import cli, methods, run_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name, allowed", [
    ("ipfh", True), ("hallujax.methods.vpgan", True), ("hallujax.methods", True),   # registered / imported
    ("planted.payload", False), ("antigravity", False), ("idlelib.idle", False), (["ipfh"], False), (None, False),
])
def test_config_json_method_names_are_checked_before_import(name, allowed):
  if allowed:
    methods.check_run_method(name, "run/config.json")
  else:
    with pytest.raises(ValueError, match="not a registered method"):
      methods.check_run_method(name, "run/config.json")


def test_registration_by_environment_and_by_call(monkeypatch):
  with pytest.raises(ValueError):
    methods.check_run_method("mine", "run/config.json")
  monkeypatch.setenv(methods.METHODS_VARIABLE, "mine=my_package.my_method, other.module")
  methods.check_run_method("mine", "run/config.json")
  methods.check_run_method("other.module", "run/config.json")
  monkeypatch.delenv(methods.METHODS_VARIABLE)
  monkeypatch.setitem(methods._registered, "yours", "your_package.method")   # what register_method does
  methods.check_run_method("yours", "run/config.json")


def test_a_run_naming_a_planted_module_is_refused_and_the_module_never_runs(tmp_path):
  """The run directory is the working directory (on sys.path with python -m) and holds planted/payload.py."""
  marker = tmp_path / "ran"
  (tmp_path / "planted").mkdir()
  (tmp_path / "planted" / "__init__.py").write_text("")
  (tmp_path / "planted" / "payload.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef make(c): pass\n")
  (tmp_path / "config.json").write_text(json.dumps({"method": "planted.payload"}))
  (tmp_path / "checkpoints" / "1").mkdir(parents=True)
  done = subprocess.run([sys.executable, "-m", "hallujax.export", "--workdir=.", f"--output={tmp_path / 'm.hlo'}"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=REPO))
  assert done.returncode == cli.EXIT_USAGE, done.stderr
  assert "not a registered method" in done.stderr and done.stderr.strip().count("\n") == 0
  assert not marker.exists()


def test_commands_refuse_a_run_whose_config_names_an_unregistered_module(tmp_path):
  """evaluate, sample and benchmark build from config.json through run_files.read_run_config: an unregistered module
  in it is refused in one line before anything imports it."""
  (tmp_path / "config.json").write_text(json.dumps({"method": "antigravity"}))
  with pytest.raises(cli.UserError, match="not a registered method"):
    run_files.read_run_config(str(tmp_path))
  assert "antigravity" not in sys.modules
  saved = run_files.read_run_config(str(tmp_path), check_method=False)   # read for comparison only
  assert saved.method == "antigravity"
