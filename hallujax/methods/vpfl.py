"""VPFL (paper 000, §3.2, Algorithm 1): VPGAN trained by K institutions that share only parameters.

The K clients' trainable VPGAN networks (encoder and discriminator) and their
optimizer states are stacked on a leading clients axis (``state_rules`` put it
on the mesh's ``clients`` axis); the round's global model Θ^q is kept
next to them. One training step runs every client's local VPGAN step (Eq. 7,
the losses of Eq. 5) in one program, ``vmap``-ed over that axis (or, with
``federated.client_loop="map"``, a loop inside the program: faster on CPUs,
where per-client weights make vmapped convolutions grouped), each client on its own batch
(batches are (K, B, ...): ``config.data.clients`` = K, each client reading its
own partition). Every ``federated.local_steps`` = P steps (paper: 200) the step
also aggregates (Eq. 8, ``hallujax.federated.aggregation.fedavg``): the mean
over clients of every trained parameter becomes Θ^{q+1}, is deployed to every
client, and becomes the reference of the next round's regularizer. With
``config.mesh.clients`` > 1 each group of devices steps its own clients
(``per_device_group``: shard_map over that axis). The host
schedule chooses the aggregating program (``local_aggregate``) on steps
P−1, 2P−1, …, so no step pays for a conditional and no batch is spent on
aggregation. The trainer's checkpoint (state with Θ^q and the step, data
iterator positions) resumes a run killed mid-round to the same parameters.

Strategies (``config.federated.strategy``; Table 6's rows):
  vpfl         FedAvg + MPR (Eq. 9): λd (‖w − w^q‖² + Σ_i ‖F_i − F_i^q‖²), w^q and F_i^q
               from the global encoder on the same input, under stop-gradient
  fedavg       "VPFL w/o MPR": FedAvg only
  fedprox      FedAvg + μ/2 ‖Θ − Θ^q‖² on the encoder's and the discriminator's parameters
  local_only   no aggregation: K independent models ("Local Only C1 … C8")
  fused        trained as local_only; evaluation also reports the mean of the K models' outputs
  centralized  one model on the pooled data (the upper bound): batches keep one slot per site
               (data.client_partition="sites"), and each step trains the one model on all slots
Evaluation reports every metric per site (``site<s>_<metric>``, the paper's
VIS-TH and ARL-VTF sub-tables) and over both (``<metric>``, "Global Test Avg.");
local_only / fused runs report ``client<k>_…`` for every local model and ``fused_…``.

Optimizer state between rounds: ``config.federated.optimizer_state`` (see
aggregation.optimizer_state_between_rounds), by default "keep": each client
keeps its own Adam moments across rounds, as a silo whose optimizer lives for
the whole run (the paper does not say; "keep" is what a PyTorch client that
loads the global weights into its model, leaving its optimizer alone, does).

The local VPGAN step is `LocalUpdate.client_step`: one client, unbatched. The
one-program method vmaps it; the Flower ClientApp (hallujax.federated.flower)
jits it as it is. Both aggregate with the same `fedavg`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

from hallujax import sharding
from hallujax.federated import aggregation
from hallujax.data.partition import site_count, site_of_client
from hallujax.methods import CLIENT_BATCH_AXES, MakeContext, Method
from hallujax.methods import vpgan
from hallujax.methods.train_state import update_networks
from hallujax.metrics.image_quality import psnr_from_unit_range, ssim_from_unit_range

TRAINED = vpgan.TRAINED   # ("encoder", "discriminator"): every trained network is aggregated
STRATEGIES = aggregation.STRATEGIES


@flax.struct.dataclass
class VPFLState:
  step: jax.Array
  params: dict          # {"encoder": ..., "discriminator": ...}, every leaf (K, ...)
  opt_state: dict       # one optax state per trained network and client, leaves (K, ...)
  global_params: dict   # Θ^q, the round's global model (no clients axis)
  # The last finished round, kept for evaluation's client_drift and mpr_loss_share (at a round boundary
  # the clients equal the new global model, so drift is only visible in the models before Eq. 8):
  # {"params": every client's parameters just before the aggregation (K, ...), "global_params": the Θ^q
  # that round started from}. Before the first aggregation both are Θ^0.
  last_round: dict


@dataclasses.dataclass(frozen=True)
class Federation:
  """What the strategy does, read once from config.federated."""
  strategy: str
  aggregate: bool
  mpr_weight: float
  proximal_weight: float
  local_steps: int
  optimizer_state: str
  mpr_reduction: str

  @classmethod
  def of(cls, config) -> "Federation":
    f = config.federated
    if f.strategy not in STRATEGIES:
      raise ValueError(f"config.federated.strategy={f.strategy!r}; expected one of {', '.join(STRATEGIES)}.")
    aggregate, mpr, proximal = STRATEGIES[f.strategy]
    if f.local_steps < 1:
      raise ValueError(f"config.federated.local_steps={f.local_steps}; expected P ≥ 1 (paper: 200).")
    if f.optimizer_state not in aggregation.OPTIMIZER_STATE_RULES:
      raise ValueError(f"config.federated.optimizer_state={f.optimizer_state!r}; expected one of "
                       f"{', '.join(aggregation.OPTIMIZER_STATE_RULES)}.")
    if f.strategy == "centralized" and int(config.data.clients) != site_count(config.data):
      raise ValueError(f"strategy 'centralized' reads one batch slot per site; config.data.clients="
                       f"{config.data.clients}, expected {site_count(config.data)} (configs/vpfl.py:centralized).")
    if int(config.data.clients) < 1:
      raise ValueError("VPFL needs config.data.clients = K ≥ 1 clients (paper: 8).")
    return cls(strategy=f.strategy, aggregate=aggregate, mpr_weight=float(f.mpr_weight) if mpr else 0.0,
               proximal_weight=float(f.proximal_weight) if proximal else 0.0, local_steps=int(f.local_steps),
               optimizer_state=f.optimizer_state, mpr_reduction=f.mpr_reduction)

  def aggregates_after(self, step: int) -> bool:
    """Algorithm 1: Eq. 8 after every P local steps (after steps P−1, 2P−1, ...)."""
    return self.aggregate and step % self.local_steps == self.local_steps - 1


# ----------------------------------------------------------------------------- one client's local update


def encode_with_global(parts: vpgan.Built, encoder_params, global_encoder_params, thermal):
  """(local codes, global codes): one program over both parameter sets (a vmap over the pair).

  The global copy is held constant (stop-gradient). The two codes can still differ by rounding when
  local = global (XLA need not compute the two slices alike), and Adam would turn that rounding noise
  into full-size steps of parameters that get no other gradient (measured: decode_0's biases moved by
  2e-5 in the first step, where VPGAN leaves them at 0); `local_generator_loss` therefore zeroes MPR
  exactly when the parameters are equal.
  """
  pair = jax.tree.map(lambda local_leaf, global_leaf: jnp.stack([local_leaf, jax.lax.stop_gradient(global_leaf)]),
                      encoder_params, global_encoder_params)
  both = jax.vmap(lambda p: vpgan.encode(parts, p, thermal))(pair)
  return (jax.tree.map(lambda leaf: leaf[0], both),
          jax.tree.map(lambda leaf: jax.lax.stop_gradient(leaf[1]), both))


# tests/test_vpfl.py checks that with no federated term one client's step is VPGAN's step.
def local_generator_loss(parts: vpgan.Built, federation: Federation, encoder_params, discriminator_params,
                         global_encoder_params, frozen, batch):
  """Eq. 5's generator loss, + MPR (Eq. 9) or FedProx's term on the encoder by the strategy."""
  if federation.mpr_weight > 0:
    encoded, global_encoded = encode_with_global(parts, encoder_params, global_encoder_params, batch["input"])
  else:
    encoded = vpgan.encode(parts, encoder_params, batch["input"])
  total, metrics = vpgan.generator_terms(parts, vpgan.image_of(parts, encoded, frozen), batch["target"],
                                         discriminator_params, frozen)
  if federation.mpr_weight > 0:
    # Eq. 9: the global model's codes on the same input (encode_with_global), constants for this update.
    mpr = aggregation.mpr_term(encoded, global_encoded, federation.mpr_weight, federation.mpr_reduction)
    # Local = global (a round's start) makes Eq. 9 exactly 0, and its gradient too (see encode_with_global).
    same = jnp.all(jnp.stack([jnp.all(a == b) for a, b in zip(jax.tree.leaves(encoder_params),
                                                             jax.tree.leaves(global_encoder_params))]))
    mpr = jnp.where(same, 0.0, mpr)
    total, metrics["loss_mpr"] = total + mpr, mpr
  if federation.proximal_weight > 0:
    proximal = aggregation.fedprox_term(encoder_params, global_encoder_params, federation.proximal_weight)
    total, metrics["loss_proximal_encoder"] = total + proximal, proximal
  metrics["loss_generator"] = total
  return total, metrics


def local_discriminator_loss(parts: vpgan.Built, federation: Federation, discriminator_params,
                             global_discriminator_params, real, fake):
  """StyleGAN2's discriminator loss, + FedProx's term on the discriminator by the strategy."""
  value, metrics = vpgan.discriminator_loss(parts, discriminator_params, real, fake)
  if federation.proximal_weight > 0:
    proximal = aggregation.fedprox_term(discriminator_params, global_discriminator_params,
                                        federation.proximal_weight)
    value, metrics["loss_proximal_discriminator"] = value + proximal, proximal
  return value, metrics


def client_step(parts: vpgan.Built, federation: Federation, params, opt_state, global_params, frozen, batch, *,
                r1: bool):
  """One client's local update (Eq. 7 on Eq. 5 [+ Eq. 9 / FedProx]); Θ^q (`global_params`) is only read."""
  optimizers = parts.optimizers
  real = batch["target"]
  fake = jax.lax.stop_gradient(vpgan.generate(parts, params["encoder"], frozen, batch["input"]))
  gradients, metrics = jax.grad(local_discriminator_loss, argnums=2, has_aux=True)(
      parts, federation, params["discriminator"], global_params["discriminator"], real, fake)
  params, opt_state = update_networks(optimizers, params, opt_state, {"discriminator": gradients})
  if r1:
    gradients, r1_metrics = jax.grad(vpgan.r1_loss, argnums=1, has_aux=True)(parts, params["discriminator"], real)
    params, opt_state = update_networks(optimizers, params, opt_state, {"discriminator": gradients})
    metrics.update(r1_metrics)
  gradients, generator_metrics = jax.grad(local_generator_loss, argnums=2, has_aux=True)(
      parts, federation, params["encoder"], params["discriminator"], global_params["encoder"], frozen, batch)
  params, opt_state = update_networks(optimizers, params, opt_state, {"encoder": gradients})
  metrics.update(generator_metrics)
  return params, opt_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def init_opt_state(parts: vpgan.Built, params) -> dict:
  return {name: parts.optimizers[name].init(params[name]) for name in TRAINED}


@dataclasses.dataclass(frozen=True)
class LocalUpdate:
  """One client's VPGAN (built once): shared by the one-program method and the Flower ClientApp."""
  parts: vpgan.Built          # VPGAN's networks, optimizers and loss weights (Eq. 2–6)
  federation: Federation
  vpgan: Method               # VPGAN's method: frozen networks, evaluation, image grids
  init_params: Callable       # rng -> {"encoder", "discriminator"}
  init_opt_state: Callable    # params -> {"encoder": optax state, "discriminator": ...}
  client_step: Callable       # (params, opt_state, global_params, frozen, batch, *, r1) -> (params, opt_state, metrics)
  uses_r1: Callable           # step -> bool: VPGAN's lazy R1 schedule
  generate: Callable          # (encoder params, frozen, thermal) -> images


def local_update(config, context: MakeContext = MakeContext()) -> LocalUpdate:
  """The local VPGAN step of Eq. 7 with Eq. 5's losses, plus MPR (Eq. 9) or FedProx by the strategy."""
  federation = Federation.of(config)
  parts = vpgan.build(config)
  return LocalUpdate(parts=parts, federation=federation, vpgan=vpgan.make(config, context),
                     init_params=functools.partial(vpgan.init_params, parts),
                     init_opt_state=functools.partial(init_opt_state, parts),
                     client_step=functools.partial(client_step, parts, federation),
                     uses_r1=functools.partial(vpgan.uses_r1, parts), generate=functools.partial(vpgan.generate, parts))


# ----------------------------------------------------------------------------- the round


def aggregate(state: VPFLState, optimizer_state_rule: str, weights=None) -> VPFLState:
  """Eq. 8: Θ^{q+1} = mean over clients, deployed to every client; optimizer states by the stated rule."""
  global_params = aggregation.fedavg(state.params, weights)
  clients = jax.tree.leaves(state.params)[0].shape[0]
  return state.replace(params=aggregation.broadcast(global_params, clients),
                       opt_state=aggregation.optimizer_state_between_rounds(state.opt_state, optimizer_state_rule),
                       global_params=global_params,
                       last_round=dict(params=state.params, global_params=state.global_params))


def site_slots(clients: int, sites: int) -> list[list[int]]:
  """The clients (batch slots) of each site: the evaluation batch's slot k holds site ⌊k·S/K⌋'s test examples."""
  return [[k for k in range(clients) if site_of_client(k, clients, sites) == s] for s in range(sites)]


def flatten_slots(batch: dict, slots: list[int]) -> dict:
  return {name: value[jnp.asarray(slots)].reshape(-1, *value.shape[2:]) for name, value in batch.items()}


def device_groups(config, mesh=None):
  """The abstract mesh (axis names and sizes only) `per_device_group` splits the clients over: of the run's mesh
  (`make`'s context), else of the mesh the run set-up builds from the same config; None when the mesh's
  clients axis is 1."""
  if int(config.mesh.clients) == 1:
    return None
  return (sharding.make_mesh(config.mesh) if mesh is None else mesh).abstract_mesh


def per_device_group(run_clients: Callable, abstract_mesh) -> Callable:
  """`run_clients(params, opt_state, global_params, frozen, batch)` over the stacked clients, split over the
  mesh's clients axis by shard_map when that axis is > 1 (`abstract_mesh` is not None: each device group runs
  its K / clients_axis clients; the data and model axes stay automatic inside). A client's step never reads
  another client's values, so the clients need no communication until Eq. 8's mean. Not left to the SPMD
  partitioner: it rejects the vmapped input gradient of VPGAN's RGB convolutions split over clients
  (docs/vpfl.md)."""
  if abstract_mesh is None:
    return run_clients
  clients, replicated = jax.P(sharding.CLIENTS_AXIS), jax.P()
  return jax.shard_map(run_clients, mesh=abstract_mesh, in_specs=(clients, clients, replicated, replicated, clients),
                       out_specs=clients, axis_names={sharding.CLIENTS_AXIS})


@dataclasses.dataclass(frozen=True)
class Built:
  """What `make` builds once from the config; every function below is a pure function of it."""
  local: LocalUpdate
  clients: int                # K: the batch's client slots
  models: int                 # the stacked parameter sets: one per client, or the one pooled model
  pooled: bool                # strategy "centralized": the sites' slots are one batch of one model
  site_slots: tuple           # the slots of each site (site_slots)
  # How the clients' local steps run in the one program: "vmap" (batched; per-client weights make every
  # convolution a grouped one with K groups) or "map" (a loop over clients inside the program).
  client_loop: str
  device_groups: Any          # device_groups(config, mesh): the clients axis's abstract mesh, or None

  @property
  def parts(self) -> vpgan.Built:
    return self.local.parts

  @property
  def federation(self) -> Federation:
    return self.local.federation


def build(config, context: MakeContext = MakeContext()) -> Built:
  local = local_update(config, context)
  clients = int(config.data.clients)
  pooled = local.federation.strategy == "centralized"
  models = 1 if pooled else clients
  if models % int(config.mesh.clients):
    raise ValueError(f"config.mesh.clients={config.mesh.clients} does not divide the {models} models of strategy "
                     f"{local.federation.strategy!r}; every device group of the clients axis needs the same number.")
  sites = site_count(config.data)
  if clients % sites:
    raise ValueError(f"config.data.clients={clients} does not split evenly over {sites} sites.")
  client_loop = config.federated.client_loop
  if client_loop not in ("vmap", "map"):
    raise ValueError(f"config.federated.client_loop={client_loop!r}; expected 'vmap' or 'map'.")
  return Built(local=local, clients=clients, models=models, pooled=pooled,
               site_slots=tuple(tuple(slots) for slots in site_slots(clients, sites)), client_loop=client_loop,
               device_groups=device_groups(config, context.mesh))


# ----------------------------------------------------------------------------- state and steps


def init(built: Built, rng) -> VPFLState:
  # Algorithm 1: every client starts from the global initialization Θ^0.
  global_params = vpgan.init_params(built.parts, rng)
  opt_state = init_opt_state(built.parts, global_params)
  params = aggregation.broadcast(global_params, built.models)
  return VPFLState(step=jnp.zeros((), jnp.int32), params=params,
                   opt_state=aggregation.broadcast(opt_state, built.models), global_params=global_params,
                   last_round=dict(params=params, global_params=global_params))


def load_pretrained(built: Built, state: VPFLState) -> VPFLState:
  """VPGAN's (the discriminator from the prior file), applied to Θ^0 and deployed to every client."""
  single = vpgan.VPGANState(step=state.step, params=state.global_params,
                            opt_state=jax.tree.map(lambda leaf: leaf[0], state.opt_state))
  loaded = built.local.vpgan.load_pretrained(single)
  if loaded is single:
    return state
  params = aggregation.broadcast(loaded.params, built.models)
  # last_round gets copies: the step donates the state, and one buffer in two of its leaves is donated twice
  # (a run with config.weights.prior failed at its first step: "Attempt to donate the same buffer twice").
  last_round = jax.tree.map(jnp.copy, dict(params=params, global_params=loaded.params))
  return state.replace(params=params, opt_state=aggregation.broadcast(loaded.opt_state, built.models),
                       global_params=loaded.params, last_round=last_round)


def run_clients(built: Built, params, opt_state, global_params, frozen, batch, *, r1: bool):
  """Every client's local step on its own batch: (params, opt_state, metrics), each with the clients axis."""
  step_one = functools.partial(built.local.client_step, r1=r1)
  if built.client_loop == "vmap":
    return jax.vmap(step_one, in_axes=(0, 0, None, None, 0))(params, opt_state, global_params, frozen, batch)
  # "map": the clients one after another inside the program (plain convolutions, K× less memory)
  return jax.lax.map(lambda client: step_one(client[0], client[1], global_params, frozen, client[2]),
                     (params, opt_state, batch))


def local_step(built: Built, state: VPFLState, frozen, batch, rng, *, r1: bool, aggregate_after: bool):
  """Every client's local step (Eq. 7); with `aggregate_after`, then Eq. 8."""
  del rng   # VPGAN's step is deterministic
  if built.pooled:   # the sites' slots become one batch of the one model
    batch = flatten_slots(batch, list(range(built.clients)))
    batch = jax.tree.map(lambda value: value[None], batch)
  params, opt_state, metrics = per_device_group(functools.partial(run_clients, built, r1=r1), built.device_groups)(
      state.params, state.opt_state, state.global_params, frozen, batch)
  state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  if aggregate_after:
    state = aggregate(state, built.federation.optimizer_state)
  return state, {name: jnp.mean(value) for name, value in metrics.items()}


def schedule(built: Built, step: int) -> str:
  return ("local" + ("_r1" if built.local.uses_r1(step) else "")
          + ("_aggregate" if built.federation.aggregates_after(step) else ""))


# ----------------------------------------------------------------------------- evaluation


def model_values(built: Built, params, frozen, batch) -> dict:
  """VPGAN's per-example evaluation of one model (l1, psnr, ssim, arcface_cosine, the bicubic_ ones, and
  identity_loss_share, which reads the model's discriminator for Eq. 5's adversarial term)."""
  state = vpgan.VPGANState(step=jnp.zeros((), jnp.int32), params=params, opt_state={})
  return built.local.vpgan.eval_step(state, frozen, batch)


def image_values(built: Built, images, frozen, batch) -> dict:
  target = batch["target"]
  identity = lambda x: vpgan.identity_features(built.parts, frozen, x)
  features, target_features = identity(images), identity(target)
  return {"l1": jnp.mean(jnp.abs(images - target), axis=(1, 2, 3)),
          "psnr": psnr_from_unit_range(images, target), "ssim": ssim_from_unit_range(images, target),
          "arcface_cosine": jnp.sum(features * target_features, axis=-1) / (
              jnp.linalg.norm(features, axis=-1) * jnp.linalg.norm(target_features, axis=-1) + 1e-8)}


def per_site(built: Built, values_of: Callable, prefix: str, batch) -> dict:
  """`values_of(site batch)` for each site as site<s>_<name>, and over all sites as <name>."""
  out: dict[str, Any] = {}
  for s, site in enumerate(built.site_slots):
    for name, value in values_of(flatten_slots(batch, list(site))).items():
      out[f"{prefix}site{s}_{name}"] = value
      out[f"{prefix}{name}"] = value if s == 0 else jnp.concatenate([out[f"{prefix}{name}"], value], axis=-1)
  return out


def squared_norm(tree) -> jax.Array:
  """Σ of squares over every leaf, per example (leading axis)."""
  return sum(jnp.sum(jnp.square(leaf.astype(jnp.float32)).reshape(leaf.shape[0], -1), axis=-1)
             for leaf in jax.tree.leaves(tree))


def codes(encoded) -> dict:
  """Eq. 9's w and F_i of the encoder's outputs."""
  return {"features": encoded["features"], **({"w": encoded["w"]} if "w" in encoded else {})}


def last_round_values(built: Built, state: VPFLState, frozen, batch) -> dict:
  """client_drift and mpr_loss_share of the last finished round, on held-out examples (all sites).

  client_drift: per example, √(‖w − w^q‖² + Σ_i ‖F_i − F_i^q‖²) / √(‖w^q‖² + Σ_i ‖F_i^q‖²), the distance of
  a client's encoder codes (Eq. 9's w and F_i, from its parameters before the aggregation) from the
  round's global model's codes, relative to the global codes' size; the mean over clients and examples.
  mpr_loss_share: λd·MPR / (Eq. 5 + λd·MPR) of each client's generator loss (its encoder and
  discriminator before the aggregation), the mean over clients; exactly 0 for strategies without MPR.
  """
  parts, federation = built.parts, built.federation
  examples = flatten_slots(batch, list(range(built.clients)))
  round_global = state.last_round["global_params"]
  global_encoded = vpgan.encode(parts, round_global["encoder"], examples["input"])

  def one_client(params):
    encoded = vpgan.encode(parts, params["encoder"], examples["input"])
    difference = jax.tree.map(jnp.subtract, codes(encoded), codes(global_encoded))
    drift = jnp.sqrt(squared_norm(difference) / (squared_norm(codes(global_encoded)) + 1e-12))
    generator_loss, _ = vpgan.generator_terms(parts, vpgan.image_of(parts, encoded, frozen), examples["target"],
                                              params["discriminator"], frozen)
    mpr = aggregation.mpr_term(encoded, global_encoded, federation.mpr_weight, federation.mpr_reduction)
    return drift, mpr / (generator_loss + mpr)

  drift, share = jax.lax.map(one_client, state.last_round["params"])
  # Per example, as every eval_step value (evaluate concatenates batches; a 0-d share failed it).
  client_drift = jnp.mean(drift, axis=0)
  return {"client_drift": client_drift, "mpr_loss_share": jnp.broadcast_to(jnp.mean(share), client_drift.shape)}


def eval_step(built: Built, state: VPFLState, frozen, batch) -> dict:
  if built.federation.aggregate:
    values = per_site(built, lambda b: model_values(built, state.global_params, frozen, b), "", batch)
    return dict(values, **last_round_values(built, state, frozen, batch))
  if built.pooled:
    return per_site(built, lambda b: model_values(built, jax.tree.map(lambda p: p[0], state.params), frozen, b),
                    "", batch)
  # Every local model on every site's test set ("Local Only C1 … C8"), one vmapped program over the models.
  every = per_site(built, lambda b: jax.vmap(lambda p: model_values(built, p, frozen, b))(state.params), "", batch)
  values = {f"client{k}_{name}": value[k] for name, value in every.items() for k in range(built.clients)}

  def fused(b):
    outputs = jax.vmap(lambda p: built.local.generate(p, frozen, b["input"]))(state.params["encoder"])
    return image_values(built, jnp.clip(jnp.mean(outputs, axis=0), -1.0, 1.0), frozen, b)

  values.update(per_site(built, fused, "fused_", batch))
  return values


def hallucinate(built: Built, state: VPFLState, frozen, batch) -> dict:
  """Every example, clients × batch flattened in slot order: the global model's (or the pooled model's)
  images, or with local_only / fused each client's model on its own client's examples."""
  def columns(encoder_params, client_batch):
    return built.local.vpgan.hallucinate(vpgan.VPGANState(step=jnp.zeros((), jnp.int32),
                                                          params={"encoder": encoder_params}, opt_state={}),
                                         frozen, client_batch)
  if built.federation.aggregate or built.pooled:
    encoder = state.global_params["encoder"] if built.federation.aggregate else jax.tree.map(
        lambda p: p[0], state.params["encoder"])
    return columns(encoder, flatten_slots(batch, list(range(built.clients))))
  images = jax.vmap(columns)(state.params["encoder"], batch)
  return {name: value.reshape(-1, *value.shape[2:]) for name, value in images.items()}


def make(config, context: MakeContext = MakeContext()) -> Method:
  built = build(config, context)
  base = built.local.vpgan
  steps = {f"local{'_r1' * r1}{'_aggregate' * agg}":
           functools.partial(local_step, built, r1=r1, aggregate_after=agg)
           for r1 in (False, True) for agg in ((False, True) if built.federation.aggregate else (False,))}
  return Method(
      batch_spec=base.batch_spec, init=functools.partial(init, built), init_frozen=base.init_frozen,
      load_frozen=base.load_frozen, load_pretrained=functools.partial(load_pretrained, built), steps=steps,
      schedule=functools.partial(schedule, built), eval_step=functools.partial(eval_step, built),
      hallucinate=functools.partial(hallucinate, built), batch_axes=CLIENT_BATCH_AXES,
      state_rules=((r"^(params|opt_state|last_round/params)/", ("clients",)),))
