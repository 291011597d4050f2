"""python -m hallujax.tools.ipfh_benchmark --config configs/ipfh.py:smoke [--repeats 5]
python -m hallujax.tools.ipfh_benchmark --config CONFIG --headroom RUN [--batches 8]

``--headroom RUN``: is there anything for patch selection to win (paper 004, Table VII)? Restores the
trained run RUN (its R, F_c, P) and evaluates the config's test split with every selection on the same
faces, R as trained and not updated: the coarse image ỹ, the evenly spaced grid, random patches, the
policy's arg-max and the oracle (greedy by the ground truth's gain from R, an upper bound for any
choice of locations with this R). Prints each PSNR and the oracle's margins over ỹ and over the grid:
if the oracle is not clearly above both, no policy can show the paper's ordering.

Images/s of IPFH's T-step policy rollout (policy forward, sampling, patch
gather, restoration, patch scatter, per-step rewards), two ways on the same
parameters, batch and RNG:

  scan   the whole rollout as one jitted ``lax.scan`` (what the policy step runs);
  loop   a Python loop of T calls to the jitted, batch-vmapped step function.

Both are forward only, without R's per-step updates, so they compare like with
like. Then the method's "policy" step (rollout, R's updates, REINFORCE and L_im,
Adam) with R updated after every step (config.restoration.update_every="step",
the paper) and once per batch ("batch"), on lines of their own. Inputs are
random batches of the config's shapes (no data source needed). Timings are
the median of --repeats calls after one warm-up call (which compiles).
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from hallujax import cli
from hallujax.methods import ipfh
from hallujax.methods import ipfh_rollout as rollout_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "IPFH config, e.g. configs/ipfh.py:smoke.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per variant (after one warm-up call).")
_TRAIN_STEP = flags.DEFINE_bool("train_step", True, "Also time the method's policy step.")
_HEADROOM = flags.DEFINE_string("headroom", None, "A trained IPFH run: print the selections' PSNR on its "
                                "test faces instead of timing (see the module docstring).")
_BATCHES = flags.DEFINE_integer("batches", 8, "--headroom: test batches (of config.train.batch_size).")
HEADROOM_SELECTIONS = ("grid", "random", "policy", "oracle")
_SELECTIONS = flags.DEFINE_list("selections", list(HEADROOM_SELECTIONS), "--headroom: the selections to "
                                "evaluate (the oracle is the slowest: R on every candidate at every step).")
flags.mark_flags_as_required(["config"])


def random_batch(config, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  low, high, batch_size = config.data.input_size, config.data.target_size, config.train.batch_size
  return {"input": rng.uniform(-1, 1, (batch_size, low, low, config.data.input_channels)).astype(np.float32),
          "target": rng.uniform(-1, 1, (batch_size, high, high, 3)).astype(np.float32),
          "identity": rng.integers(0, config.data.num_identities, (batch_size,)).astype(np.int32)}


def timed(function, repeats: int) -> tuple[float, float]:
  """(seconds of the first call, median seconds of `repeats` further calls)."""
  start = time.perf_counter()
  jax.block_until_ready(function())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(function())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def rollout_functions(networks, selection, state, batch):
  """(scan, loop, T): zero-argument callables returning the final images of a sampled policy rollout."""
  batch_size = batch["input"].shape[0]
  steps, settings, actions = rollout_lib.selection_plan(selection, batch_size, jax.random.key(1))
  keys = jax.random.split(jax.random.key(2), (batch_size, steps))
  coarse = jax.jit(functools.partial(ipfh.coarse_images, networks=networks))(
      state.params, lr_images=jnp.asarray(batch["input"]))
  examples = {"coarse": coarse, "target": jnp.asarray(batch["target"]),
              "input": jnp.asarray(batch["input"])}

  settings = settings._replace(update_restoration=False)
  scanned = jax.jit(functools.partial(rollout_lib.rollout, networks=networks, settings=settings))
  step = jax.jit(jax.vmap(
      lambda params, example, carry, step_input: rollout_lib.rollout_step(
          params, networks, settings, example, carry, step_input),
      in_axes=(None, 0, 0, 0)))
  initial = jax.jit(jax.vmap(lambda image: rollout_lib.initial_carry(image, settings.patch_size)))

  def scan():
    images, _, _ = scanned(state.params, examples=examples, keys=keys, forced_actions=actions)
    return images

  def loop():
    carry = initial(coarse)
    for t in range(steps):
      carry, _ = step(state.params, examples, carry, (keys[:, t], actions[:, t]))
    return carry[0]

  return scan, loop, steps


def headroom(config, workdir: str, batches: int, selections=HEADROOM_SELECTIONS) -> dict[str, float]:
  """Mean test PSNR of ỹ ("coarse") and of each of `selections` (HEADROOM_SELECTIONS), with run `workdir`'s
  networks, on the first `batches` test batches, plus their distinct patches and the policy's entropy
  fraction (docs/ipfh.md)."""
  from hallujax import run_setup   # pylint: disable=import-outside-toplevel  (it imports the methods)
  from hallujax.data import pipeline   # pylint: disable=import-outside-toplevel
  config = config.copy_and_resolve_references()
  config.data.eval_size = max(int(config.data.eval_size), batches * int(config.train.batch_size))
  run, state, _ = run_setup.restore_run(config, workdir)
  feed = run.feed()
  device_batches = [feed(host_batch) for host_batch in pipeline.eval_batches(config, "test", batches=batches)]
  results = {}
  for selection in selections:
    selected = config.copy_and_resolve_references()
    selected.policy.selection = selection
    eval_step = jax.jit(ipfh.make(selected).eval_step)
    values = [jax.device_get(eval_step(state, {}, batch)) for batch in device_batches]
    mean = lambda key: float(np.mean(np.concatenate([v[key] for v in values])))
    results[selection] = mean("psnr")
    results["coarse"] = mean("psnr_coarse")
    results[f"{selection}_distinct_patches"] = mean("distinct_patches")
    results[f"{selection}_policy_entropy_fraction"] = mean("policy_entropy_fraction")
  return results


def print_headroom(config, workdir: str, batches: int, selections) -> None:
  unknown = sorted(set(selections) - set(HEADROOM_SELECTIONS))
  if unknown or not selections:
    raise cli.UserError(f"--selections={','.join(selections)}; expected some of {','.join(HEADROOM_SELECTIONS)}.")
  results = headroom(config, workdir, batches, tuple(selections))
  faces = batches * config.train.batch_size
  print(f"IPFH headroom of {workdir}: {faces} test faces, {config.data.input_size}² → {config.data.target_size}², "
        f"{config.policy.patch_size}² patches, T={config.policy.steps}")
  print(f"  {'coarse ỹ':<8} PSNR {results['coarse']:7.3f}")
  for selection in selections:
    print(f"  {selection:<8} PSNR {results[selection]:7.3f}   distinct patches "
          f"{results[selection + '_distinct_patches']:5.2f}   policy entropy fraction "
          f"{results[selection + '_policy_entropy_fraction']:.3f}")
  margins = [(f"{a} − {'ỹ' if b == 'coarse' else b}", a, b) for a, b in (
      ("oracle", "coarse"), ("oracle", "grid"), ("policy", "random"), ("policy", "grid"), ("policy", "coarse"))]
  print("   ".join(f"{name} {results[a] - results[b]:+.3f} dB" for name, a, b in margins
                   if a in results and b in results))


def main(argv):
  del argv
  config = _CONFIG.value
  if _HEADROOM.value:
    print_headroom(config, _HEADROOM.value, _BATCHES.value, _SELECTIONS.value)
    return
  if config.stage == "all":
    config.stage = "policy"   # time the policy stage's step; sizes are the config's
  batch = random_batch(config)
  method = ipfh.make(config)
  state = jax.jit(method.init)(jax.random.key(config.seed))
  scan, loop, steps = rollout_functions(ipfh.build_networks(config), ipfh.selection_of(config), state,
                                        batch)
  batch_size = config.train.batch_size
  device = jax.devices()[0]
  print(f"IPFH rollout: {config.data.input_size}² → {config.data.target_size}², T={steps}, "
        f"{config.policy.patch_size}² patches, batch {batch_size}, selection {config.policy.selection}, "
        f"on {device.device_kind} ({jax.device_count()} device(s) visible, 1 used)")
  results = {}
  for name, function in (("scan", scan), ("loop", loop)):
    first, median = timed(function, _REPEATS.value)
    results[name] = batch_size / median
    print(f"  {name:<10} first call {first:7.2f} s   median {median * 1e3:9.1f} ms   "
          f"{results[name]:9.1f} images/s", flush=True)
  np.testing.assert_allclose(np.asarray(scan()), np.asarray(loop()), rtol=1e-4, atol=1e-4)
  if _TRAIN_STEP.value:
    for update_every in ("step", "batch"):
      config.restoration.update_every = update_every
      policy_step = jax.jit(ipfh.make(config).steps["policy"])
      first, median = timed(lambda: policy_step(state, {}, batch, jax.random.key(3)), _REPEATS.value)
      print(f"  {'policy':<10} first call {first:7.2f} s   median {median * 1e3:9.1f} ms   "
            f"{batch_size / median:9.1f} images/s  (R updated every {update_every}; rollout + REINFORCE "
            f"+ L_im + Adam)", flush=True)
  print(f"scan vs loop: {results['scan']:.1f} vs {results['loop']:.1f} images/s "
        f"({results['scan'] / results['loop']:.2f}×)")


if __name__ == "__main__":
  cli.run(main)
