"""python -m hallujax.tools.ipfh_benchmark --config configs/ipfh.py:smoke [--repeats 5]
python -m hallujax.tools.ipfh_benchmark --config CONFIG --headroom RUN [--batches 8]
python -m hallujax.tools.ipfh_benchmark --config CONFIG --gain_map RUN [--batches 4]

``--headroom RUN``: is there anything for patch selection to win (paper 004, Table VII)? Restores the
trained run RUN (its R, F_c, P) and evaluates the config's test split with every selection on the same
faces, R as trained and not updated: the coarse image ỹ, the evenly spaced grid, random patches, the
policy's arg-max and the oracle (greedy by the ground truth's gain from R, an upper bound for any
choice of locations with this R). Prints each PSNR and the oracle's margins over ỹ and over the grid:
if the oracle is not clearly above both, no policy can show the paper's ordering.

``--gain_map RUN``: does the policy's reward depend on its action? R's gain at every cell of the action
grid of RUN's validation faces (`gain_map`): its spread over the cells of one face against its mean.

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
_GAIN_MAP = flags.DEFINE_string("gain_map", None, "A trained IPFH run: how much R's repair gains at each cell "
                                 "of the action grid of its validation faces' coarse images (see `gain_map`).")
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


def gain_map(config, workdir: str, batches: int) -> dict[str, np.ndarray]:
  """Does the policy's reward depend on its action? R's repair of the patch at every cell of the config's
  action grid (config.policy.action_stride) of each validation face's coarse image ỹ (the state s_0), with
  run `workdir`'s networks: {"pixel": the squared error to y before − after, summed over the patch,
  "improvement": the short-term reward of config.policy.reward "improvement" (L_p before − after)},
  each (faces, cells)."""
  import os   # pylint: disable=import-outside-toplevel
  from hallujax import run_files, run_setup   # pylint: disable=import-outside-toplevel  (it imports the methods)
  from hallujax.data import pipeline   # pylint: disable=import-outside-toplevel
  config = config.copy_and_resolve_references()
  # The run's own config.json lays out its state (its policy options may differ from this config's).
  run_config = run_files.read_run_config(workdir) if os.path.isfile(os.path.join(workdir, "config.json")) else config
  _, state, _ = run_setup.restore_run(run_config, workdir)
  networks, params = ipfh.build_networks(config), state.params
  size, patch, stride = config.data.target_size, config.policy.patch_size, config.policy.action_stride
  scale = size // config.data.input_size
  cells = (size // stride) ** 2
  corners = jnp.stack([jnp.stack(rollout_lib.patch_corner(jnp.int32(a), size, size, patch, stride))
                       for a in range(cells)])
  restoration = {"params": params["restoration"]}
  cut = lambda image, corner: jax.lax.dynamic_slice(image, (corner[0], corner[1], 0), (patch, patch, 3))

  def one_face(image, target, lr_image):
    feature = networks.restoration.apply(restoration, image, method="encode_image")
    patches = jax.vmap(lambda c: cut(image, c))(corners)
    targets = jax.vmap(lambda c: cut(target, c))(corners)
    lr_patches = jax.vmap(lambda c: rollout_lib.low_resolution_patch(lr_image, c[0], c[1], patch, scale))(corners)
    lr_targets = jax.vmap(lambda t, x: rollout_lib.lr_reference(params, networks, config.loss.lr_reference, t, x))(
        targets, lr_patches)
    repaired = networks.restoration.apply(restoration, jnp.broadcast_to(feature, (cells,) + feature.shape),
                                          patches, jnp.zeros(patches.shape[:-1], bool), method="repair")
    pixel = (jnp.sum(jnp.square(patches - targets), (1, 2, 3)) - jnp.sum(jnp.square(repaired - targets), (1, 2, 3)))
    improvement = (rollout_lib.dual_domain_loss(params, networks, patches, targets, lr_targets)
                   - rollout_lib.dual_domain_loss(params, networks, repaired, targets, lr_targets))
    return pixel, improvement

  per_batch = jax.jit(lambda batch: jax.vmap(one_face)(
      ipfh.coarse_images(params, networks, batch["input"]), batch["target"], batch["input"]))
  results = [jax.device_get(per_batch(jax.tree.map(jnp.asarray, batch)))
             for batch in pipeline.eval_batches(config, "validation", batches=batches)]
  return {"pixel": np.concatenate([r[0] for r in results]), "improvement": np.concatenate([r[1] for r in results])}


def print_gain_map(config, workdir: str, batches: int) -> None:
  gains = gain_map(config, workdir, batches)
  faces, cells = gains["pixel"].shape
  print(f"IPFH gain map of {workdir}: R's repair at each of {cells} cells (action_stride "
        f"{config.policy.action_stride}) of {faces} validation faces' ỹ")
  for name, gain in gains.items():
    ranked = np.sort(gain, axis=1)[:, ::-1]
    print(f"  {name:<12} mean {gain.mean():.4g}   std over cells (mean over faces) {gain.std(axis=1).mean():.4g}   "
          f"std over faces of their mean {gain.mean(axis=1).std():.4g}   best cell {ranked[:, 0].mean():.4g}   "
          f"5th {ranked[:, 4].mean():.4g}   median {np.median(gain):.4g}   cells > 0 {(gain > 0).mean():.2f}")
  correlation = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(gains["pixel"], gains["improvement"])])
  print(f"  per-face correlation of the two over cells {correlation:.3f}")


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
  if _GAIN_MAP.value:
    print_gain_map(config, _GAIN_MAP.value, _BATCHES.value)
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
