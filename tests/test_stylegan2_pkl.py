"""NVIDIA stylegan2-ada-pytorch network pickles, read without NVIDIA's code.

The test writes a pickle in their layout: a dict {G, D, G_ema, augment_pipe,
training_set_kwargs} whose networks pickle as
`torch_utils.persistence._reconstruct_persistent_obj(meta)` (meta holding the
module source, the class name and the torch module's __dict__), with
`dnnlib.util.EasyDict` constructor arguments, numpy scalar attributes and
tensors pickled by torch. The fake `torch_utils` / `dnnlib` modules exist only
while the file is written.
"""

import pickle
import sys
import types

import flax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hallujax.convert import common  # noqa: E402
from hallujax.convert import stylegan2 as convert  # noqa: E402
from hallujax.convert import stylegan2_pkl  # noqa: E402

GENERATOR = dict(resolution=16, channels=(8, 8, 4), style_dim=8, mapping_layers=2)
DISCRIMINATOR = dict(resolution=16, channels=(8, 8, 4))
BUFFER_NAMES = ("w_avg", "noise_const", "resample_filter")
CLASS_FOR = {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork", "torgb": "ToRGBLayer",
             "conv0": "SynthesisLayer", "conv1": "SynthesisLayer", "affine": "FullyConnectedLayer",
             "fc": "FullyConnectedLayer", "out": "FullyConnectedLayer", "fc0": "FullyConnectedLayer",
             "fc1": "FullyConnectedLayer", "skip": "Conv2dLayer", "fromrgb": "Conv2dLayer", "conv": "Conv2dLayer"}
MODULE_SOURCE = "import os\nos.system('echo this must never run')\n"   # what a real file's module_src would exec


class FakePersistent(torch.nn.Module):
  """Pickles as torch_utils.persistence's decorator does: (_reconstruct_persistent_obj, (meta,), None)."""

  reconstruct = None   # set to the fake torch_utils.persistence function while writing

  def __init__(self, class_name, **init_kwargs):
    super().__init__()
    self.persistent_class_name = class_name
    self._init_args = ()
    self._init_kwargs = init_kwargs
    self.weight_gain = np.float64(0.125)          # real layers keep numpy scalars as attributes

  def __reduce__(self):
    state = {key: value for key, value in self.__dict__.items() if key != "persistent_class_name"}
    meta = dict(type="class", version=6, module_src=MODULE_SOURCE, class_name=self.persistent_class_name,
                state=state)
    return (FakePersistent.reconstruct, (meta,), None)


def build_network(state_dict, class_name, easy_dict):
  """A tree of FakePersistent modules whose state_dict() is `state_dict` (blocks b8, b16 ... by key)."""
  root = FakePersistent(class_name, mapping_kwargs=easy_dict(num_layers=2), img_resolution=16)
  for key, value in state_dict.items():
    *path, leaf = key.split(".")
    module = root
    for part in path:
      if part not in module._modules:
        kind = "SynthesisBlock" if part.startswith("b") and class_name == "Generator" else CLASS_FOR.get(part)
        module.add_module(part, FakePersistent(kind or ("DiscriminatorBlock" if part.startswith("b") else "Module")))
      module = module._modules[part]
    tensor = torch.as_tensor(value)
    if leaf in BUFFER_NAMES:
      module.register_buffer(leaf, tensor)
    else:
      module.register_parameter(leaf, torch.nn.Parameter(tensor, requires_grad=False))
  assert set(root.state_dict()) == set(state_dict)
  return root


def random_state(entries, seed):
  rng = np.random.default_rng(seed)
  return {e.key: (e.expected_value if e.expected_value is not None else rng.normal(size=e.shape)).astype(np.float32)
          for e in entries}


@pytest.fixture
def fake_nvidia_modules(monkeypatch):
  """torch_utils.persistence and dnnlib.util as importable modules, for pickle to name while writing."""
  persistence = types.ModuleType("torch_utils.persistence")

  def _reconstruct_persistent_obj(meta):
    raise AssertionError("the loader must never call NVIDIA's reconstruct function")

  _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
  _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
  persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
  util = types.ModuleType("dnnlib.util")
  easy_dict = type("EasyDict", (dict,), {"__module__": "dnnlib.util", "__qualname__": "EasyDict"})
  util.EasyDict = easy_dict
  for name, module in (("torch_utils", types.ModuleType("torch_utils")), ("torch_utils.persistence", persistence),
                       ("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.util", util)):
    monkeypatch.setitem(sys.modules, name, module)
  monkeypatch.setattr(FakePersistent, "reconstruct", _reconstruct_persistent_obj)
  return easy_dict


def write_snapshot(path, fake_modules, protocol, networks=("G", "D", "G_ema")):
  states = {"G": random_state(convert.ada_generator_entries(**GENERATOR), 0),
            "G_ema": random_state(convert.ada_generator_entries(**GENERATOR), 1),
            "D": random_state(convert.ada_discriminator_entries(**DISCRIMINATOR), 2)}
  snapshot = dict(training_set_kwargs=dict(path="ffhq.zip", resolution=16), augment_pipe=None)
  for name in networks:
    snapshot[name] = build_network(states[name], "Discriminator" if name == "D" else "Generator", fake_modules)
  with open(path, "wb") as f:
    pickle.dump(snapshot, f, protocol=protocol)
  return states


def flat(tree):
  return flax.traverse_util.flatten_dict(tree)


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_network_pickle_loads_to_the_state_dict_converters_result(tmp_path, fake_nvidia_modules, protocol,
                                                                  capfd):
  path = str(tmp_path / "network-snapshot-000000.pkl")
  states = write_snapshot(path, fake_nvidia_modules, protocol)
  assert common.is_nvidia_network_pickle(path)
  networks = stylegan2_pkl.load_network_pickle(path)
  assert networks["class_names"] == {"G": "Generator", "G_ema": "Generator", "D": "Discriminator"}
  assert networks["training_set_kwargs"] == {"path": "ffhq.zip", "resolution": 16}
  for name in ("G", "G_ema", "D"):
    assert set(networks[name]) == set(states[name])
    for key, value in states[name].items():
      np.testing.assert_array_equal(networks[name][key], value)
  loaded = convert.load_checkpoint(path)           # the StyleGAN2 loader recognises the .pkl by itself
  assert loaded["architecture"] == GENERATOR and loaded["w_avg_source"] == "w_avg"
  assert loaded["discriminator_architecture"] == DISCRIMINATOR
  for name, source, converter in (("generator_ema", "G_ema", convert.convert_generator),
                                  ("generator", "G", convert.convert_generator),
                                  ("discriminator", "D", convert.convert_discriminator)):
    expected = flat(converter(states[source])[1])
    got = flat(loaded[name])
    assert set(got) == set(expected)
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key])
  np.testing.assert_array_equal(loaded["generator_ema"]["buffers"]["mapping"]["w_avg"], states["G_ema"]["mapping.w_avg"])
  assert "this must never run" not in capfd.readouterr().out      # module_src is dropped, not executed


def test_generator_only_pickle(tmp_path, fake_nvidia_modules):
  path = str(tmp_path / "g_ema.pkl")
  write_snapshot(path, fake_nvidia_modules, protocol=4, networks=("G_ema",))
  loaded = convert.load_pickle_checkpoint(path)
  assert set(loaded) == {"architecture", "generator_ema", "w_avg_source"}


class Gadget:
  """A class no network pickle has."""

  def __init__(self):
    self.payload = 1


def test_pickle_of_unknown_classes_is_refused_naming_the_class(tmp_path, fake_nvidia_modules):
  path = str(tmp_path / "other.pkl")
  with open(path, "wb") as f:
    pickle.dump({"G_ema": Gadget()}, f)
  with pytest.raises(stylegan2_pkl.UnsupportedPickleError, match=r"references tests\.test_stylegan2_pkl\.Gadget"):
    stylegan2_pkl.load_network_pickle(path)
  with open(path, "wb") as f:
    pickle.dump({"G_ema": print}, f)
  with pytest.raises(stylegan2_pkl.UnsupportedPickleError, match=r"references builtins\.print"):
    stylegan2_pkl.load_network_pickle(path)


def test_other_files_get_one_line_errors(tmp_path, fake_nvidia_modules):
  path = str(tmp_path / "snapshot.pkl")
  write_snapshot(path, fake_nvidia_modules, protocol=4)
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])
  with pytest.raises(common.TorchFileError, match="truncated or corrupt"):
    stylegan2_pkl.load_network_pickle(path)
  torch.save({"g_ema": {}}, path)
  with pytest.raises(common.TorchFileError, match="torch.save checkpoint .* not an NVIDIA network pickle"):
    stylegan2_pkl.load_network_pickle(path)
  with open(path, "wb") as f:
    pickle.dump({"resolution": 16}, f)
  with pytest.raises(stylegan2_pkl.UnsupportedPickleError, match="expected NVIDIA's network snapshot dict"):
    stylegan2_pkl.load_network_pickle(path)
  tensorflow_module = types.ModuleType("dnnlib.tflib.network")
  tensorflow_network = type("Network", (), {"__module__": "dnnlib.tflib.network"})
  tensorflow_module.Network = tensorflow_network
  sys.modules["dnnlib.tflib.network"] = tensorflow_module
  try:
    with open(path, "wb") as f:
      pickle.dump((tensorflow_network(), tensorflow_network(), tensorflow_network()), f)
  finally:
    del sys.modules["dnnlib.tflib.network"]
  with pytest.raises(stylegan2_pkl.UnsupportedPickleError, match="TensorFlow StyleGAN2 pickle"):
    convert.load_checkpoint(path)
