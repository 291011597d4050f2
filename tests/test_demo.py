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
from tests.test_hallucinate import needs_dlib, trained_run

skimage_data = pytest.importorskip("skimage.data")
LIMIT = 2_000_000     # bytes: above the astronaut PNG (~0.5 MB)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  needs_dlib()
  model = hallucinate.load_model(trained_run(tmp_path_factory.mktemp("tiny")), None, None, batch_size=2)
  server = demo.make_server([model], photos.Detector(), photos.Options(upscale=1), max_bytes=LIMIT)
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
