"""VPFL on Flower (``flwr``, the Message API): a ServerApp and a ClientApp for real cross-silo runs.

Each institution runs a SuperNode; its ClientApp runs the same jitted local
update as the one-program method (``hallujax.methods.vpfl.LocalUpdate.client_step``,
P = ``federated.local_steps`` steps of Eq. 7 with Eq. 9 or FedProx) on its own
partition of the data, and sends back only its trained parameters (encoder and
discriminator) and round metadata (partition id, step, mean losses): no image,
no per-example feature leaves a client. The ServerApp deploys Θ^q, waits for the
replies, and aggregates them with the same ``aggregation.fedavg`` (Eq. 8); Θ^{q+1}
is written to ``<workdir>/global_round_<q>.npz`` every round, and a restarted
ServerApp resumes from the last one.

A client that does not reply in a round (its SuperNode died, its ClientApp
failed, or ``round_timeout`` passed) is left out of that round: Θ^{q+1} is the
mean of the clients that replied (each weighted 1/K'), logged with the ids that
were missing; a round with fewer than ``min_replies`` replies stops the run.
Every reply is checked first (``aggregation.aggregate_replies``: arrays of the
global model's count, dtype and shape, finite, a unique partition id in [0, K),
within the norm bound); one that fails is dropped with its reason, printed, and
the round goes on with the others.
The missing client takes the new global model at the next round it joins.

Client state between rounds (``context.state``, on the SuperNode): its optimizer
state (config.federated.optimizer_state "keep" or "reset"; "average" would need the
server to receive the moments, which this app does not send) and how many
batches of its data stream it has read, so its data order is the one-program
simulation's (client k's stream: its partition, shuffled with seed config.seed + k).

Run configuration (``[tool.flwr.app.config]`` of hallujax/federated/flower_app/pyproject.toml,
overridable with ``flwr run ... --run-config``):
  config          a config spec as the commands take it: "/path/configs/vpfl.py:smoke,strategy=vpfl"
  rounds          communication rounds Q
  workdir         where the ServerApp writes the global model each round ("" = not written)
  round-timeout   seconds to wait for the clients' replies in a round
  min-replies     the fewest replies that still make a round
  max-update-ratio
                  a reply whose parameters lie further from Θ^q than this × ‖Θ^q‖ is dropped (default 1.0)
  drop-partition, drop-round
                  fault injection for tests: that partition's ClientApp fails in that round (-1: never)
SuperNode configuration (``--node-config``): partition-id (k, 0-based), num-partitions (K).

Deployment (docs/vpfl.md has the whole walk-through, with TLS and SuperNode authentication); the
SuperLink listens on the operator's host only, the institutions reach its Fleet API alone through
hallujax.federated.fleet_gateway (node registration and app submission stay with the operator):
  flower-superlink --host 127.0.0.1 --port 9092 --ssl-ca-certfile ca.crt --ssl-certfile server.pem \\
      --ssl-keyfile server.key --enable-supernode-auth --disable-runtime-dependency-installation
  python -m hallujax.federated.fleet_gateway --listen 0.0.0.0:8000 --superlink 127.0.0.1:9092 \\
      --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key
  flwr supernode register institution0.pub <connection>          # once per institution, on the server
  flower-supernode --superlink HOST:8000 --root-certificates ca.crt \\
      --auth-supernode-private-key institution0 --node-config "partition-id=0 num-partitions=8"
  flwr run hallujax/federated/flower_app <connection> --run-config 'config="/abs/configs/vpfl.py" rounds=400'
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from hallujax.federated import aggregation

server = ServerApp()
client = ClientApp()


# ----------------------------------------------------------------------------- shared


@functools.lru_cache(maxsize=4)
def run_setup(spec: str):
  """(config, LocalUpdate, abstract params, abstract optimizer state, frozen tree) for a config spec, once per process."""
  from hallujax import run_files
  from hallujax.methods import vpfl
  config = run_files.load_config_file(spec)
  if config.method != "vpfl":
    raise ValueError(f"The Flower apps run VPFL; config {spec} has method {config.method!r}.")
  local = vpfl.local_update(config)
  from hallujax.run_setup import run_keys
  init_key, frozen_key, _ = run_keys(config)   # the keys the one-program run uses
  params_shape = jax.eval_shape(local.init_params, init_key)
  opt_shape = jax.eval_shape(local.init_opt_state, params_shape)
  return config, local, params_shape, opt_shape, (init_key, frozen_key)


def to_record(tree) -> ArrayRecord:
  return ArrayRecord([np.asarray(leaf) for leaf in jax.tree.leaves(jax.device_get(tree))])


def from_record(record: ArrayRecord, like):
  leaves = record.to_numpy_ndarrays()
  structure = jax.tree.structure(like)
  if len(leaves) != structure.num_leaves:
    raise ValueError(f"A message holds {len(leaves)} arrays; the config's networks have {structure.num_leaves}: "
                     f"the ServerApp and the ClientApp run different configs.")
  for leaf, expected in zip(leaves, jax.tree.leaves(like)):
    if leaf.shape != expected.shape:
      raise ValueError(f"A message holds an array of shape {leaf.shape} where the config has {expected.shape}.")
  return jax.tree.unflatten(structure, [jnp.asarray(leaf) for leaf in leaves])


# ----------------------------------------------------------------------------- client


def client_dataset(config, partition_id: int):
  """Client k's training batches, in the order the one-program pipeline gives slot k (a grain MapDataset)."""
  import grain
  from hallujax.data import pipeline
  examples, prepare = pipeline.read_source(config, "train")
  indices = pipeline.client_partitions(config, "train", len(examples))[partition_id]
  dataset = grain.MapDataset.source(pipeline.Subset(examples, indices)).seed(config.seed + partition_id)
  dataset = dataset.shuffle().repeat()
  if prepare is not None:
    dataset = dataset.map(prepare)
  return dataset.batch(int(config.train.batch_size), drop_remainder=True)


@functools.lru_cache(maxsize=4)
def client_setup(spec: str, partition_id: int):
  config, local, params_shape, opt_shape, (_, frozen_key) = run_setup(spec)
  frozen = local.vpgan.load_frozen(jax.jit(local.vpgan.init_frozen)(frozen_key))
  steps = {r1: jax.jit(functools.partial(local.client_step, r1=r1)) for r1 in (False, True)}
  return config, local, params_shape, opt_shape, frozen, steps, client_dataset(config, partition_id)


@client.train()
def train(message: Message, context: Context) -> Message:
  """P local steps from the global parameters in `message`; replies with the trained parameters only."""
  run = context.run_config
  partition_id = int(context.node_config["partition-id"])
  config, local, params_shape, opt_shape, frozen, steps, dataset = client_setup(str(run["config"]), partition_id)
  if int(context.node_config.get("num-partitions", config.data.clients)) != int(config.data.clients):
    raise ValueError(f"--node-config num-partitions={context.node_config['num-partitions']} but the config has "
                     f"data.clients={config.data.clients}.")
  federation = local.federation
  if federation.optimizer_state == "average":
    raise ValueError("config.federated.optimizer_state='average' needs the clients' moments at the server; the "
                     "Flower apps send parameters only. Use 'keep' or 'reset'.")
  round_index = int(message.content["config"]["round"])
  global_params = from_record(message.content["arrays"], params_shape)
  if "optimizer" in context.state:
    opt_state = from_record(context.state["optimizer"], opt_shape)
    if federation.aggregate:
      opt_state = jax.tree.map(lambda leaf: leaf[0], aggregation.optimizer_state_between_rounds(
          jax.tree.map(lambda leaf: leaf[None], opt_state), federation.optimizer_state))
  else:
    opt_state = local.init_opt_state(global_params)
  consumed = int(context.state["progress"]["batches"]) if "progress" in context.state else 0

  params, totals = global_params, {}
  for p in range(federation.local_steps):
    if round_index == int(run.get("drop-round", -1)) and partition_id == int(run.get("drop-partition", -1)) \
        and p == federation.local_steps // 2:
      raise RuntimeError(f"partition {partition_id} drops out in round {round_index} (run config drop-*).")
    step = round_index * federation.local_steps + p
    batch = {name: jnp.asarray(value) for name, value in dataset[consumed].items() if name in local.vpgan.batch_spec}
    params, opt_state, metrics = steps[local.uses_r1(step)](params, opt_state, global_params, frozen, batch)
    consumed += 1
    for name, value in metrics.items():
      totals[name] = totals.get(name, 0.0) + value
  context.state["optimizer"] = to_record(opt_state)
  context.state["progress"] = ConfigRecord({"batches": consumed})
  summary = {name: float(value) / federation.local_steps for name, value in jax.device_get(totals).items()}
  summary.update({"partition-id": partition_id, "num-examples": federation.local_steps * config.train.batch_size})
  return Message(RecordDict({"arrays": to_record(params), "metrics": MetricRecord(summary)}), reply_to=message)


# ----------------------------------------------------------------------------- server


def reply_of(message: Message) -> aggregation.Reply:
  """A client's reply message -> aggregation.Reply (its partition id and arrays, or why they cannot be read);
  never raises, so one malformed reply cannot end the round."""
  sender = f"node {message.metadata.src_node_id}"
  if not message.has_content():
    return aggregation.Reply(sender, problem=f"an error reply ({message.error.reason if message.has_error() else ''})")
  content = message.content
  partition_id = None
  if "metrics" in content.metric_records:
    partition_id = content.metric_records["metrics"].get("partition-id")
  if "arrays" not in content.array_records:
    return aggregation.Reply(sender, partition_id, problem="it holds no 'arrays' record")
  try:
    arrays = content.array_records["arrays"].to_numpy_ndarrays()
  except Exception as error:   # whatever a hostile array record makes numpy raise while decoding it
    return aggregation.Reply(sender, partition_id, problem=f"its arrays do not decode ({type(error).__name__})")
  return aggregation.Reply(sender, partition_id, arrays)


def checkpoint_path(workdir: str, round_index: int) -> str:
  return os.path.join(workdir, f"global_round_{round_index:05d}.npz")


def save_global(workdir: str, round_index: int, params, replied: list[int]) -> str:
  """Θ^{round+1} as one .npz (leaves in tree order) and the round's metadata, written atomically."""
  os.makedirs(workdir, exist_ok=True)
  path = checkpoint_path(workdir, round_index)
  arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(jax.device_get(params)))}
  temporary = path + ".partial.npz"
  np.savez(temporary, metadata=np.array(json.dumps({"round": round_index, "replied": replied})), **arrays)
  os.replace(temporary, path)
  return path


def load_global(path: str, like):
  with np.load(path) as stored:
    leaves = [stored[f"leaf_{i:05d}"] for i in range(jax.tree.structure(like).num_leaves)]
    metadata = json.loads(str(stored["metadata"]))
  return jax.tree.unflatten(jax.tree.structure(like), [jnp.asarray(leaf) for leaf in leaves]), metadata


def last_checkpoint(workdir: str) -> tuple[str, int] | None:
  if not workdir or not os.path.isdir(workdir):
    return None
  rounds = sorted(int(name[len("global_round_"):-len(".npz")]) for name in os.listdir(workdir)
                  if name.startswith("global_round_") and name.endswith(".npz") and "partial" not in name)
  return (checkpoint_path(workdir, rounds[-1]), rounds[-1]) if rounds else None


def initial_global(spec: str):
  """Θ^0 exactly as the one-program method starts (its init and load_pretrained, the trainer's seed split)."""
  from hallujax.methods import vpfl
  config, _, _, _, (init_key, _) = run_setup(spec)
  method = vpfl.make(config)
  state = method.load_pretrained(jax.jit(method.init)(init_key))
  return state.global_params


@server.main()
def main(grid: Grid, context: Context) -> None:
  run = context.run_config
  spec, workdir = str(run["config"]), str(run.get("workdir", ""))
  config, local, params_shape, _, _ = run_setup(spec)
  rounds, timeout = int(run["rounds"]), float(run.get("round-timeout", 3600.0))
  min_replies = int(run.get("min-replies", 1))
  max_update_ratio = float(run.get("max-update-ratio", 1.0))
  found = last_checkpoint(workdir)
  if found:
    global_params, metadata = load_global(found[0], params_shape)
    start = metadata["round"] + 1
    print(f"Resuming from {found[0]} (after round {metadata['round']}).", flush=True)
  else:
    global_params, start = initial_global(spec), 0
  for round_index in range(start, rounds):
    began = time.perf_counter()
    nodes = sorted(grid.get_node_ids())
    messages = [Message(RecordDict({"arrays": to_record(global_params),
                                    "config": ConfigRecord({"round": round_index})}),
                        dst_node_id=node, message_type="train", group_id=str(round_index)) for node in nodes]
    replies = [reply for reply in grid.send_and_receive(messages, timeout=timeout) if reply.has_content()]
    received = [reply_of(reply) for reply in replies]
    aggregated, replied, dropped = aggregation.aggregate_replies(   # Eq. 8 over the replies that pass the checks
        received, global_params, int(config.data.clients), max_update_ratio)
    for sender, reason in dropped:
      print(f"round {round_index}: dropped the reply of {sender}: {reason}.", flush=True)
    if len(replied) < min_replies:
      raise RuntimeError(f"Round {round_index}: {len(replied)} of {len(nodes)} clients replied usably (partitions "
                         f"{replied}); run config min-replies={min_replies}.")
    global_params = aggregated
    dropped_senders = {sender for sender, _ in dropped}
    good = [reply for reply, read in zip(replies, received) if read.sender not in dropped_senders]
    losses = {name: np.mean([float(reply.content["metrics"][name]) for reply in good])
              for name in good[0].content["metrics"] if name.startswith("loss")}
    missing = len(nodes) - len(replies)
    print(f"round {round_index}: {len(replied)}/{len(nodes)} clients (partitions {replied})"
          + (f", {missing} missing: aggregated over the others" if missing else "")
          + (f", {len(dropped)} dropped" if dropped else "")
          + f" | {time.perf_counter() - began:.1f}s | "
          + " ".join(f"{name}={value:.4g}" for name, value in sorted(losses.items())), flush=True)
    if workdir:
      save_global(workdir, round_index, global_params, replied)
