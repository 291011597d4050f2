"""VPFL (paper 000, §3.2): Dirichlet partitions, FedAvg / MPR / FedProx, the vmapped round, resume mid-round."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vpfl as vpfl_configs
from hallujax import run_setup, sharding, loop
from hallujax.data import partition, pipeline
from hallujax.federated import aggregation
from hallujax.methods import vpfl, vpgan


# ----------------------------------------------------------------------------- partitions


def test_dirichlet_partition_counts_for_a_fixed_seed():
  labels = np.repeat(np.arange(6), 20)          # 6 identities × 20 images
  parts = partition.dirichlet_partition(labels, clients=4, alpha=0.3, seed=0, min_size=10)
  values, counts = partition.partition_counts(parts, labels)
  # Pinned for seed 0: a change of the draw (order, generator, retry rule) changes every partition made so far.
  np.testing.assert_array_equal(counts, [[0, 8, 13, 9, 2, 16],
                                         [0, 9, 0, 2, 15, 1],
                                         [11, 2, 5, 1, 1, 1],
                                         [9, 1, 2, 8, 2, 2]])
  assert values.tolist() == list(range(6)) and counts.sum(axis=1).min() >= 10
  # Disjoint, covering, deterministic; a smaller α skews clients more (largest label share per client).
  everything = np.sort(np.concatenate(parts))
  np.testing.assert_array_equal(everything, np.arange(len(labels)))
  again = partition.dirichlet_partition(labels, clients=4, alpha=0.3, seed=0, min_size=10)
  assert all(np.array_equal(a, b) for a, b in zip(parts, again))

  def skew(alpha):
    shares = []
    for seed in range(20):
      _, c = partition.partition_counts(partition.dirichlet_partition(labels, 4, alpha, seed, 1), labels)
      shares.append(np.mean(c.max(axis=1) / np.maximum(c.sum(axis=1), 1)))
    return np.mean(shares)

  assert skew(0.1) > skew(100.0) + 0.3


def test_minimum_client_size_is_met_or_refused():
  labels = np.repeat(np.arange(4), 10)
  parts = partition.dirichlet_partition(labels, clients=4, alpha=0.3, seed=3, min_size=5)
  assert min(len(p) for p in parts) >= 5
  with pytest.raises(ValueError, match="cannot give 4 clients at least min_size=11"):
    partition.dirichlet_partition(labels, clients=4, alpha=0.3, seed=3, min_size=11)


def test_clients_hold_only_their_sites_examples_and_held_out_splits_are_each_sites_test_set():
  labels = np.arange(80) % 5
  parts = partition.sited_dirichlet_partition(labels, clients=8, sites=2, alpha=0.3, seed=1, min_size=2)
  for k, part in enumerate(parts):
    expected_site = k // 4
    assert set(partition.site_of_index(part, 80, 2)) == {expected_site}
  held_out = partition.sited_even_partition(32, clients=8, sites=2)
  assert [sorted(set(partition.site_of_index(p, 32, 2))) for p in held_out] == [[0]] * 4 + [[1]] * 4
  assert sorted(np.concatenate(held_out).tolist()) == list(range(32))


def test_two_sites_see_the_face_world_through_different_thermal_sensors():
  from hallujax.data.faceworld import FaceWorldSource
  config = tiny_config()
  assert tuple(config.data.thermal_sensors) == ("reference", "uncooled")
  sensed = FaceWorldSource(config.data, "train")
  plain_config = config.data.copy_and_resolve_references()
  plain_config.thermal_sensors = ()
  plain = FaceWorldSource(plain_config, "train")
  first, last = sensed[0], sensed[len(sensed) - 1]
  assert (int(first["site"]), int(last["site"])) == (0, 1) and "site" not in plain[0]
  np.testing.assert_array_equal(first["input"], plain[0]["input"])        # the reference camera is the render
  np.testing.assert_array_equal(last["target"], plain[len(plain) - 1]["target"])   # visible images untouched
  rendered, seen = plain[len(plain) - 1]["input"].astype(float), last["input"].astype(float)
  assert np.mean(np.abs(seen - rendered)) > 10 and seen.std() < rendered.std()   # offset, flatter response
  assert [sensed.identity(i) for i in range(8)] == [sensed.parameters(i)[0] for i in range(8)]
  # The Dirichlet partition through the pipeline: each client reads only its own site's half.
  parts = pipeline.client_partitions(config, "train", len(sensed))
  assert [set(partition.site_of_index(p, len(sensed), 2)) for p in parts] == [{0}, {1}]


def test_drift_variant_gives_each_institution_its_own_client_and_long_rounds():
  """configs/vpfl.py:drift: one client per site (each trains on one thermal sensor), rounds of P = 40 steps,
  evaluated (client_drift, mpr_loss_share) after every round; any strategy applies to it."""
  config = vpfl_configs.get_config("drift")
  assert (config.data.clients, config.data.client_partition) == (partition.site_count(config.data), "sites") == (
      2, "sites")
  assert config.federated.local_steps == config.train.eval_every == 40
  assert config.train.steps % config.federated.local_steps == 0
  assert vpfl_configs.get_config("drift,strategy=fedavg").federated.strategy == "fedavg"


# ----------------------------------------------------------------------------- aggregation


def test_fedavg_is_the_mean_and_leaves_out_a_client_with_zero_weight():
  stacked = {"a": jnp.arange(6.0).reshape(3, 2), "b": {"c": jnp.array([1.0, 2.0, 6.0])}}
  chex.assert_trees_all_close(aggregation.fedavg(stacked), {"a": jnp.array([2.0, 3.0]), "b": {"c": 3.0}})
  chex.assert_trees_all_close(aggregation.fedavg(stacked, jnp.array([1.0, 1.0, 0.0])),
                              {"a": jnp.array([1.0, 2.0]), "b": {"c": 1.5}})


def test_optimizer_state_rules_between_rounds():
  optimizer = __import__("optax").adam(1e-2)
  params = {"w": jnp.ones((3,))}
  states = aggregation.stack([optimizer.update({"w": jnp.full((3,), g)}, optimizer.init(params), params)[1]
                              for g in (1.0, -3.0)])
  kept = aggregation.optimizer_state_between_rounds(states, "keep")
  chex.assert_trees_all_equal(kept, states)
  reset = aggregation.optimizer_state_between_rounds(states, "reset")
  assert float(jnp.abs(reset[0].mu["w"]).sum()) == 0.0 and int(reset[0].count[0]) == 1   # counters kept
  averaged = aggregation.optimizer_state_between_rounds(states, "average")
  np.testing.assert_allclose(averaged[0].mu["w"], np.full((2, 3), 0.1 * (1.0 - 3.0) / 2), rtol=1e-6)
  with pytest.raises(ValueError, match="optimizer_state='drop'"):
    aggregation.optimizer_state_between_rounds(states, "drop")


def test_proximal_terms_are_squared_distances_and_send_no_gradient_into_the_global_copy():
  local = {"w": jnp.array([1.0, 2.0])}
  global_ = {"w": jnp.array([0.0, 4.0])}
  assert float(aggregation.fedprox_term(local, local, 1e-3)) == 0.0
  np.testing.assert_allclose(aggregation.fedprox_term(local, global_, 0.5), 0.25 * (1 + 4), rtol=1e-6)
  to_global = jax.grad(lambda g: aggregation.fedprox_term(local, g, 0.5))(global_)
  to_local = jax.grad(lambda l: aggregation.fedprox_term(l, global_, 0.5))(local)
  np.testing.assert_array_equal(to_global["w"], 0.0)
  np.testing.assert_allclose(to_local["w"], [0.5, -1.0])

  codes = {"w": jnp.ones((2, 3, 4)), "features": (jnp.ones((2, 4, 4, 2)), jnp.zeros((2, 8, 8, 1)))}
  moved = {"w": codes["w"] + 1.0, "features": (codes["features"][0], codes["features"][1] + 2.0)}
  # Eq. 9 with ‖·‖² per example, averaged over the batch: 12·1² + 64·2² = 268.
  np.testing.assert_allclose(aggregation.mpr_term(moved, codes, 1e-3), 1e-3 * 268, rtol=1e-6)
  assert float(aggregation.mpr_term(codes, codes, 1e-3)) == 0.0
  gradient = jax.grad(lambda g: aggregation.mpr_term(moved, g, 1e-3))(codes)
  assert all(float(jnp.abs(leaf).sum()) == 0.0 for leaf in jax.tree.leaves(gradient))


# ----------------------------------------------------------------------------- the local update and the round


def tiny_config(strategy="vpfl"):
  c = vpfl_configs.get_config(f"tiny,strategy={strategy}")
  c.loss.r1_every = 0          # one program kind per step: "local" / "local_aggregate"
  return c


@pytest.fixture(scope="module")
def initial():
  """The tiny VPFL method and its state from key 0, initialized once for the module by one compiled program (op
  by op, the initialization took two of the evaluation test's five minutes under load)."""
  method = vpfl.make(tiny_config())
  return method, jax.jit(method.init)(jax.random.key(0))


@pytest.fixture(scope="module")
def setup(initial):
  config = tiny_config()
  local = vpfl.local_update(config)
  params = initial[1].global_params     # Θ^0, VPGAN's init_params of key 0: every client starts from it
  frozen = jax.jit(local.vpgan.init_frozen)(jax.random.key(1))
  batches = pipeline.train_dataset(config)
  batch = {name: jnp.asarray(value) for name, value in next(iter(batches)).items()
           if name in local.vpgan.batch_spec}
  step = jax.jit(functools.partial(local.client_step, r1=False))
  return config, local, params, frozen, batch, step


def client_batch(batch, k):
  return {name: value[k] for name, value in batch.items()}


def test_mpr_is_zero_at_the_round_start_and_nonzero_after_one_local_step(setup):
  config, local, params, frozen, batch, step = setup
  opt_state = local.init_opt_state(params)
  first, opt_state, metrics = step(params, opt_state, params, frozen, client_batch(batch, 0))
  assert float(metrics["loss_mpr"]) == 0.0            # local = global at the round's start, exactly
  assert "loss_proximal_encoder" not in metrics       # VPFL: MPR, no FedProx term
  _, _, metrics = step(first, opt_state, params, frozen, client_batch(batch, 0))
  assert float(metrics["loss_mpr"]) > 1e-8
  # The same bookkeeping for FedProx's term on the parameters the step produced.
  assert float(aggregation.fedprox_term(params, params, 1e-3)) == 0.0
  assert float(aggregation.fedprox_term(first, params, 1e-3)) > 0.0


def test_at_the_round_start_a_vpfl_local_step_is_vpgans_step(setup):
  """The local update repeats VPGAN's losses (Eq. 5); MPR and its gradient vanish when local = global."""
  config, local, params, frozen, batch, step = setup
  mine, _, metrics = step(params, local.init_opt_state(params), params, frozen, client_batch(batch, 0))
  method = vpgan.make(config)
  state = vpgan.VPGANState(step=jnp.zeros((), jnp.int32), params=params, opt_state=local.init_opt_state(params))
  theirs, their_metrics = jax.jit(method.steps["train"])(state, frozen, client_batch(batch, 0), jax.random.key(0))
  chex.assert_trees_all_close(mine, theirs.params, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["loss_generator"], their_metrics["loss_generator"], rtol=1e-5)


def test_evaluation_reports_the_last_rounds_client_drift_and_mpr_share(setup, initial):
  """client_drift and mpr_loss_share (the tables' "clients drift" and "MPR alive" checks) read the clients as
  they were just before Eq. 8's mean: 0 before any round; after a round, the clients' codes
  have left the round's global model's and MPR carries a share of each client's generator loss."""
  _, _, _, frozen, batch, _ = setup
  method, initial_state = initial
  state = initial_state
  evaluate = jax.jit(method.eval_step)
  before = jax.device_get(evaluate(state, frozen, batch))
  # 0 up to rounding: the clients' codes come from a loop over the stacked clients, the global's from one call.
  assert float(np.mean(before["client_drift"])) < 1e-6 and float(np.mean(before["mpr_loss_share"])) < 1e-6
  # One aggregating step: a round of one local step (one compiled program instead of two).
  state, _ = jax.jit(method.steps["local_aggregate"])(state, frozen, batch, jax.random.key(0))
  chex.assert_trees_all_equal(state.last_round["global_params"], initial_state.global_params)
  after = jax.device_get(evaluate(state, frozen, batch))
  assert float(np.mean(after["client_drift"])) > 1e-4
  assert 0.0 < float(np.mean(after["mpr_loss_share"])) < 1.0
  assert 0.0 < float(np.mean(after["identity_loss_share"])) < 1.0


@pytest.mark.slow
def test_vmapped_round_equals_clients_run_one_after_another(setup, initial):
  config, local, params, frozen, batch, step = setup
  method, state = initial
  assert method.schedule(0) == "local" and method.schedule(1) == "local_aggregate"
  new_state, _ = jax.jit(method.steps["local_aggregate"])(state, frozen, batch, jax.random.key(0))

  clients = []
  for k in range(config.data.clients):
    updated, _, _ = step(params, local.init_opt_state(params), params, frozen, client_batch(batch, k))
    clients.append(updated)
  expected = aggregation.fedavg(aggregation.stack(clients))
  chex.assert_trees_all_close(new_state.global_params, expected, rtol=2e-5, atol=2e-6)
  for k in range(config.data.clients):   # Θ^{q+1} deployed to every client
    chex.assert_trees_all_equal(jax.tree.map(lambda p: p[k], new_state.params), new_state.global_params)
  assert int(new_state.step) == 1
  # The clients in a loop inside the program (federated.client_loop="map") give the same round.
  looped_config = config.copy_and_resolve_references()
  looped_config.federated.client_loop = "map"
  looped = vpfl.make(looped_config)
  looped_state, _ = jax.jit(looped.steps["local_aggregate"])(looped.init(jax.random.key(0)), frozen, batch,
                                                             jax.random.key(0))
  chex.assert_trees_all_close(looped_state.global_params, expected, rtol=2e-5, atol=2e-6)


def test_centralized_trains_one_model_on_both_sites_and_reports_each_site():
  config = tiny_config("centralized")
  train_batch = next(iter(pipeline.train_dataset(config)))
  test_batch = pipeline.eval_batches(config, "test")[0]
  for batch in (train_batch, test_batch):   # one slot per site, in every split
    assert [set(np.asarray(batch["site"][s]).tolist()) for s in range(2)] == [{0}, {1}]
  method = vpfl.make(config)
  state = jax.eval_shape(method.init, jax.random.key(0))
  frozen = jax.eval_shape(method.init_frozen, jax.random.key(1))
  batch = {name: test_batch[name] for name in method.batch_spec}
  assert jax.tree.leaves(state.params)[0].shape[0] == 1            # one model, not one per slot
  state, _ = jax.eval_shape(method.steps["local"], state, frozen, batch, jax.random.key(0))
  assert jax.tree.leaves(state.params)[0].shape[0] == 1
  values = jax.eval_shape(method.eval_step, state, frozen, batch)
  per_slot = config.train.batch_size
  assert values["site0_psnr"].shape == values["site1_psnr"].shape == (per_slot,)
  assert values["psnr"].shape == (2 * per_slot,)
  images = jax.eval_shape(method.hallucinate, state, frozen, batch)
  assert all(value.shape[0] == 2 * per_slot for value in images.values())
  # The pooled model sees as many examples per step as the K clients together.
  pooled, federated = vpfl_configs.get_config("smoke,strategy=centralized"), vpfl_configs.get_config("smoke")
  assert pooled.data.clients * pooled.train.batch_size == federated.data.clients * federated.train.batch_size
  one_slot = tiny_config("centralized")
  one_slot.data.clients = 1
  with pytest.raises(ValueError, match="'centralized' reads one batch slot per site; config.data.clients=1"):
    vpfl.make(one_slot)


@pytest.mark.slow
def test_clients_split_over_a_mesh_axis_give_the_same_round(setup, initial):
  """mesh.clients = 2 of 8 devices (each device group steps one client, its batch over 4 data devices) gives the
  round and the evaluation of the unsharded program. The SPMD partitioner alone rejected this program
  (docs/vpfl.md); the local steps now run under shard_map over the clients axis."""
  _, _, _, frozen, batch, _ = setup
  method, state = initial
  expected = jax.jit(method.steps["local_aggregate"])(state, frozen, batch, jax.random.key(0))
  expected_evaluation = jax.jit(method.eval_step)(expected[0], frozen, batch)

  config = tiny_config()
  config.mesh.update(clients=2, data=-1)
  method = vpfl.make(config)
  mesh = sharding.make_mesh(config.mesh)
  assert dict(mesh.shape) == {"clients": 2, "data": 4, "model": 1}
  _, state_shardings = run_setup.abstract_state(method, config, mesh)
  frozen_shardings = sharding.state_shardings(jax.eval_shape(method.init_frozen, jax.random.key(1)), mesh,
                                              config.mesh)
  batch_sharding = sharding.batch_sharding(mesh, method.batch_axes)
  state = jax.jit(method.init, out_shardings=state_shardings)(jax.random.key(0))
  replicated = sharding.replicated(mesh)
  step = jax.jit(method.steps["local_aggregate"],
                 in_shardings=(state_shardings, frozen_shardings, batch_sharding, replicated),
                 out_shardings=(state_shardings, replicated))
  new_state, metrics = step(state, frozen, batch, jax.random.key(0))
  evaluation = jax.jit(method.eval_step, in_shardings=(state_shardings, frozen_shardings, batch_sharding))(
      new_state, frozen, batch)
  chex.assert_trees_all_close((new_state.global_params, metrics, evaluation),
                              (expected[0].global_params, expected[1], expected_evaluation), rtol=2e-5, atol=2e-6)


@pytest.mark.slow
def test_a_run_killed_mid_round_resumes_to_the_same_parameters(tmp_path):
  """P = 2: the interrupted run stops after step 3 (one step into round 2) and resumes from its checkpoint.

  Two devices on the data axis: every device holds both clients, each client's batch of 4 is split in two.
  """
  config = tiny_config()
  devices = jax.devices()[:2]
  config.train.update(steps=4, checkpoint_every=3, eval_every=100, image_every=100)
  straight = loop.train(config, tmp_path / "straight", devices=devices)
  config.train.steps = 3
  loop.train(config, tmp_path / "interrupted", devices=devices)
  config.train.steps = 4
  resumed = loop.train(config, tmp_path / "interrupted", devices=devices)
  assert int(resumed.state.step) == 4
  chex.assert_trees_all_close(jax.device_get(straight.state), jax.device_get(resumed.state), atol=0, rtol=0)
  assert {"site0_psnr", "site1_psnr", "psnr"} <= set(resumed.evaluation)
