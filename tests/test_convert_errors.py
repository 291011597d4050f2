"""Unreadable weight files and bad StyleGAN2 tensors: one clear error each, allow_pickle only for real pickles."""

import argparse
import os
import pickle
import re
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hallujax.convert import common  # noqa: E402
from hallujax.convert import stylegan2 as convert  # noqa: E402
from hallujax.convert.common import CheckpointMismatchError, TorchFileError  # noqa: E402
from hallujax.nn.stylegan_layers import make_blur_kernel  # noqa: E402
from tests import stylegan2_reference as reference  # noqa: E402

STATE = {"layer.weight": torch.arange(6.0).reshape(2, 3), "layer.bias": torch.ones(2)}


def write_zip(path):
  torch.save(STATE, path)


def write_legacy(path):
  torch.save(STATE, path, _use_new_zipfile_serialization=False)


def truncate(path, fraction=0.5):
  data = open(path, "rb").read()
  open(path, "wb").write(data[:int(len(data) * fraction)])


def make_case(name, path):
  """Writes file `name` at `path`; returns nothing (the table below holds the expectations)."""
  if name == "missing":
    return
  if name == "directory":
    os.makedirs(path)
  elif name == "empty":
    open(path, "wb").close()
  elif name == "text":
    open(path, "w").write("hello, not weights\n")
  elif name == "html":
    open(path, "w").write("<!DOCTYPE html><html><body>Sign in</body></html>")
  elif name == "git_lfs_pointer":
    open(path, "w").write("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
  elif name == "truncated_zip":
    write_zip(path)
    truncate(path)
  elif name == "truncated_legacy":
    write_legacy(path)
    truncate(path, 0.4)
  elif name == "other_zip":
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("readme.txt", "hi")
  elif name == "plain_pickle":
    with open(path, "wb") as f:
      pickle.dump({"layer.weight": np.ones(3)}, f)
  elif name == "needs_pickle":
    torch.save({"state_dict": STATE, "args": argparse.Namespace(size=8)}, path)
  elif name == "needs_pickle_legacy":
    torch.save({"state_dict": STATE, "args": argparse.Namespace(size=8)}, path, _use_new_zipfile_serialization=False)
  else:
    raise AssertionError(name)


CASES = [
    ("missing", FileNotFoundError, "does not exist"),
    ("directory", TorchFileError, "is a directory"),
    ("empty", TorchFileError, r"is empty \(0 bytes\)"),
    ("text", TorchFileError, "is not a PyTorch checkpoint: it starts with bytes b'hello"),
    ("html", TorchFileError, "HTML/XML page"),
    ("git_lfs_pointer", TorchFileError, "Git LFS pointer"),
    ("truncated_zip", TorchFileError, "truncated or corrupt PyTorch checkpoint: its zip archive"),
    ("truncated_legacy", TorchFileError, "truncated or corrupt"),
    ("other_zip", TorchFileError, "zip archive but not a PyTorch checkpoint"),
    ("plain_pickle", TorchFileError, "plain Python pickle"),
    ("needs_pickle", TorchFileError, r"beyond tensors \(argparse.Namespace\).*allow_pickle=True"),
    ("needs_pickle_legacy", TorchFileError, r"beyond tensors \(argparse.Namespace\).*allow_pickle=True"),
]
READERS = {
    "stylegan2.read_torch_file": lambda path, **kw: convert.read_torch_file(path, **kw),
    "common.load_torch_state_dict": lambda path, **kw: common.load_torch_state_dict(path, **kw),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("name,error_type,message", CASES, ids=[case[0] for case in CASES])
def test_each_unreadable_file_gets_its_own_one_line_error(tmp_path, reader, name, error_type, message):
  path = str(tmp_path / "weights.pt")
  make_case(name, path)
  with pytest.raises(error_type, match=message) as caught:
    READERS[reader](path)
  text = str(caught.value)
  assert "\n" not in text and path in text
  assert ("allow_pickle" in text) == name.startswith("needs_pickle")      # never steers to unsafe unpickling
  assert not isinstance(caught.value, (KeyError, EOFError))


@pytest.mark.parametrize("name", ["needs_pickle", "needs_pickle_legacy"])
def test_trusted_pickle_loads_with_allow_pickle(tmp_path, name):
  path = str(tmp_path / "weights.pt")
  make_case(name, path)
  loaded = common.load_torch_state_dict(path, allow_pickle=True)
  np.testing.assert_array_equal(loaded["layer.weight"], STATE["layer.weight"].numpy())
  assert convert.read_torch_file(path, allow_pickle=True)["args"].size == 8


def test_good_files_of_both_formats_still_load(tmp_path):
  for writer in (write_zip, write_legacy):
    path = str(tmp_path / f"{writer.__name__}.pt")
    writer(path)
    loaded = common.load_torch_state_dict(path)
    np.testing.assert_array_equal(loaded["layer.bias"], np.ones(2, np.float32))


def test_state_dict_with_non_tensor_entries_is_named(tmp_path):
  path = str(tmp_path / "mixed.pt")
  torch.save({"layer.weight": torch.ones(2), "note": "hello"}, path)
  with pytest.raises(TorchFileError, match="entries note of the state dict are not tensors"):
    common.load_torch_state_dict(path)


# ----- StyleGAN2 tensors, each checked by name ---------------------------------------

STYLE_DIM = 8
CHANNELS = {4: 8, 8: 8}


@pytest.fixture(scope="module")
def rosinality_generator():
  torch.manual_seed(0)
  return {k: v.clone() for k, v in reference.Generator(8, STYLE_DIM, 2, CHANNELS).state_dict().items()}


@pytest.mark.parametrize("shape", [(7,), (1,), (1, STYLE_DIM), (2 * STYLE_DIM,)])
def test_latent_avg_must_have_the_style_size(rosinality_generator, tmp_path, shape):
  path = str(tmp_path / "g.pt")
  torch.save({"g_ema": rosinality_generator, "latent_avg": torch.zeros(shape)}, path)
  with pytest.raises(CheckpointMismatchError, match=re.escape(f"latent_avg; nothing was loaded: got shape {shape}, "
                                                               f"expected ({STYLE_DIM},)")):
    convert.load_checkpoint(path)
  torch.save({"g_ema": rosinality_generator, "latent_avg": torch.full((STYLE_DIM,), 0.5)}, path)
  loaded = convert.load_checkpoint(path)
  np.testing.assert_array_equal(loaded["generator_ema"]["buffers"]["mapping"]["w_avg"], np.full(STYLE_DIM, 0.5))


def test_wrong_blur_kernels_are_named_with_shape_or_values(rosinality_generator):
  state = dict(rosinality_generator)
  assert "convs.0.conv.blur.kernel" in state and "to_rgbs.0.upsample.kernel" in state
  state["convs.0.conv.blur.kernel"] = torch.ones(4, 4)                        # wrong values
  state["to_rgbs.0.upsample.kernel"] = torch.ones(3, 3)                       # wrong shape
  with pytest.raises(CheckpointMismatchError) as caught:
    convert.convert_generator(state)
  message = str(caught.value)
  assert "wrong blur kernels (2" in message
  assert "convs.0.conv.blur.kernel: holds [[1.0, 1.0, 1.0, 1.0]" in message
  assert "to_rgbs.0.upsample.kernel: shape (3, 3), expected (4, 4)" in message
  assert "unexpected keys" not in message and "mis-shaped" not in message


def test_non_finite_tensor_is_named(rosinality_generator):
  state = dict(rosinality_generator)
  state["style.1.bias"] = torch.tensor([float("nan")] + [0.0] * (STYLE_DIM - 1))
  with pytest.raises(CheckpointMismatchError, match=r"NaN or inf \(1\): style.1.bias \(1 of 8\)"):
    convert.convert_generator(state)


def random_ada_state(entries, seed=0):
  """A stylegan2-ada state dict with every key of the converter's table (blur buffers at their true value)."""
  rng = np.random.default_rng(seed)
  return {entry.key: torch.from_numpy(entry.expected_value if entry.expected_value is not None
                                      else rng.normal(size=entry.shape).astype(np.float32)) for entry in entries}


def test_ada_generator_with_every_resample_filter_of_the_real_layout_loads():
  architecture = dict(resolution=8, channels=(8, 8), style_dim=STYLE_DIM, mapping_layers=2)
  state = random_ada_state(convert.ada_generator_entries(**architecture))
  assert "synthesis.b4.resample_filter" in state                              # registered by every ada block
  assert convert.convert_generator(state)[0] == architecture
  state["synthesis.b4.resample_filter"] = torch.zeros(4, 4)
  with pytest.raises(CheckpointMismatchError, match=r"wrong blur kernels \(1.*synthesis.b4.resample_filter: holds"):
    convert.convert_generator(state)


def test_unknown_dict_is_not_mistaken_for_a_discriminator():
  with pytest.raises(CheckpointMismatchError, match="not a StyleGAN2 checkpoint.*keys like encoder.weight"):
    convert.load_checkpoint({"encoder.weight": torch.ones(2)})
  with pytest.raises(CheckpointMismatchError, match="holds a list"):
    convert.load_checkpoint([torch.ones(2)])
