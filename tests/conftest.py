"""Test setup, applied before jax is imported (and inherited by the commands tests start).

* 8 simulated CPU devices, for the sharding tests.
* A compilation cache shared within one test run: a fresh temporary directory
  made by the first process (pytest itself, or xdist's controller) and
  inherited through the environment by xdist's workers and by the commands the
  tests start, so a program compiled once (a tiny FH-GAN step in several
  command-line tests, the same trainer programs in several test files) loads
  from it afterwards. It is removed when the run ends: no run reads another's
  compiles. An explicit JAX_COMPILATION_CACHE_DIR is used instead (and kept).
"""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="hallujax-tests-jax-cache-")
  os.environ["HALLUJAX_TESTS_CACHE_OWNER"] = str(os.getpid())   # this process made it and removes it
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The test suite's own method modules, registered so that commands may build runs whose config.json names them
# (a run's config.json may name only registered methods: hallujax.methods.check_run_method).
os.environ["HALLUJAX_METHODS"] = ",".join(filter(None, [os.environ.get("HALLUJAX_METHODS", ""), "tests.tiny",
                                                        "tests.test_evaluate", "tests.test_trainer"]))


def pytest_unconfigure(config):
  if os.environ.get("HALLUJAX_TESTS_CACHE_OWNER") == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
