"""python -m hallujax.demo --workdir RUN [--workdir RUN2 ...] [--exported model.hlo] [--port 8000]

A local web page: upload a photo, pick the model (one per --workdir or
--exported), and see it before (with the faces found) and after, with each
face's box, score and what the method was fed. A small server on Python's
http.server, no web framework; it listens on 127.0.0.1 unless --host says
otherwise. Uploads that are not images, larger than --max_megabytes or wider
or taller than --max_side pixels are refused with one message. Uploads are
read into memory, answered and dropped: nothing is written to disk.
"""

from __future__ import annotations

import base64
import html
import io
import json
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
  document.getElementById("result").hidden = false;
  show("done", answer.faces.length ? `Done in ${answer.seconds} s.` : "No face found: the photo is unchanged.");
});
</script></body></html>
"""


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


class Demo:
  """The models, the detector and the work one request does; requests run one at a time."""

  def __init__(self, models, detector, options, max_bytes: int, max_side: int):
    self.models, self.detector, self.options = models, detector, options
    self.max_bytes, self.max_side = max_bytes, max_side
    self.lock = threading.Lock()

  def hallucinate(self, data: bytes, name: str, model_index: int) -> dict:
    """The JSON answer for one upload (raises PhotoError / ValueError with the message for the user)."""
    from hallujax import photos
    photo = photos.decode_photo(data, name)
    if max(photo.shape[:2]) > self.max_side:
      raise ValueError(f"The photo is {photo.shape[1]}×{photo.shape[0]} px; the limit is {self.max_side} px a side.")
    if not 0 <= model_index < len(self.models):
      raise ValueError(f"No model {model_index}; choose one of the {len(self.models)} offered.")
    model = self.models[model_index]
    start = time.perf_counter()
    with self.lock:
      hallucinator = photos.Hallucinator(model, self.detector, self.options)
      result, = hallucinator.feed(name, photo) + hallucinator.finish()
    output = result.output if result.output is not None else photo
    answer = {"method": model.name, "width": int(photo.shape[1]), "height": int(photo.shape[0]),
              "faces": result.faces, "before": png_data_url(with_boxes(photo, result.faces)),
              "after": png_data_url(output), "seconds": round(time.perf_counter() - start, 2)}
    del photo, result, output, data
    return answer


def handler_for(demo: Demo):
  from hallujax import photos

  class Handler(BaseHTTPRequestHandler):
    server_version = "hallujax-demo"

    def log_message(self, format, *args):   # one short line per request, no upload names
      sys.stderr.write(f"{self.address_string()} {self.command} {self.path.split('?')[0]} {args[1] if len(args) > 1 else ''}\n")

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
      if self.path.split("?")[0] in ("/", "/index.html"):
        self.send(200, page([m.name for m in demo.models], demo.max_bytes, demo.max_side), "text/html; charset=utf-8")
      else:
        self.send_json(404, {"error": f"No page {self.path}."})

    def do_POST(self):
      url = urllib.parse.urlparse(self.path)
      if url.path != "/hallucinate":
        self.send_json(404, {"error": f"No page {url.path}."})
        return
      length = int(self.headers.get("Content-Length") or 0)
      if length > demo.max_bytes:
        self.discard(length)
        self.send_json(413, {"error": too_large_message(length, demo.max_bytes)})
        return
      data = self.rfile.read(length)
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
      """Reads a refused body away (so the browser sees the answer), up to 4× the limit; beyond, hangs up."""
      if length > 4 * demo.max_bytes:
        self.close_connection = True
        return
      while length > 0:
        length -= len(self.rfile.read(min(length, 1 << 20)) or b"\0" * length)

  return Handler


def make_server(models, detector, options, host: str = "127.0.0.1", port: int = 0, max_bytes: int = 10_000_000,
                max_side: int = 4096) -> ThreadingHTTPServer:
  """The demo's HTTP server (not yet serving: call serve_forever, e.g. in a thread)."""
  demo = Demo(models, detector, options, max_bytes, max_side)
  server = ThreadingHTTPServer((host, port), handler_for(demo))
  server.daemon_threads = True
  return server


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir and not FLAGS.exported:
    raise cli.UserError("Give at least one --workdir (a training run) or --exported (a model.hlo).")
  if FLAGS.max_megabytes <= 0 or FLAGS.max_side <= 0:
    raise cli.UserError("--max_megabytes and --max_side must be positive.")
  from hallujax import exported, hallucinate, methods, photos
  for workdir in FLAGS.workdir:
    methods.check_run_directory(workdir)   # config.json is data: it may name only registered methods
  detector = photos.Detector()
  models = [hallucinate.load_model(workdir, None, None, batch_size=FLAGS.batch_size) for workdir in FLAGS.workdir]
  models += [exported.load(path, FLAGS.batch_size) for path in FLAGS.exported]
  options = photos.Options(input="degrade" if FLAGS.degrade else "real", upscale=1)
  try:
    server = make_server(models, detector, options, FLAGS.host, FLAGS.port, int(FLAGS.max_megabytes * 1e6),
                         FLAGS.max_side)
  except OSError as error:
    raise cli.UserError(f"Cannot listen on {FLAGS.host}:{FLAGS.port} ({error.strerror or error}); "
                        f"choose another --port.") from None
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
