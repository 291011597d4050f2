"""The web demo, driven in headless Chromium: upload a real photo, get it back changed inside the face only."""

import base64
import io
import json
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from hallujax import demo, hallucinate, photos
from hallujax.data import face_detection
from tests.test_hallucinate import needs_dlib, trained_run

skimage_data = pytest.importorskip("skimage.data")
LIMIT = 2_000_000     # bytes: above the astronaut PNG (~0.5 MB)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  needs_dlib()
  return hallucinate.load_model(trained_run(tmp_path_factory.mktemp("tiny")), None, None, batch_size=2)


@pytest.fixture(scope="module")
def server(model):
  server = demo.make_server([model], face_detection.Detector(), photos.Options(upscale=1), max_bytes=LIMIT)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield server
  server.shutdown()
  server.server_close()


def url_of(server) -> str:
  host, port = server.server_address[:2]
  return f"http://{host}:{port}"


def post(server, data: bytes, name: str = "photo.png"):
  request = urllib.request.Request(url_of(server) + "/hallucinate?model=0", data=data, method="POST",
                                   headers={"X-Filename": name, "Content-Type": "application/octet-stream"})
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as error:
    return error.code, json.loads(error.read())


def png_bytes(image) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def decode_data_url(url: str) -> np.ndarray:
  assert url.startswith("data:image/png;base64,")
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def test_listens_on_localhost_refuses_non_images_and_large_uploads_and_keeps_nothing(server, tmp_path, monkeypatch):
  assert server.server_address[0] == "127.0.0.1"
  status, answer = post(server, b"%PDF-1.4 not a photo", "notes.pdf")
  assert status == 400 and answer["error"].startswith("The upload is not an image") and "\n" not in answer["error"]
  status, answer = post(server, b"\0" * (LIMIT + 1))
  assert status == 413 and answer["error"] == "The upload is 2.0 MB; the limit is 2 MB."
  # An upload is answered from memory: nothing appears in the working or the temporary directory.
  work, temporary = tmp_path / "cwd", tmp_path / "tmp"
  work.mkdir()
  temporary.mkdir()
  monkeypatch.chdir(work)
  monkeypatch.setattr(tempfile, "tempdir", str(temporary))
  status, answer = post(server, png_bytes(skimage_data.astronaut()))
  assert status == 200 and len(answer["faces"]) == 1
  assert os.listdir(work) == [] and os.listdir(temporary) == []


def test_a_face_world_model_says_so_in_every_answer(model, monkeypatch):
  """The page shows the answer's note: a renderer's faces are not to be taken for a real person's."""
  photo = png_bytes(skimage_data.astronaut())
  page_demo = demo.Demo([model], face_detection.Detector(), photos.Options(upscale=1), LIMIT, 4096)
  monkeypatch.setattr(model, "data_source", "celeba_folder")
  assert "note" not in page_demo.hallucinate(photo, "astronaut.png", 0)
  monkeypatch.setattr(model, "data_source", "faceworld")
  note = page_demo.hallucinate(photo, "astronaut.png", 0)["note"]
  assert "trained only on the synthetic face world" in note and "--config.data.source=celeba_folder" in note
  assert 'id="note"' in demo.page(["run"], LIMIT, 4096).decode()


def chromium_driver():
  webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (pip install selenium)")
  binary = shutil.which("chromium") or shutil.which("chromium-browser")
  driver_path = shutil.which("chromedriver")
  if not binary or not driver_path:
    pytest.skip("No browser installed: the demo's browser test needs Debian's chromium and chromium-driver "
                "(apt-get install -y chromium chromium-driver).")
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = binary
  for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                   "--window-size=1400,1000"):
    options.add_argument(argument)
  return webdriver.Chrome(service=Service(driver_path), options=options)


def submit_and_wait(driver, path) -> str:
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  driver.find_element(By.ID, "file").send_keys(str(path))
  driver.find_element(By.ID, "submit").click()
  WebDriverWait(driver, 180).until(
      lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"))
  return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def test_browser_upload_of_a_real_photo_changes_it_inside_the_face_only(server, tmp_path):
  from selenium.webdriver.common.by import By
  driver = chromium_driver()
  try:
    driver.get(url_of(server) + "/")
    astronaut = skimage_data.astronaut()
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    assert submit_and_wait(driver, path) == "done", driver.find_element(By.ID, "message").text
    after = decode_data_url(driver.find_element(By.ID, "after").get_attribute("src"))
    assert after.shape == astronaut.shape
    rows = driver.find_elements(By.CSS_SELECTOR, "#faces tbody tr")
    assert len(rows) == 1 and "1 face(s) found" in driver.find_element(By.ID, "count").text
    left, top, right, bottom = (int(round(v)) for v in json.loads(rows[0].get_attribute("data-paste-box")))
    inside = np.zeros(astronaut.shape[:2], bool)
    inside[top:bottom, left:right] = True
    assert np.array_equal(after[~inside], astronaut[~inside])
    assert np.abs(after[inside].astype(int) - astronaut[inside]).mean() > 2
    box = [float(v) for v in rows[0].find_elements(By.TAG_NAME, "td")[1].text.split(",")]
    assert left < box[2] and box[0] < right and top < box[3] and box[1] < bottom   # the face's own box

    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    assert submit_and_wait(driver, text) == "error"
    assert driver.find_element(By.ID, "message").text.startswith("The upload is not an image")
    large = tmp_path / "large.png"
    large.write_bytes(b"\0" * (LIMIT + 1))
    assert submit_and_wait(driver, large) == "error"
    assert driver.find_element(By.ID, "message").text == "The upload is 2.0 MB; the limit is 2 MB."
  finally:
    driver.quit()


# ----- hostile clients: a light server with a stand-in model (no request here reaches the model)

import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StandIn:
  name = "stand-in (never runs)"


@pytest.fixture
def light_server():
  server = demo.make_server([StandIn()], None, None, max_bytes=LIMIT, timeout=2.0, request_seconds=3.0,
                            max_connections=4)
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
  thread.start()
  yield server
  server.shutdown()
  server.server_close()


def exchange(address, request: bytes, wait: float = 15.0) -> bytes:
  """Sends `request` (keeping the connection open) and returns the response's status line."""
  with socket.create_connection(address[:2], timeout=wait) as connection:
    connection.sendall(request)
    return connection.makefile("rb").readline().strip()


def post_with(headers: str, body: bytes = b"") -> bytes:
  return f"POST /hallucinate?model=0 HTTP/1.0\r\n{headers}\r\n".encode() + body


HOSTILE_REQUESTS = {
    "Content-Length -1": (post_with("Content-Length: -1\r\n", b"x" * 100), 400),
    "Content-Length abc": (post_with("Content-Length: abc\r\n"), 400),
    "Content-Length +5": (post_with("Content-Length: +5\r\n", b"xxxxx"), 400),
    "Content-Length 1e3": (post_with("Content-Length: 1e3\r\n"), 400),
    "no Content-Length": (post_with(""), 411),
    "chunked": (post_with("Transfer-Encoding: chunked\r\n", b"5\r\nxxxxx\r\n0\r\n\r\n"), 411),
    "over the limit": (post_with(f"Content-Length: {LIMIT + 1}\r\n"), 413),
    "garbage request line": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n", 400),
    "no version": (b"POST /hallucinate\r\n\r\n", 400),
    "too many words": (b"GET / HTTP/1.0 more\r\n\r\n", 400),
    "bad version": (b"GET / HTTP/x.y\r\n\r\n", 400),
    "unknown method": (b"BREW / HTTP/1.0\r\n\r\n", 501),
    "the page": (b"GET / HTTP/1.0\r\n\r\n", 200),
}


@pytest.mark.parametrize("name", list(HOSTILE_REQUESTS))
def test_hostile_requests_get_a_status_line_not_a_hang_or_a_traceback(light_server, name, capfd):
  request, status = HOSTILE_REQUESTS[name]
  line = exchange(light_server.server_address, request)
  assert line.startswith(b"HTTP/1.") and int(line.split()[1]) == status, line
  assert "Traceback" not in capfd.readouterr().err


def png_of_zeros(width: int, height: int) -> bytes:
  """A real RGB PNG of width × height black pixels, compressed row by row (small file, large image)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  compressor, row, parts = zlib.compressobj(9), b"\0" * (1 + 3 * width), []
  for _ in range(height):
    parts.append(compressor.compress(row))
  parts.append(compressor.flush())
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
          + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def png_claiming(width: int, height: int) -> bytes:
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


CHILD = """
import sys
from hallujax import demo
class StandIn:
  name = "stand-in"
server = demo.make_server([StandIn()], None, None, max_bytes=2_000_000, timeout=1.0, request_seconds=2.0,
                          max_connections=8)
print(server.server_address[1], flush=True)
server.serve_forever(poll_interval=0.1)
"""
MEMORY_BOUND_MB = 64   # the demo's peak memory growth allowed for the hostile uploads and clients below


def status_of(pid: int) -> dict[str, int]:
  with open(f"/proc/{pid}/status") as f:
    fields = dict(line.split(":", 1) for line in f)
  return {"peak_kb": int(fields["VmHWM"].split()[0]), "threads": int(fields["Threads"])}


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the server's memory from /proc")
def test_decompression_bombs_and_slow_clients_stay_under_the_memory_bound():
  child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, PYTHONPATH=REPO))
  try:
    address = ("127.0.0.1", int(child.stdout.readline()))
    exchange(address, b"GET / HTTP/1.0\r\n\r\n")   # imports done, one request served: the baseline
    before = status_of(child.pid)
    large, claim = png_of_zeros(8000, 8000), png_claiming(100_000, 100_000)   # 8000²: 192 MB of pixels
    assert len(large) < 400_000 and len(claim) < 200
    answers = []
    threads = [threading.Thread(target=lambda data=data: answers.append(exchange(
        address, post_with(f"Content-Length: {len(data)}\r\n", data)))) for data in (large, large, large, claim)]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
    assert sorted(answers) == [b"HTTP/1.0 400 Bad Request"] * 4
    idle = [socket.create_connection(address, timeout=30) for _ in range(100)]   # connect, send nothing
    idle[0].sendall(b"POST /hallucinate HTTP/1.0\r\nContent-Length: 1000\r\n\r\nsl")   # and a slow body
    assert idle[-1].recv(200).startswith(b"HTTP/1.0 503")   # every connection accepted; the last one refused
    held = status_of(child.pid)
    assert held["threads"] <= before["threads"] + 8 + 1      # at most max_connections handlers at a time
    fates = [connection.recv(200)[:12] for connection in idle[:-1]]
    assert set(fates) <= {b"HTTP/1.0 503", b""}              # refused at once, or cut at the request deadline
    assert 1 <= fates.count(b"") <= 8
    assert exchange(address, b"GET / HTTP/1.0\r\n\r\n") == b"HTTP/1.0 200 OK"
    for connection in idle:
      connection.close()
    after = status_of(child.pid)
    assert (after["peak_kb"] - before["peak_kb"]) / 1024 < MEMORY_BOUND_MB, (before, after)
  finally:
    child.kill()
    child.wait()
