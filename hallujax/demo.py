"""python -m hallujax.demo --workdir RUN [--workdir RUN2 ...] [--exported model.hlo] [--port 8000]

A local web page: upload a photo, pick the model (one per --workdir or
--exported), and see it before (with the faces found) and after, with each
face's box, score and what the method was fed. A small server on Python's
http.server, no web framework; it listens on 127.0.0.1 unless --host says
otherwise. Uploads that are not images, larger than --max_megabytes or wider
or taller than --max_side pixels are refused with one message; the size is
read from the image's header, before any pixel is decoded. Uploads are read
into memory, answered and dropped: nothing is written to disk.

Under hostile clients (``DemoServer``): a POST needs a Content-Length of
digits only (else 400; none: 411; over the limit: 413, before the body is
read); a request line or path that does not parse gets 400; each socket read
waits at most SOCKET_TIMEOUT seconds, and a request whose headers and body
have not all arrived REQUEST_SECONDS after the connection was accepted is cut
(slow or idle clients); at most MAX_CONNECTIONS connections are served at
once (more get 503 at once); the listen backlog is LISTEN_BACKLOG. Photos are
decoded and hallucinated one at a time, so the memory the demo can be made to
hold is bounded by MAX_CONNECTIONS × --max_megabytes of bodies plus one photo
of --max_side² pixels being processed.

Why not a server stack (e.g. uvicorn): it would bring request parsing and a
backlog, but uvicorn 0.49 starts its only timeout (keep-alive) after a first
response, so a client that connects and sends nothing, or trickles its
headers, is held forever; the deadline here would be needed anyway, and the
default install keeps no server dependency.
"""

from __future__ import annotations

import base64
import html
import io
import json
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from absl import flags

from hallujax import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_multi_string("workdir", [], "Training run(s) to offer (each its latest checkpoint).")
  flags.DEFINE_multi_string("exported", [], "Models written by python -m hallujax.export to offer too.")
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (127.0.0.1: this machine only).")
  flags.DEFINE_integer("port", 8000, "Port (0: any free port).")
  flags.DEFINE_float("max_megabytes", 10.0, "Largest upload accepted, in MB (10^6 bytes).")
  flags.DEFINE_integer("max_side", 4096, "Largest photo width or height accepted, in pixels.")
  flags.DEFINE_integer("batch_size", 8, "Faces per compiled batch.")
  flags.DEFINE_bool("degrade", False, "Feed the methods a synthetic degradation of each aligned face.")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hallujax: faces in photos</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
 figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
 img { max-width: 46vw; border: 1px solid #ccc; background: #fff; }
 #message { min-height: 1.4em; font-weight: 600; }
 body[data-state=error] #message { color: #b00020; }
 table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; }
</style></head>
<body data-state="ready">
<h1>Hallucinate faces in a photo</h1>
<form id="form">
 <input type="file" id="file" name="photo" accept="image/*">
 <label>Method <select id="model">__OPTIONS__</select></label>
 <button id="submit" type="submit">Hallucinate</button>
</form>
<p>Photos up to __LIMIT_TEXT__ and __MAX_SIDE__ px a side. The photo is processed in memory and not kept.</p>
<p id="message"></p>
<p id="note" hidden></p>
<div id="result" hidden>
 <figure><img id="before" alt="before"><figcaption>Before: <span id="count"></span></figcaption></figure>
 <figure><img id="after" alt="after"><figcaption>After: <span id="method"></span></figcaption></figure>
 <table id="faces"><thead><tr><th>#</th><th>box (left, top, right, bottom)</th><th>score</th>
 <th>method input</th></tr></thead><tbody></tbody></table>
</div>
<script>
const LIMIT = __LIMIT__;
const form = document.getElementById("form"), message = document.getElementById("message");
function show(state, text) { document.body.dataset.state = state; message.textContent = text; }
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = document.getElementById("file").files[0];
  document.getElementById("result").hidden = true;
  if (!file) { show("error", "Choose a photo first."); return; }
  if (file.size > LIMIT) { show("error", __TOO_LARGE_JS__); return; }
  show("working", "Detecting and hallucinating faces ...");
  let response, answer;
  try {
    response = await fetch("/hallucinate?model=" + document.getElementById("model").value,
                           {method: "POST", body: file, headers: {"X-Filename": encodeURIComponent(file.name)}});
    answer = await response.json();
  } catch (error) { show("error", "The server did not answer: " + error); return; }
  if (!response.ok) { show("error", answer.error); return; }
  document.getElementById("before").src = answer.before;
  document.getElementById("after").src = answer.after;
  document.getElementById("count").textContent = answer.faces.length + " face(s) found";
  document.getElementById("method").textContent = answer.method;
  const body = document.querySelector("#faces tbody");
  body.replaceChildren(...answer.faces.map((face) => {
    const row = document.createElement("tr");
    for (const value of [face.index, face.box.join(", "), face.score, face.input]) {
      const cell = document.createElement("td"); cell.textContent = value; row.appendChild(cell);
    }
    row.dataset.pasteBox = JSON.stringify(face.paste_box);
    return row;
  }));
  const note = document.getElementById("note");
  note.textContent = answer.note || "";
  note.hidden = !answer.note;
  document.getElementById("result").hidden = false;
  show("done", answer.faces.length ? `Done in ${answer.seconds} s.` : "No face found: the photo is unchanged.");
});
</script></body></html>
"""


SOCKET_TIMEOUT = 10.0     # seconds one read from a client may wait
REQUEST_SECONDS = 60.0    # seconds from accepting a connection to having its whole request (headers and body)
MAX_CONNECTIONS = 16      # connections served at once; more are answered 503 without reading them
LISTEN_BACKLOG = 128      # connections the kernel queues before accept (Python's default is 5)


def too_large_message(size: int, limit: int) -> str:
  return f"The upload is {size / 1e6:.1f} MB; the limit is {limit / 1e6:g} MB."


def page(names: list[str], limit: int, max_side: int) -> bytes:
  options = "".join(f'<option value="{i}">{html.escape(name)}</option>' for i, name in enumerate(names))
  too_large = ("`The upload is ${(file.size / 1e6).toFixed(1)} MB; the limit is " + f"{limit / 1e6:g}" + " MB.`")
  text = (PAGE.replace("__OPTIONS__", options).replace("__LIMIT__", str(limit))
          .replace("__LIMIT_TEXT__", f"{limit / 1e6:g} MB").replace("__MAX_SIDE__", str(max_side))
          .replace("__TOO_LARGE_JS__", too_large))
  return text.encode()


def png_data_url(image) -> str:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def with_boxes(photo, faces):
  """The photo with each face's detector box and landmarks drawn."""
  from PIL import Image, ImageDraw
  image = Image.fromarray(photo)
  draw = ImageDraw.Draw(image)
  width = max(2, round(max(photo.shape[:2]) / 300))
  for face in faces:
    draw.rectangle(face["box"], outline=(0, 255, 0), width=width)
    for x, y in face["landmarks"]:
      draw.ellipse((x - width, y - width, x + width, y + width), fill=(255, 0, 0))
    draw.text((face["box"][0] + 3, face["box"][1] + 3), str(face["index"]), fill=(0, 255, 0))
  import numpy as np
  return np.asarray(image)


def header_size(data: bytes, name: str) -> tuple[int, int]:
  """(width, height) an image file's header claims, read without decoding a pixel; PhotoError if unreadable."""
  from PIL import Image, UnidentifiedImageError
  from hallujax import photos
  if not data:
    raise photos.PhotoError(f"{name}: empty file")
  try:
    with Image.open(io.BytesIO(data)) as image:   # Image.open reads the header only
      return image.size
  except UnidentifiedImageError:
    raise photos.PhotoError(f"{name}: not an image file PIL can read") from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
    raise photos.PhotoError(f"{name}: {str(error) or type(error).__name__}") from None


def content_length(value: str | None, limit: int) -> tuple[int, int | None, str]:
  """A POST's Content-Length header -> (HTTP status, length, message): (200, n, "") when acceptable."""
  if value is None:
    return 411, None, "Send the photo with a Content-Length header."
  value = value.strip()
  if not (value.isascii() and value.isdigit()) or len(value) > 18:
    return 400, None, f"Content-Length {value[:40]!r} is not a byte count."
  if int(value) > limit:
    return 413, int(value), too_large_message(int(value), limit)
  return 200, int(value), ""


BUSY_BODY = json.dumps({"error": "The demo is busy; try again in a moment."}).encode()
BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Retry-After: 5\r\nContent-Length: " + str(len(BUSY_BODY)).encode() + b"\r\n\r\n" + BUSY_BODY)


class DemoServer(ThreadingHTTPServer):
  """ThreadingHTTPServer with a bound on connections served at once, a listen backlog, and a deadline by
  which each connection's request must have arrived (see the module docstring)."""

  daemon_threads = True
  request_queue_size = LISTEN_BACKLOG

  def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS,
               request_seconds: float = REQUEST_SECONDS):
    self.slots = threading.BoundedSemaphore(max_connections)
    self.request_seconds = request_seconds
    self.deadlines: dict[socket.socket, float] = {}   # connection -> when its request must have arrived
    self.deadlines_lock = threading.Lock()
    super().__init__(address, handler)

  def process_request(self, request, client_address):
    if not self.slots.acquire(blocking=False):   # full: answer at once, from the accepting thread
      try:
        request.settimeout(1.0)
        request.sendall(BUSY)
      except OSError:
        pass
      self.shutdown_request(request)
      return
    with self.deadlines_lock:
      self.deadlines[request] = time.monotonic() + self.request_seconds
    try:
      super().process_request(request, client_address)
    except BaseException:
      self.request_arrived(request)
      self.slots.release()
      raise

  def process_request_thread(self, request, client_address):
    try:
      super().process_request_thread(request, client_address)
    finally:
      self.request_arrived(request)
      self.slots.release()

  def request_arrived(self, request) -> None:
    """The handler has read the whole request: the deadline no longer applies (processing may take long)."""
    with self.deadlines_lock:
      self.deadlines.pop(request, None)

  def handle_error(self, request, client_address):
    """One line, not a traceback, for a connection that failed (reset, cut at its deadline, timed out)."""
    error = sys.exc_info()[1]
    sys.stderr.write(f"{client_address[0]} connection dropped: {type(error).__name__}: {str(error)[:200]}\n")

  def service_actions(self):
    """Called by serve_forever about twice a second: cuts connections whose request is overdue."""
    now = time.monotonic()
    with self.deadlines_lock:
      late = [request for request, deadline in self.deadlines.items() if deadline < now]
      for request in late:
        del self.deadlines[request]
    for request in late:
      try:
        request.shutdown(socket.SHUT_RDWR)   # the handler's blocked read returns; its thread ends
      except OSError:
        pass


class Demo:
  """The models, the detector and the work one request does; requests run one at a time."""

  def __init__(self, models, detector, options, max_bytes: int, max_side: int):
    self.models, self.detector, self.options = models, detector, options
    self.max_bytes, self.max_side = max_bytes, max_side
    self.lock = threading.Lock()

  def hallucinate(self, data: bytes, name: str, model_index: int) -> dict:
    """The JSON answer for one upload (raises PhotoError / ValueError with the message for the user)."""
    from hallujax import hallucinate, photos
    from hallujax.data import face_detection
    if not 0 <= model_index < len(self.models):
      raise ValueError(f"No model {model_index}; choose one of the {len(self.models)} offered.")
    width, height = header_size(data, name)
    if max(width, height) > self.max_side:   # from the header: a small file may claim billions of pixels
      raise ValueError(f"The photo is {width}×{height} px; the limit is {self.max_side} px a side.")
    model = self.models[model_index]
    start = time.perf_counter()
    with self.lock:   # one photo decoded and processed at a time: the memory of one photo, not of every upload
      photo = face_detection.decode_photo(data, name)
      hallucinator = photos.Hallucinator(model, self.detector, self.options)
      result, = hallucinator.feed(name, photo) + hallucinator.finish()
    output = result.output if result.output is not None else photo
    answer = {"method": model.name, "width": int(photo.shape[1]), "height": int(photo.shape[0]),
              "faces": result.faces, "before": png_data_url(with_boxes(photo, result.faces)),
              "after": png_data_url(output), "seconds": round(time.perf_counter() - start, 2)}
    note = hallucinate.face_world_note(model)
    if note:   # a face-world model's faces are a renderer's: said with every answer, where the user looks
      answer["note"] = note
    del photo, result, output, data
    return answer


def handler_for(demo: Demo, timeout: float = SOCKET_TIMEOUT):
  from hallujax import photos

  class Handler(BaseHTTPRequestHandler):
    server_version = "hallujax-demo"
    timeout = None   # set below: StreamRequestHandler applies it to every read and write of the connection
    default_request_version = "HTTP/1.0"   # errors for a request line that does not parse carry a status line

    def log_message(self, format, *args):   # one short line per request, no upload names
      # A request line that did not parse has no command or path yet (reading them raised, and no answer left).
      command, path = getattr(self, "command", None) or "-", (getattr(self, "path", None) or "-").split("?")[0]
      status = args[1] if len(args) > 1 and format.startswith('"%s"') else format % args
      sys.stderr.write(f"{self.address_string()} {command} {path[:200]!r} {str(status)[:200]!r}\n")

    def send(self, status: int, body: bytes, content_type: str) -> None:
      self.send_response(status)
      self.send_header("Content-Type", content_type)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("Cache-Control", "no-store")
      self.end_headers()
      self.wfile.write(body)

    def send_json(self, status: int, value: dict) -> None:
      self.send(status, json.dumps(value).encode(), "application/json")

    def do_GET(self):
      self.server.request_arrived(self.connection)
      if self.path.split("?")[0] in ("/", "/index.html"):
        self.send(200, page([m.name for m in demo.models], demo.max_bytes, demo.max_side), "text/html; charset=utf-8")
      else:
        self.send_json(404, {"error": f"No page {self.path[:200]}."})

    def do_POST(self):
      try:
        url = urllib.parse.urlparse(self.path)
      except ValueError:   # e.g. "//[" (an unclosed IPv6 host)
        self.send_json(400, {"error": f"The request's path {self.path[:200]!r} is not a URL path."})
        return
      if url.path != "/hallucinate":
        self.send_json(404, {"error": f"No page {url.path[:200]}."})
        return
      if self.headers.get("Transfer-Encoding"):
        self.close_connection = True
        self.send_json(411, {"error": "Send the photo with a Content-Length header, not chunked."})
        return
      status, length, message = content_length(self.headers.get("Content-Length"), demo.max_bytes)
      if status != 200:
        self.close_connection = True
        self.send_json(status, {"error": message})
        if status == 413:   # answered first: a client that never sends the body still gets it
          self.discard(length)
        return
      data = self.rfile.read(length)
      if len(data) < length:   # the client hung up, or the deadline cut the connection: nobody to answer
        self.close_connection = True
        return
      self.server.request_arrived(self.connection)
      name = urllib.parse.unquote(self.headers.get("X-Filename") or "upload")
      try:
        model_index = int(urllib.parse.parse_qs(url.query).get("model", ["0"])[0])
        answer = demo.hallucinate(data, name, model_index)
      except photos.PhotoError as error:
        self.send_json(400, {"error": f"The upload is not an image this page can read ({error}); send a PNG, "
                                      f"JPEG, BMP, GIF, TIFF or WebP photo."})
        return
      except ValueError as error:
        self.send_json(400, {"error": str(error)})
        return
      finally:
        del data
      self.send_json(200, answer)

    def discard(self, length: int) -> None:
      """Reads a refused body away after the answer (closing with unread data would reset the connection
      before the browser reads the answer), up to 4× the limit and until the deadline; beyond, hangs up."""
      if length > 4 * demo.max_bytes:
        return
      try:
        while length > 0:
          chunk = self.rfile.read(min(length, 1 << 20))
          if not chunk:
            return
          length -= len(chunk)
      except OSError:   # the socket timeout, or the deadline cut it
        return

  Handler.timeout = timeout
  return Handler


def make_server(models, detector, options, host: str = "127.0.0.1", port: int = 0, max_bytes: int = 10_000_000,
                max_side: int = 4096, timeout: float = SOCKET_TIMEOUT, request_seconds: float = REQUEST_SECONDS,
                max_connections: int = MAX_CONNECTIONS) -> DemoServer:
  """The demo's HTTP server (not yet serving: call serve_forever, e.g. in a thread)."""
  demo = Demo(models, detector, options, max_bytes, max_side)
  return DemoServer((host, port), handler_for(demo, timeout), max_connections, request_seconds)


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir and not FLAGS.exported:
    raise cli.UserError("Give at least one --workdir (a training run) or --exported (a model.hlo).")
  if FLAGS.max_megabytes <= 0 or FLAGS.max_side <= 0:
    raise cli.UserError("--max_megabytes and --max_side must be positive.")
  from hallujax import exported, hallucinate, methods, photos
  from hallujax.data import face_detection
  for workdir in FLAGS.workdir:
    methods.check_run_directory(workdir)   # config.json is data: it may name only registered methods
  detector = face_detection.Detector()
  models = [hallucinate.load_model(workdir, None, None, batch_size=FLAGS.batch_size) for workdir in FLAGS.workdir]
  models += [exported.load(path, FLAGS.batch_size) for path in FLAGS.exported]
  options = photos.Options(input="degrade" if FLAGS.degrade else "real", upscale=1)
  try:
    server = make_server(models, detector, options, FLAGS.host, FLAGS.port, int(FLAGS.max_megabytes * 1e6),
                         FLAGS.max_side)
  except OSError as error:
    raise cli.UserError(f"Cannot listen on {FLAGS.host}:{FLAGS.port} ({error.strerror or error}); "
                        f"choose another --port.") from None
  for note in filter(None, map(hallucinate.face_world_note, models)):
    print(f"note: {note}")
  host, port = server.server_address[:2]
  print(f"Serving {len(models)} model(s) on http://{host}:{port}/ (Ctrl-C to stop).", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    print("Stopped.")
  finally:
    server.server_close()


if __name__ == "__main__":
  define_flags()
  cli.run(main)
