"""VPFL on a real Flower deployment on 127.0.0.1: TLS, SuperNode authentication, 2 clients, a dropout.

One SuperLink (TLS with a throwaway CA made here, SuperNode authentication on),
two registered SuperNodes (partitions 0 and 1) and one SuperNode whose key was
never registered, which the SuperLink must refuse. Three rounds of the tiny VPFL
model (P = 2): after two rounds the ServerApp's global model equals the
one-program simulation's (vmapped clients, same data order); in the third round
partition 1's ClientApp fails mid-round and the round completes on partition 0.
"""

import datetime
import ipaddress
import os
import pathlib
import socket
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flwr")

from cryptography import x509   # noqa: E402  (flwr's dependency)
from cryptography.hazmat.primitives import hashes, serialization   # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec   # noqa: E402
from cryptography.x509.oid import NameOID   # noqa: E402

from hallujax import run_files, run_setup   # noqa: E402
from hallujax.data import pipeline   # noqa: E402
from hallujax.federated import flower   # noqa: E402
from hallujax.methods import vpfl   # noqa: E402

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
APP = REPOSITORY / "hallujax" / "federated" / "flower_app"
BIN = pathlib.Path(sys.executable).parent
SPEC = f"{REPOSITORY / 'configs' / 'vpfl.py'}:tiny,loss.r1_every=0"


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def throwaway_credentials(directory: pathlib.Path) -> None:
  """A CA, the SuperLink's certificate for 127.0.0.1, and SSH-format EC keys for three SuperNodes."""
  now = datetime.datetime.now(datetime.timezone.utc)
  name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

  def certificate(subject, issuer, public_key, signing_key, extensions):
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=2)))
    for extension, critical in extensions:
      builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())

  ca_key, server_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
  ca = certificate(name("hallujax test CA"), name("hallujax test CA"), ca_key.public_key(), ca_key,
                   [(x509.BasicConstraints(ca=True, path_length=None), True)])
  server = certificate(name("127.0.0.1"), ca.subject, server_key.public_key(), ca_key,
                       [(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                      x509.DNSName("localhost")]), False)])
  pem = serialization.Encoding.PEM
  (directory / "ca.crt").write_bytes(ca.public_bytes(pem))
  (directory / "server.pem").write_bytes(server.public_bytes(pem))
  (directory / "server.key").write_bytes(server_key.private_bytes(
      pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
  for node in ("institution0", "institution1", "intruder"):
    key = ec.generate_private_key(ec.SECP384R1())
    (directory / node).write_bytes(key.private_bytes(pem, serialization.PrivateFormat.OpenSSH,
                                                     serialization.NoEncryption()))
    (directory / f"{node}.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))


class Processes:
  def __init__(self, directory: pathlib.Path, environment: dict):
    self.directory, self.environment, self.running = directory, environment, []

  def start(self, name: str, *command: str) -> subprocess.Popen:
    log = open(self.directory / f"{name}.log", "w")
    process = subprocess.Popen([str(BIN / command[0]), *command[1:]], stdout=log, stderr=subprocess.STDOUT,
                               env=self.environment, cwd=self.directory)
    self.running.append(process)
    return process

  def log(self, name: str) -> str:
    return (self.directory / f"{name}.log").read_text()

  def stop(self) -> None:
    for process in reversed(self.running):
      if process.poll() is None:
        process.terminate()
        try:
          process.wait(timeout=20)
        except subprocess.TimeoutExpired:
          process.kill()


def one_program_global_after(steps: int):
  """The one-program simulation: vpfl.make's vmapped steps on the pipeline's (K, B, ...) batches."""
  config = run_files.load_config_file(SPEC)
  method = vpfl.make(config)
  init_key, frozen_key, _ = run_setup.run_keys(config)
  state = jax.jit(method.init)(init_key)
  frozen = jax.jit(method.init_frozen)(frozen_key)
  programs = {name: jax.jit(step) for name, step in method.steps.items()}
  batches = iter(pipeline.train_dataset(config))
  for step in range(steps):
    batch = {name: jnp.asarray(value) for name, value in next(batches).items() if name in method.batch_spec}
    state, _ = programs[method.schedule(step)](state, frozen, batch, jax.random.key(0))
  return config, state.global_params


def wait_for_port(port: int, seconds: float = 120.0) -> None:
  """Until something accepts connections on 127.0.0.1:`port` (a server process has started)."""
  deadline = time.monotonic() + seconds
  while True:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=2).close()
      return
    except OSError:
      if time.monotonic() > deadline:
        raise
      time.sleep(0.5)


@pytest.mark.slow
def test_flower_deployment_with_tls_and_authentication_matches_the_one_program_run(tmp_path):
  """The locked-down deployment: the SuperLink on the operator's host (127.0.0.1) and the institutions' door,
  hallujax.federated.fleet_gateway, forwarding the Fleet API only. An outsider holding only the CA certificate
  can neither register a key nor submit an app through that door, nor join with an unregistered key."""
  throwaway_credentials(tmp_path)
  port, public_port = free_port(), free_port()
  home = tmp_path / "flwr_home"
  home.mkdir()
  connection = 'address = "127.0.0.1:{}"\nroot-certificates = "' + str(tmp_path / "ca.crt") + '"\n'
  (home / "config.toml").write_text(f'[superlink]\ndefault = "test"\n\n[superlink.test]\n{connection.format(port)}\n'
                                    f'[superlink.outside]\n{connection.format(public_port)}')
  environment = dict(os.environ, FLWR_HOME=str(home),
                     PYTHONPATH=os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]))
  processes = Processes(tmp_path, environment)
  flwr = lambda *arguments, timeout=120: subprocess.run([str(BIN / "flwr"), *arguments], env=environment,
                                                       cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
  try:
    processes.start("superlink", "flower-superlink", "--host", "127.0.0.1", "--port", str(port),
                    "--ssl-ca-certfile", "ca.crt", "--ssl-certfile", "server.pem", "--ssl-keyfile", "server.key",
                    "--enable-supernode-auth", "--disable-runtime-dependency-installation")
    processes.start("gateway", "python", "-m", "hallujax.federated.fleet_gateway", "--listen",
                    f"127.0.0.1:{public_port}", "--superlink", f"127.0.0.1:{port}", "--ssl-ca-certfile", "ca.crt",
                    "--ssl-certfile", "server.pem", "--ssl-keyfile", "server.key")
    wait_for_port(port)
    wait_for_port(public_port)
    # The outsider, through the institutions' door with the CA certificate: each step refused.
    outsider_register = flwr("supernode", "register", "intruder.pub", "outside")
    assert outsider_register.returncode != 0 and "registered successfully" not in outsider_register.stdout
    outsider_run = flwr("run", str(APP), "outside", "--run-config", f'config="{SPEC}" rounds=1')
    assert outsider_run.returncode != 0, outsider_run.stdout + outsider_run.stderr
    refused = processes.log("gateway")
    assert "refused POST '/v1/control/" in refused and "start" in refused.split("refused POST '/v1/control/")[-1]
    for institution in ("institution0", "institution1"):   # the operator, on the SuperLink's host
      registered = flwr("supernode", "register", f"{institution}.pub", "test")
      assert "registered successfully" in registered.stdout, registered.stdout + registered.stderr
    for k in (0, 1):
      processes.start(f"supernode{k}", "flower-supernode", "--superlink", f"127.0.0.1:{public_port}",
                      "--root-certificates", "ca.crt", "--auth-supernode-private-key", f"institution{k}",
                      "--port", str(free_port()), "--node-config", f"partition-id={k} num-partitions=2")
    intruder = processes.start("intruder", "flower-supernode", "--superlink", f"127.0.0.1:{public_port}",
                               "--root-certificates", "ca.crt", "--auth-supernode-private-key", "intruder",
                               "--port", str(free_port()), "--max-retries", "1", "--max-wait-time", "30")
    assert intruder.wait(timeout=120) != 0
    assert "Failed to activate SuperNode" in processes.log("intruder")

    workdir = tmp_path / "server"
    run = flwr("run", str(APP), "test", "--stream", "--run-config",
               f'config="{SPEC}" rounds=3 workdir="{workdir}" round-timeout=600.0 drop-partition=1 drop-round=2',
               timeout=900)
    output = run.stdout + run.stderr
    assert "round 1: 2/2 clients" in output, output[-4000:]
    assert "round 2: 1/2 clients (partitions [0]), 1 missing: aggregated over the others" in output, output[-4000:]
  finally:
    processes.stop()

  config, expected = one_program_global_after(steps=2 * config_local_steps())
  after_two_rounds, metadata = flower.load_global(str(flower.checkpoint_path(str(workdir), 1)), expected)
  assert metadata == {"round": 1, "replied": [0, 1]}
  chex.assert_trees_all_close(after_two_rounds, expected, rtol=1e-4, atol=1e-5)
  after_dropout, metadata = flower.load_global(str(flower.checkpoint_path(str(workdir), 2)), expected)
  assert metadata == {"round": 2, "replied": [0]}
  assert not np.allclose(np.asarray(after_dropout["encoder"]["stem"]["kernel"]),
                         np.asarray(after_two_rounds["encoder"]["stem"]["kernel"]))


def config_local_steps() -> int:
  return int(run_files.load_config_file(SPEC).federated.local_steps)


@pytest.mark.parametrize("method, path, passes", [
    ("POST", "/v1/fleet/pull-messages", True), ("POST", "/v1/fleet/register-node", True),
    ("POST", "/v1/control/register-node", False), ("POST", "/v1/control/start-run", False),
    ("POST", "/v1/runtime/pull-task-input", False), ("GET", "/v1/fleet/get-run", False),
    ("POST", "/v1/fleet/../control/start-run", False), ("POST", "/v1/fleet//x", False), ("POST", "/docs", False),
])
def test_the_fleet_gateway_passes_the_fleet_api_only(method, path, passes):
  import asyncio
  import httpx
  from hallujax.federated import fleet_gateway
  assert fleet_gateway.forwarded(path, method) == passes
  if not passes:   # refused without reaching any SuperLink (none listens on port 9 here)
    app = fleet_gateway.make_app("127.0.0.1:9", None, log=lambda *a, **k: None)

    async def ask():
      async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        return await client.request(method, path, content=b"x")
    assert asyncio.run(ask()).status_code == 403
