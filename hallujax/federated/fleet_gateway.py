"""python -m hallujax.federated.fleet_gateway: the institutions' only door to a SuperLink (Flower 1.42).

    flower-superlink --host 127.0.0.1 --port 9092 --ssl-ca-certfile ca.crt --ssl-certfile server.pem \\
        --ssl-keyfile server.key --enable-supernode-auth --disable-runtime-dependency-installation
    python -m hallujax.federated.fleet_gateway --listen 0.0.0.0:9091 --superlink 127.0.0.1:9092 \\
        --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key

Why: Flower 1.42 serves its Fleet API (SuperNodes), its Control API (``flwr
supernode register``, ``flwr run``) and its Runtime API on one HTTP port. Its
Control API authentication is an enterprise plugin (``FLWR_OIDC_ENABLED``
exits with "unavailable in this Flower distribution"), and ``--trusted-entities``
on a SuperNode accepts only apps signed through Flower Hub (a FAB sent with
``flwr run DIR`` carries no verification, so every local app would be refused).
What Flower documents for production without those is to keep the Control
API reachable by the operator only. So the SuperLink listens on the operator's
host alone (127.0.0.1), where the operator runs ``flwr`` commands, and this
gateway is what the institutions reach: it terminates TLS with the SuperLink's
certificate and forwards POST requests under ``/v1/fleet/`` — and nothing else —
to the SuperLink. Anyone holding only the CA certificate can reach the
Fleet API, where ``--enable-supernode-auth`` refuses keys the operator did not
register; registering a key or submitting an app answers 403 here.

uvicorn and httpx come with flwr (the project's ``federated`` extra).
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys

FLEET_PREFIX = "/v1/fleet/"
MAX_BODY_BYTES = 2 << 30     # a Fleet message carries a model's parameters: bounded, but large
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
              "content-length", "proxy-authorization", "proxy-authenticate"}


def forwarded(path: str, method: str) -> bool:
  """Whether the gateway passes a request on: Fleet API calls (SuperNodes) only."""
  return method == "POST" and path.startswith(FLEET_PREFIX) and ".." not in path and "//" not in path


def make_app(superlink: str, ca_certfile: str | None, log=print):
  """The gateway's ASGI app forwarding Fleet calls to https://`superlink` (verified with `ca_certfile`)."""
  import httpx
  verify = ssl.create_default_context(cafile=ca_certfile) if ca_certfile else False
  client = httpx.AsyncClient(base_url=f"{'https' if ca_certfile else 'http'}://{superlink}", verify=verify,
                             timeout=httpx.Timeout(600.0))

  async def answer(send, status: int, body: dict) -> None:
    content = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]})
    await send({"type": "http.response.body", "body": content})

  async def app(scope, receive, send):
    if scope["type"] == "lifespan":
      while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
          await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
          await client.aclose()
          await send({"type": "lifespan.shutdown.complete"})
          return
    if scope["type"] != "http":
      return
    path, method = scope["path"], scope["method"]
    client_host = (scope.get("client") or ("?",))[0]
    if not forwarded(path, method):
      log(f"refused {method} {path[:200]!r} from {client_host}: only the Fleet API is served here", flush=True)
      await answer(send, 403, {"error": "Only the Fleet API (SuperNodes) is served here; node registration and "
                                        "app submission are for the operator, on the SuperLink's host."})
      return
    body, more = bytearray(), True
    while more:
      event = await receive()
      if event["type"] == "http.disconnect":
        return
      body += event.get("body", b"")
      more = event.get("more_body", False)
      if len(body) > MAX_BODY_BYTES:
        await answer(send, 413, {"error": f"A Fleet message over {MAX_BODY_BYTES} bytes."})
        return
    headers = [(name, value) for name, value in scope["headers"] if name.decode("latin1").lower() not in HOP_BY_HOP]
    try:
      response = await client.post(path, content=bytes(body), headers=headers)
    except httpx.HTTPError as error:
      await answer(send, 502, {"error": f"The SuperLink did not answer ({type(error).__name__})."})
      return
    content = response.content
    headers = [(name.encode("latin1"), value.encode("latin1")) for name, value in response.headers.items()
               if name.lower() not in HOP_BY_HOP and name.lower() != "content-encoding"]
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": headers + [(b"content-length", str(len(content)).encode())]})
    await send({"type": "http.response.body", "body": content})

  return app


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--listen", required=True, help="HOST:PORT the institutions' SuperNodes connect to")
  parser.add_argument("--superlink", required=True, help="HOST:PORT of the SuperLink (on this host)")
  parser.add_argument("--ssl-certfile", required=True, help="the SuperLink's TLS certificate (served here too)")
  parser.add_argument("--ssl-keyfile", required=True)
  parser.add_argument("--ssl-ca-certfile", required=True, help="the CA that signed it (to verify the SuperLink)")
  arguments = parser.parse_args(argv)
  host, _, port = arguments.listen.rpartition(":")
  if not host or not port.isdigit():
    print(f"error: --listen={arguments.listen!r}; expected HOST:PORT.", file=sys.stderr)
    sys.exit(2)
  import uvicorn
  uvicorn.run(make_app(arguments.superlink, arguments.ssl_ca_certfile), host=host, port=int(port),
              ssl_certfile=arguments.ssl_certfile, ssl_keyfile=arguments.ssl_keyfile, log_level="warning",
              timeout_keep_alive=30)


if __name__ == "__main__":
  main()
