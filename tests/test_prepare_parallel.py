"""Prepared records (format 2), parallel resumable prepare, verify, and the pipeline reading them."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from hallujax import prepare
from hallujax.config_base import base_config, data_section
from hallujax.data import folders, pipeline, record_writing, records
from hallujax.data.sources import make_source

# A source that stops the prepare mid-shard (a Ctrl-C) when INTERRUPT_AT is set.
INTERRUPT_AT = None


class InterruptibleFolder(folders.ImageFolder):

  def load(self, index):
    if INTERRUPT_AT is not None and index == INTERRUPT_AT:
      raise KeyboardInterrupt
    return super().load(index)


INTERRUPTIBLE = f"{__name__}:InterruptibleFolder"


def textured(value, shape, seed):
  rng = np.random.default_rng(seed)
  return np.clip(value + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)


def image_folder(root, count=30, corrupt=(7,)):
  """`count` 40² JPEG faces in two identity folders under train/; the `corrupt` ones are not images."""
  for k in range(count):
    path = root / "train" / f"person{k % 2}" / f"{k:03d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    if k in corrupt:
      path.write_bytes(b"not a jpeg")
    else:
      Image.fromarray(textured(6 * k + 10, (40, 40, 3), k)).save(path, quality=90)
  return str(root)


def celeba_folder(root, count=12):
  """CelebA's layout: 178×218 JPEGs, partition, identities and five landmarks."""
  names = [f"{k:06d}.jpg" for k in range(1, count + 1)]
  (root / "img_align_celeba").mkdir(parents=True)
  for k, name in enumerate(names):
    Image.fromarray(textured(15 * k + 20, (218, 178, 3), k)).save(root / "img_align_celeba" / name, quality=90)
  (root / "list_eval_partition.txt").write_text(
      "".join(f"{n} {0 if k < count - 2 else 1}\n" for k, n in enumerate(names)))
  (root / "identity_CelebA.txt").write_text("".join(f"{n} {k % 3 + 1}\n" for k, n in enumerate(names)))
  (root / "list_landmarks_align_celeba.txt").write_text(
      "6\nlefteye_x ...\n" + "".join(f"{n} 69 111 108 111 88 135 72 152 106 152\n" for n in names))
  return str(root)


def run_prepare(source, data_dir, out_dir, *extra):
  arguments = prepare.parse(["--source", source, "--data_dir", data_dir, "--out_dir", str(out_dir), *extra])
  return record_writing.prepare(arguments, log=lambda line: None)


def all_records(out_dir):
  from array_record.python.array_record_module import ArrayRecordReader
  result = []
  for path in sorted(p for p in os.listdir(out_dir) if p.endswith(".array_record")):
    reader = ArrayRecordReader(os.path.join(out_dir, path))
    result += [reader.read([k])[0] for k in range(reader.num_records())]
    reader.close()
  return result


def test_a_record_holds_the_picture_once_and_decodes_to_the_source_pixels(tmp_path):
  source = make_source(data_section(source="celeba_folder", data_dir=celeba_folder(tmp_path), target_size=0), "train")
  example = source.load(2)
  originals = record_writing.original_bytes(source, 2, example, "auto")
  assert set(originals) == {"target"}                             # the JPEG file itself, with its crop box
  for record in (records.encode(example, originals), records.encode(example)):   # original JPEG, PNG
    decoded = records.decode(record)
    assert set(decoded) == set(example)
    for name in example:
      np.testing.assert_array_equal(decoded[name], example[name])
  jpeg, png = len(records.encode(example, originals)), len(records.encode(example))
  with open(source.items[2], "rb") as f:
    assert jpeg < len(f.read()) + 300 < png                       # the file's bytes and a small header
  old = io.BytesIO()
  np.savez(old, **example)
  assert png < len(old.getvalue()) / 2 and jpeg < len(old.getvalue()) / 10


def test_interrupted_prepare_resumes_to_the_same_records_and_redoes_no_finished_shard(tmp_path, capsys):
  global INTERRUPT_AT
  data = image_folder(tmp_path / "raw")
  straight = run_prepare(INTERRUPTIBLE, data, tmp_path / "straight", "--splits", "train", "--shards", "4",
                         "--workers", "2")
  assert sorted(straight["written"]) == [f"train-{k:05d}-of-00004" for k in range(4)]
  INTERRUPT_AT = 20            # the third shard holds examples 15..21: the run stops inside it
  try:
    with pytest.raises(KeyboardInterrupt):
      run_prepare(INTERRUPTIBLE, data, tmp_path / "resumed", "--splits", "train", "--shards", "4", "--workers", "1")
  finally:
    INTERRUPT_AT = None
  out = tmp_path / "resumed"
  assert not (out / "info.json").exists() and (out / "train-00002-of-00004.array_record.partial").exists()
  with pytest.raises(FileNotFoundError, match="has not finished"):
    make_source(data_section(source="prepared", data_dir=str(out)), "train")
  finished_before = {name: os.stat(out / f"{name}.array_record").st_mtime_ns
                     for name in ("train-00000-of-00004", "train-00001-of-00004")}
  resumed = run_prepare(INTERRUPTIBLE, data, out, "--splits", "train", "--shards", "4", "--workers", "2")
  assert sorted(resumed["skipped"]) == sorted(finished_before)
  assert sorted(resumed["written"]) == ["train-00002-of-00004", "train-00003-of-00004"]
  assert {name: os.stat(out / f"{name}.array_record").st_mtime_ns for name in finished_before} == finished_before
  assert all_records(out) == all_records(tmp_path / "straight")
  info = json.loads((out / "info.json").read_text())
  assert info["splits"] == {"train": 29} and info["unusable"] == 1 and info["format_version"] == records.FORMAT_VERSION
  assert "007.jpg" in (out / "unusable.txt").read_text()          # the unreadable file, skipped and listed
  assert info["original_jpeg"] == 29                               # auto: every JPEG kept as it was
  assert "ex/s" in capsys.readouterr().err                         # the progress line
  with pytest.raises(ValueError, match="other settings"):          # resuming with other settings is refused
    run_prepare(INTERRUPTIBLE, data, out, "--splits", "train", "--shards", "4", "--target_size", "32")


def test_hosts_write_their_own_shard_ranges_and_the_last_one_finishes(tmp_path):
  data = image_folder(tmp_path / "raw", corrupt=())
  first = run_prepare("image_folder", data, tmp_path / "out", "--splits", "train", "--shards", "5",
                      "--num_hosts", "2", "--host_index", "0", "--workers", "1")
  assert first["written"] == ["train-00000-of-00005", "train-00001-of-00005"] and first["info"] is None
  second = run_prepare("image_folder", data, tmp_path / "out", "--splits", "train", "--shards", "5",
                       "--num_hosts", "2", "--host_index", "1", "--workers", "1")
  assert len(second["written"]) == 3 and second["info"]["splits"] == {"train": 30}
  run_prepare("image_folder", data, tmp_path / "one", "--splits", "train", "--shards", "5", "--workers", "1")
  assert all_records(tmp_path / "out") == all_records(tmp_path / "one")


def test_verify_reports_a_corrupted_record(tmp_path, capsys):
  data = image_folder(tmp_path / "raw", corrupt=())
  out = tmp_path / "out"
  run_prepare("image_folder", data, out, "--splits", "train", "--shards", "2", "--workers", "1")
  assert record_writing.verify(prepare.parse(["--out_dir", str(out), "--verify", "--workers", "1"]), log=print) == []
  shard = out / "train-00001-of-00002.array_record"
  content = bytearray(shard.read_bytes())
  record = all_records(out)[15 + 4]                               # record 4 of the second shard
  middle = content.index(record[-300:-240]) + 30                   # inside its JPEG scan data
  content[middle] ^= 0xFF
  shard.write_bytes(bytes(content))
  problems = record_writing.verify(prepare.parse(["--out_dir", str(out), "--verify", "--workers", "2"]), log=print)
  assert len(problems) == 1 and problems[0].startswith("train-00001-of-00002 record 4:"), problems
  with pytest.raises(SystemExit) as exit_code:
    prepare.main(["--out_dir", str(out), "--verify", "--workers", "1"])
  assert exit_code.value.code == 1 and "1 unreadable" in capsys.readouterr().out


def test_records_of_another_format_version_are_refused_with_the_command_that_rewrites_them(tmp_path):
  data = image_folder(tmp_path / "raw", corrupt=())
  out = tmp_path / "out"
  run_prepare("image_folder", data, out, "--splits", "train", "--shards", "1", "--workers", "1")
  info = json.loads((out / "info.json").read_text())
  (out / "info.json").write_text(json.dumps({**info, "format_version": 1}))
  with pytest.raises(records.RecordVersionError, match=r"format version 1; this hallujax reads version 2\. "
                                                       r"Prepare the dataset again"):
    make_source(data_section(source="prepared", data_dir=str(out)), "train")
  old = io.BytesIO()
  np.savez(old, target=np.zeros((4, 4, 3), np.uint8))               # a version-1 record
  with pytest.raises(records.RecordVersionError, match="python -m hallujax.prepare"):
    records.decode(old.getvalue())
  with pytest.raises(records.CorruptRecordError, match="checksum"):
    good = bytearray(all_records(out)[0])
    good[-1] ^= 1
    records.decode(bytes(good))


def pipeline_config(source, data_dir, degradation=None, **data):
  config = base_config()
  config.data.update(source=source, data_dir=data_dir, input_size=8, target_size=32, downsample="bicubic", **data)
  config.data.degradation = degradation or {}
  config.train.update(batch_size=4, eval_batches=1)
  return config


DEGRADE = dict(blur_sigma=(0.3, 1.2), noise_sigma=(4.0, 8.0), jpeg_quality=(50, 90))


@pytest.mark.parametrize("encoding", ["auto", "png"])
def test_batches_from_records_equal_those_from_the_folder_with_the_same_degradations(tmp_path, encoding):
  raw = celeba_folder(tmp_path / "celeba")
  run_prepare("celeba_folder", raw, tmp_path / "records", "--encoding", encoding, "--workers", "1")
  from_folder = iter(pipeline.train_dataset(pipeline_config("celeba_folder", raw, DEGRADE)))
  from_records = iter(pipeline.train_dataset(pipeline_config("prepared", str(tmp_path / "records"), DEGRADE)))
  undegraded = iter(pipeline.train_dataset(pipeline_config("prepared", str(tmp_path / "records"))))
  for _ in range(3):
    folder_batch, record_batch, plain = next(from_folder), next(from_records), next(undegraded)
    assert set(folder_batch) == set(record_batch) == {"input", "target", "identity", "landmarks5"}
    for name in folder_batch:
      np.testing.assert_array_equal(record_batch[name], folder_batch[name])
    np.testing.assert_array_equal(plain["target"], record_batch["target"])
    assert np.abs(plain["input"] - record_batch["input"]).mean() > 0.01      # the input was degraded
  assert record_batch["input"].shape == (4, 8, 8, 3) and record_batch["target"].dtype == np.float32


def test_two_process_slices_cover_the_set_without_overlap_and_degrade_alike(tmp_path):
  data = image_folder(tmp_path / "raw", count=16, corrupt=())
  run_prepare("image_folder", data, tmp_path / "records", "--splits", "train", "--shards", "3", "--workers", "1")
  config = pipeline_config("prepared", str(tmp_path / "records"), DEGRADE)
  config.train.batch_size = 8
  whole = iter(pipeline.train_dataset(config))
  slices = [iter(pipeline.train_dataset(config, process_index=k, process_count=2)) for k in range(2)]
  seen = [[], []]
  for _ in range(2):                                              # two global batches: one pass over the 16
    batch = next(whole)
    parts = [next(iterator) for iterator in slices]
    for name in batch:                                            # process 0's half, then process 1's
      np.testing.assert_array_equal(np.concatenate([parts[0][name], parts[1][name]]), batch[name])
    for k in range(2):
      seen[k] += [round(float(target.mean()), 2) for target in parts[k]["target"]]   # 6·k + 10 ± noise
  assert not set(seen[0]) & set(seen[1]) and len(set(seen[0]) | set(seen[1])) == 16


def test_worker_processes_give_the_same_batches_and_resume_from_a_saved_state(tmp_path):
  data = image_folder(tmp_path / "raw", count=16, corrupt=())
  run_prepare("image_folder", data, tmp_path / "records", "--splits", "train", "--shards", "2", "--workers", "1")
  in_process = iter(pipeline.train_dataset(pipeline_config("prepared", str(tmp_path / "records"), DEGRADE)))
  expected = [next(in_process) for _ in range(5)]
  config = pipeline_config("prepared", str(tmp_path / "records"), DEGRADE, worker_count=2)
  recorder = pipeline.IteratorStateRecorder(iter(pipeline.train_dataset(config)))
  got = [next(recorder) for _ in range(3)]
  state = recorder.state_after(2)
  resumed = pipeline.IteratorStateRecorder(iter(pipeline.train_dataset(config)))
  resumed.restore(state)
  got_after = [next(resumed) for _ in range(3)]
  for batch, reference in zip(got + got_after[1:], expected[:3] + expected[3:]):
    np.testing.assert_array_equal(batch["input"], reference["input"])
  np.testing.assert_array_equal(got_after[0]["target"], expected[2]["target"])


def test_celeb_a_through_tfds_data_source_prepares_into_records(tmp_path):
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
    tfds_source = make_source(data_section(source="celeb_a", target_size=0), "validation")
    expected = [tfds_source[k] for k in range(4)]
    run_prepare("celeb_a", "", tmp_path / "records", "--splits", "validation", "--workers", "1")
  prepared = make_source(data_section(source="prepared", data_dir=str(tmp_path / "records")), "validation")
  assert len(prepared) == 4 and prepared.info["encoding"] == "auto" and prepared.info["original_jpeg"] == 0
  for k in range(4):
    example = prepared[k]
    assert example["target"].shape == (218, 178, 3) and example["landmarks5"].shape == (5, 2)
    for name in ("target", "input", "identity", "landmarks5"):
      np.testing.assert_array_equal(example[name], expected[k][name])


def test_resize_keeps_landmarks_on_the_same_features():
  image = np.zeros((64, 64, 3), np.uint8)
  image[20:24, 40:44] = 255                                         # a bright 4×4 feature centred at (41.5, 21.5)
  example = {"input": image, "target": image, "landmarks5": np.array([[41.5, 21.5]] * 5, np.float32)}
  resized = record_writing.resize_example(example, 32)
  assert resized["input"] is resized["target"]
  peak = np.unravel_index(np.argmax(resized["target"][..., 0].astype(float)), (32, 32))
  x, y = resized["landmarks5"][0]
  assert abs(x - 20.5) < 1e-5 and abs(y - 10.5) < 1e-5 and abs(peak[1] - x) <= 0.5 and abs(peak[0] - y) <= 0.5
