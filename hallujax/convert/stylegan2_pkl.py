"""Read NVIDIA stylegan2-ada-pytorch network pickles (`network-snapshot-*.pkl`, the published FFHQ files)
without NVIDIA's code and without running anything the file brings.

Layout of such a file (written by `pickle.dump` in NVIDIA's training loop):
a dict {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}. Each network
is an instance of a class decorated with `torch_utils.persistence.persistent_class`,
which pickles as the call `torch_utils.persistence._reconstruct_persistent_obj(meta)`
with meta = {"type": "class", "version", "module_src": the Python source of
the module defining the class, "class_name", "state": the torch module's
`__dict__`}. Loading it with plain `pickle` would `exec` `module_src`. The
state holds the usual `torch.nn.Module` fields: `_parameters`, `_buffers`
(tensors, pickled through `torch.storage._load_from_bytes`), `_modules`
(sub-networks, persistent the same way), plus hyperparameters and
`dnnlib.EasyDict`s of constructor arguments.

The restricted unpickler here maps:
  * `_reconstruct_persistent_obj` -> a plain ``PersistentObject`` (class name +
    state dict); `module_src` is dropped, never executed;
  * classes referenced by name (`training.networks.Generator` & co., e.g. in
    pickles written without the persistence decorator, and `torch.nn` containers)
    -> plain ``PlainModule`` containers keeping their state;
  * `dnnlib.EasyDict` -> a dict subclass;
  * tensors -> torch's own rebuild functions, with every storage read through
    `torch.load(weights_only=True)`;
  * numpy scalars/arrays and the builtin containers pickle itself needs.
Any other global raises ``UnsupportedPickleError`` naming it; a TensorFlow-era
pickle (`dnnlib.tflib.network.Network`) is named as such.

What an allowed global may do is bounded too (the unpickler is pickle's Python
one, so each opcode can be checked): BUILD (pickle's "set the state" step) is
applied only to the objects this file builds (stand-ins, numpy arrays, tensors,
dicts), never to a class or a function, so a pickle cannot set attributes on
EasyDict, torch.nn.Parameter or any class process-wide; classes that allocate
from a size argument (numpy.ndarray, torch.Tensor, torch.nn.Parameter) are not
called, and every allocation a call asks for (bytearray, numpy's array and
scalar rebuilders, a tensor's view of its storage, a storage's size header) is
refused when it exceeds the file's own size: the file carries every byte a
real network holds.

The G, G_ema and D state dicts (the keys `module.state_dict()` would give)
then go through hallujax.convert.stylegan2's stylegan2-ada conversion.
torch is needed (optional extra `hallujax[torch]`).
"""

from __future__ import annotations

import _compat_pickle
import collections
import importlib
import io
import os
import pickle
from typing import Any

import numpy as np

from hallujax.convert import common
from hallujax.errors import named_first_line

NETWORK_NAMES = ("G", "G_ema", "D")
# Modules whose classes are NVIDIA's network code or torch containers: mapped to plain containers.
CONTAINER_MODULE_PREFIXES = ("training.", "torch_utils.", "torch.nn.modules.")


class UnsupportedPickleError(pickle.UnpicklingError, ValueError):
  """A pickle that references something other than stylegan2-ada-pytorch networks and tensors."""


class EasyDict(dict):
  """Stand-in for dnnlib.EasyDict (a dict with attribute access)."""

  def __getattr__(self, name: str):
    try:
      return self[name]
    except KeyError as error:
      raise AttributeError(name) from error


class PersistentObject:
  """A `torch_utils.persistence` object: its class name and state, nothing executable."""

  def __init__(self, class_name: str, state: dict, version: Any = None):
    self.class_name = class_name
    self.state = state
    self.version = version

  def __repr__(self) -> str:
    return f"PersistentObject({self.class_name})"


class PlainModule:
  """Stand-in for a class referenced by name (training.networks.*, torch.nn containers): keeps the state."""

  class_name = "PlainModule"

  def __init__(self, *args, **kwargs):
    self.args, self.kwargs = args, kwargs

  def __setstate__(self, state):
    if isinstance(state, tuple) and len(state) == 2:    # (dict state, slots state)
      state = {**(state[0] or {}), **(state[1] or {})}
    self.__dict__.update(state if isinstance(state, dict) else {"state": state})

  def __repr__(self) -> str:
    return f"PlainModule({self.class_name})"


_plain_classes: dict[str, type] = {}


def _plain_class(module: str, name: str) -> type:
  key = f"{module}.{name}"
  if key not in _plain_classes:
    _plain_classes[key] = type(name, (PlainModule,), {"class_name": key, "__module__": __name__})
  return _plain_classes[key]


def _reconstruct_persistent_obj(meta) -> PersistentObject:
  if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
    raise UnsupportedPickleError(f"a torch_utils.persistence object of an unknown form (type "
                                 f"{meta.get('type') if isinstance(meta, dict) else type(meta).__name__!r}); "
                                 f"expected type 'class'.")
  state = meta.get("state")
  if not isinstance(state, dict):
    raise UnsupportedPickleError(f"persistent object {meta['class_name']} has a {type(state).__name__} state; "
                                 f"expected the module's attribute dict.")
  return PersistentObject(meta["class_name"], state, meta.get("version"))


def _reconstructor(cls, base, state):
  """copyreg._reconstructor for the stand-in classes only (they are the only classes find_class returns)."""
  if not (isinstance(cls, type) and issubclass(cls, (PlainModule, EasyDict))):
    raise UnsupportedPickleError(f"copyreg._reconstructor of {cls!r} is not allowed.")
  obj = cls.__new__(cls)
  if base is dict and state is not None:
    obj.update(state)
  return obj


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
  """The `_codecs.encode` call protocol-2 pickles use for bytes."""
  if encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
    raise UnsupportedPickleError(f"_codecs.encode with encoding {encoding!r} is not allowed.")
  return text.encode("latin1")


def _legacy_storage_sizes(data: bytes) -> list[tuple[int, int]]:
  """[(element count its header declares, bytes that follow it)] of each storage in a legacy torch.save file
  (what torch.storage._load_from_bytes reads: five pickles — magic, protocol, system info, the object, the
  storage keys — then per storage an 8-byte element count and the raw bytes). torch allocates the declared
  count before reading, so the counts are checked against the bytes first."""

  class Skim(pickle._Unpickler):   # reads a pickle without building anything it names
    def find_class(self, module, name):
      return f"{module}.{name}"

    def persistent_load(self, pid):
      return pid

  stream = io.BytesIO(data)
  try:
    for _ in range(4):
      Skim(stream).load()
    keys = Skim(stream).load()
  except Exception as error:   # a damaged inner file: torch.load reports it below
    raise UnsupportedPickleError(f"a tensor storage that does not parse ({type(error).__name__}).") from None
  sizes = []
  for _ in keys if isinstance(keys, list) else ():
    count = int.from_bytes(stream.read(8), "little", signed=True)
    remaining = len(data) - stream.tell()
    sizes.append((count, remaining))
    stream.seek(min(max(count, 0), remaining), io.SEEK_CUR)   # at least one byte per element follows
  return sizes


def _allowed_globals(check_bytes) -> dict[str, Any]:
  """The globals a network pickle may name -> what they load as; `check_bytes(count, what)` refuses an
  allocation larger than the file."""
  import torch  # pylint: disable=import-outside-toplevel

  def load_storage(data: bytes):
    """torch.storage._load_from_bytes, with the inner file read tensors-only, its declared sizes checked."""
    for count, remaining in _legacy_storage_sizes(bytes(data)):
      if not 0 <= count <= remaining:
        raise UnsupportedPickleError(f"a tensor storage declares {count} elements but carries {remaining} bytes.")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

  def rebuild_tensor(rebuild):
    def checked(storage, storage_offset, size, stride, *rest):
      itemsize = storage.dtype.itemsize   # a TypedStorage: its dtype and untyped bytes (no deprecated calls)
      elements = storage._untyped_storage.nbytes() // itemsize  # pylint: disable=protected-access
      span = 1 + sum((int(n) - 1) * abs(int(step)) for n, step in zip(size, stride)) if all(size) else 0
      check_bytes(int(np.prod(size, dtype=np.float64)) * itemsize, "a tensor view")   # stride 0 repeats
      if storage_offset + span > elements:   # torch checks this too
        raise UnsupportedPickleError(f"a tensor of size {tuple(size)} reaches past its storage of {elements}.")
      return rebuild(storage, storage_offset, size, stride, *rest)
    return checked

  def bytearray_of(*args):
    if args and isinstance(args[0], int):
      check_bytes(args[0], "bytearray")
    return bytearray(*args)

  allowed = {
      "torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent_obj,
      "dnnlib.EasyDict": EasyDict,
      "dnnlib.util.EasyDict": EasyDict,
      "collections.OrderedDict": collections.OrderedDict,
      "builtins.set": set, "builtins.frozenset": frozenset, "builtins.dict": dict, "builtins.list": list,
      "builtins.tuple": tuple, "builtins.object": object, "builtins.bytearray": bytearray_of,
      "builtins.complex": complex,
      "copyreg._reconstructor": _reconstructor,
      "_codecs.encode": _latin1_encode,
      "torch.storage._load_from_bytes": load_storage,
      "torch.Tensor": torch.Tensor,
      "torch.nn.parameter.Parameter": torch.nn.Parameter,
      "torch.Size": torch.Size,
      "torch.device": torch.device,
      "numpy.dtype": np.dtype,
      "numpy.ndarray": np.ndarray,
  }
  for name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
    if hasattr(torch._utils, name):  # pylint: disable=protected-access
      allowed[f"torch._utils.{name}"] = rebuild_tensor(getattr(torch._utils, name))  # pylint: disable=protected-access
  for name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
    if hasattr(torch._utils, name):  # pylint: disable=protected-access
      allowed[f"torch._utils.{name}"] = getattr(torch._utils, name)  # pylint: disable=protected-access
  if hasattr(torch, "_tensor") and hasattr(torch._tensor, "_rebuild_from_type_v2"):  # pylint: disable=protected-access
    allowed["torch._tensor._rebuild_from_type_v2"] = torch._tensor._rebuild_from_type_v2  # pylint: disable=protected-access
  multiarray = None
  for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
    try:
      multiarray = importlib.import_module(module)
      break
    except ImportError:
      continue

  def reconstruct(subtype, shape, dtype):   # numpy pickles an empty (0,) array here, then its data by BUILD
    check_bytes(int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize, "a numpy array")
    return multiarray._reconstruct(subtype, shape, dtype)  # pylint: disable=protected-access

  def scalar(dtype, *data):
    check_bytes(np.dtype(dtype).itemsize, "a numpy scalar")
    return multiarray.scalar(dtype, *data)

  for module in ("numpy.core.multiarray", "numpy._core.multiarray"):     # pickles name either, by numpy version
    allowed[f"{module}._reconstruct"] = reconstruct
    allowed[f"{module}.scalar"] = scalar
  return allowed


def _not_called(torch) -> tuple:
  """Allowed classes that pickles name only as arguments (torch's rebuild functions take the tensor type):
  calling them allocates from a size the file chooses."""
  return (np.ndarray, torch.Tensor, torch.nn.Parameter)


def _buildable(torch) -> tuple:
  """The objects BUILD may set state on: what this unpickler itself makes, never a class or function."""
  return (PlainModule, EasyDict, PersistentObject, np.ndarray, np.dtype, np.generic, torch.Tensor, dict, list, set)


class RestrictedUnpickler(pickle._Unpickler):  # pylint: disable=protected-access  (Python's: opcodes overridable)
  """Unpickles stylegan2-ada-pytorch network pickles into plain containers and tensors; refuses anything else.

  `max_bytes`: the largest allocation one call may ask for (default: the file's size)."""

  dispatch = dict(pickle._Unpickler.dispatch)  # pylint: disable=protected-access

  def __init__(self, file, source: str = "the pickle", max_bytes: int | None = None):
    import torch  # pylint: disable=import-outside-toplevel
    super().__init__(file)
    self.source = source
    if max_bytes is None:
      position = file.tell()
      max_bytes = file.seek(0, io.SEEK_END)
      file.seek(position)
    self.max_bytes = max_bytes
    self.allowed = _allowed_globals(self.check_bytes)
    self.not_called, self.buildable = _not_called(torch), _buildable(torch)

  def check_bytes(self, count: int, what: str) -> None:
    if not 0 <= count <= self.max_bytes:
      raise UnsupportedPickleError(f"{self.source} asks for {what} of {count:,} bytes, more than the "
                                   f"{self.max_bytes:,} bytes of the file itself; refusing to allocate it.")

  def check_call(self, function) -> None:
    if isinstance(function, type) and issubclass(function, self.not_called):
      raise UnsupportedPickleError(f"{self.source} calls {function.__module__}.{function.__qualname__} directly "
                                   f"(network pickles name it only as the type of a rebuilt tensor or array).")

  def load_reduce(self):
    self.check_call(self.stack[-2])
    super().load_reduce()
  dispatch[pickle.REDUCE[0]] = load_reduce

  def load_newobj(self):
    self.check_call(self.stack[-2])
    super().load_newobj()
  dispatch[pickle.NEWOBJ[0]] = load_newobj

  def load_newobj_ex(self):
    self.check_call(self.stack[-3])
    super().load_newobj_ex()
  dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

  def load_build(self):
    target = self.stack[-2]
    if isinstance(target, type) or not isinstance(target, self.buildable):
      raise UnsupportedPickleError(f"{self.source} sets attributes on {target!r}; a network pickle sets state only "
                                   f"on the objects it builds (a class changed here would change process-wide).")
    if isinstance(target, np.ndarray) and isinstance(self.stack[-1], tuple) and len(self.stack[-1]) >= 3:
      _, shape, dtype = self.stack[-1][:3]    # ndarray.__setstate__((version, shape, dtype, fortran, data))
      self.check_bytes(int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize, "a numpy array")
    super().load_build()
  dispatch[pickle.BUILD[0]] = load_build

  def find_class(self, module: str, name: str):
    # Protocols 0-2 spell Python 2 names (__builtin__.set); pickle's own find_class maps them the same way.
    if (module, name) in _compat_pickle.NAME_MAPPING:
      module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    key = f"{module}.{name}"
    if key in self.allowed:
      return self.allowed[key]
    if module == "dnnlib.tflib.network":
      raise UnsupportedPickleError(
          f"{self.source} is a TensorFlow StyleGAN2 pickle ({key}); convert it to PyTorch first (NVIDIA's "
          f"stylegan2-ada-pytorch legacy.py, or rosinality's convert_weight.py), then load the result.")
    if module.startswith(CONTAINER_MODULE_PREFIXES) and name[:1].isupper():
      return _plain_class(module, name)
    raise UnsupportedPickleError(
        f"{self.source} references {key}, which is neither a stylegan2-ada-pytorch network class nor a tensor "
        f"type; refusing to unpickle it (only NVIDIA stylegan2-ada-pytorch network pickles are read here).")

  def persistent_load(self, pid):
    raise UnsupportedPickleError(f"{self.source} uses persistent ids ({str(pid)[:40]}): it is a torch.save file, "
                                 f"not a network pickle; load it with hallujax.convert.stylegan2.load_checkpoint.")


def _state_of(network, where: str) -> dict:
  if isinstance(network, PersistentObject):
    return network.state
  if isinstance(network, PlainModule):
    return network.__dict__
  raise UnsupportedPickleError(f"{where} is a {type(network).__name__}, not a network module.")


def _class_name(network) -> str:
  return network.class_name if isinstance(network, (PersistentObject, PlainModule)) else type(network).__name__


def module_state_dict(network, prefix: str = "", where: str = "network") -> dict[str, np.ndarray]:
  """What `network.state_dict()` would return (parameters, then persistent buffers, then sub-modules), as numpy."""
  state = _state_of(network, where)
  for field in ("_parameters", "_buffers", "_modules"):
    if not isinstance(state.get(field, {}), dict):
      raise UnsupportedPickleError(f"{where} ({_class_name(network)}) has a {type(state[field]).__name__} "
                                   f"{field}; expected a dict as torch modules keep.")
  if "_parameters" not in state and "_modules" not in state:
    raise UnsupportedPickleError(f"{where} ({_class_name(network)}) is not a torch module (no _parameters or "
                                 f"_modules in its state).")
  non_persistent = set(state.get("_non_persistent_buffers_set") or ())
  result = {}
  for field in ("_parameters", "_buffers"):
    for name, value in (state.get(field) or {}).items():
      if value is None or (field == "_buffers" and name in non_persistent):
        continue
      if not hasattr(value, "detach"):
        raise UnsupportedPickleError(f"{where}.{name} is a {type(value).__name__}, not a tensor.")
      result[prefix + name] = value.detach().cpu().float().numpy()
  for name, child in (state.get("_modules") or {}).items():
    if child is not None:
      result.update(module_state_dict(child, f"{prefix}{name}.", f"{where}.{name}"))
  return result


def load_network_pickle(path: str | os.PathLike) -> dict[str, Any]:
  """{"G", "G_ema", "D": state dict (numpy), "class_names": {...}, "training_set_kwargs"} of an NVIDIA pickle.

  Only the networks present are returned (a pickle may hold G_ema alone).
  Raises FileNotFoundError / TorchFileError for unreadable files and
  UnsupportedPickleError naming the first foreign class.
  """
  path = os.fspath(path)
  kind = common.check_torch_file(path)
  if kind != "pickle":
    raise common.TorchFileError(f"{path!r} is a torch.save checkpoint ({kind} format), not an NVIDIA network "
                                f"pickle; load it with hallujax.convert.stylegan2.load_checkpoint.")
  common.pickle_globals(path)     # a truncated or damaged pickle: one clear error before unpickling anything
  with open(path, "rb") as file:
    try:
      data = RestrictedUnpickler(file, repr(path)).load()
    except UnsupportedPickleError:
      raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, TypeError, AttributeError, ValueError) as error:
      raise common.TorchFileError(f"{path!r} could not be read as an NVIDIA network pickle: "
                                  f"{named_first_line(error)}") from error
  if not isinstance(data, dict) or not any(name in data for name in NETWORK_NAMES):
    found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
    raise UnsupportedPickleError(f"{path!r} holds {found}; expected NVIDIA's network snapshot dict with "
                                 f"{', '.join(NETWORK_NAMES)}.")
  result: dict[str, Any] = {"class_names": {}}
  for name in NETWORK_NAMES:
    if data.get(name) is not None:
      result[name] = module_state_dict(data[name], where=name)
      result["class_names"][name] = _class_name(data[name])
  kwargs = data.get("training_set_kwargs")
  result["training_set_kwargs"] = dict(kwargs) if isinstance(kwargs, dict) else None
  return result
