"""Hand-written hostile pickles against the restricted unpickler and the torch-file reader."""

import datetime
import os
import struct

import pytest

torch = pytest.importorskip("torch")

from hallujax.convert import common, stylegan2_pkl  # noqa: E402


def global_(module: str, name: str) -> bytes:
  return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:
  return b"X" + struct.pack("<I", len(value)) + value.encode()


def integer(value: int) -> bytes:
  return b"J" + struct.pack("<i", value)


def set_class_attribute(module: str, name: str) -> bytes:
  """BUILD on the class itself with a (None, {attribute: 1}) state: pickle's slot-state path calls setattr."""
  return b"\x80\x02" + global_(module, name) + b"N}" + text("pwned_marker") + b"K\x01s\x86b."


def call(module: str, name: str, *arguments: bytes) -> bytes:
  return b"\x80\x02" + global_(module, name) + b"(" + b"".join(arguments) + b"tR."


SIXTEEN_MB = 1 << 24
HOSTILE = {
    "setattr on EasyDict": (set_class_attribute("dnnlib", "EasyDict"), "sets attributes on"),
    "setattr on Parameter": (set_class_attribute("torch.nn.parameter", "Parameter"), "sets attributes on"),
    "setattr on Tensor": (set_class_attribute("torch", "Tensor"), "sets attributes on"),
    "setattr on a network class": (set_class_attribute("training.networks", "Generator"), "sets attributes on"),
    "bytearray of 16 MB": (call("builtins", "bytearray", integer(SIXTEEN_MB)), "refusing to allocate"),
    "numpy array of 16 MB": (call("numpy.core.multiarray", "_reconstruct", global_("numpy", "ndarray"),
                                  b"(" + integer(SIXTEEN_MB) + b"t", b"C\x01b"), "refusing to allocate"),
    "torch.Tensor(16 M)": (call("torch", "Tensor", integer(SIXTEEN_MB)), "calls torch.Tensor directly"),
    "numpy.ndarray(16 M)": (call("numpy", "ndarray", b"(" + integer(SIXTEEN_MB) + b"t"), "calls numpy.ndarray"),
    "os.system": (call("posix", "system", text("true")), "references posix.system"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_pickles_are_refused_and_change_nothing(tmp_path, name):
  data, expected = HOSTILE[name]
  assert len(data) < 200
  path = tmp_path / "network-snapshot.pkl"
  path.write_bytes(data)
  with pytest.raises(stylegan2_pkl.UnsupportedPickleError, match=expected):
    stylegan2_pkl.load_network_pickle(str(path))
  for cls in (stylegan2_pkl.EasyDict, torch.nn.Parameter, torch.Tensor, stylegan2_pkl.PlainModule):
    assert not hasattr(cls, "pwned_marker")


class RunsACommand:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_naming_os_system_gets_no_allow_pickle_hint_and_never_runs(tmp_path):
  marker = tmp_path / "ran"
  path = str(tmp_path / "model.pth")
  torch.save({"weights": torch.zeros(2), "payload": RunsACommand(marker)}, path)
  for allow_pickle in (False, True):
    with pytest.raises(common.TorchFileError) as error:
      common.read_torch_file(path, allow_pickle=allow_pickle)
    message = str(error.value)
    assert "system" in message and "allow_pickle=True" not in message and "\n" not in message
  assert not marker.exists()
  torch.save({"weights": torch.zeros(2), "date": datetime.date(2026, 1, 1)}, path)   # a harmless foreign class
  with pytest.raises(common.TorchFileError, match="allow_pickle=True"):
    common.read_torch_file(path)
