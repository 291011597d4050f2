"""Test setup, applied before jax is imported (and inherited by the commands tests start).

* 8 simulated CPU devices, for the sharding tests.
* A persistent compilation cache: the command-line tests start fresh
  processes that compile the same programs again; with the cache they load them.
"""

import os
import pathlib
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(tempfile.gettempdir()) / "hallujax-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
