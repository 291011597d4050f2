"""Turn a PyTorch state dict into Flax variables, all or nothing.

A converter names, for every leaf of the Flax variables it must fill, the
PyTorch key it comes from (``torch_key_for``). ``convert_state_dict`` then
checks the whole checkpoint at once and raises one ``CheckpointMismatchError``
listing every missing, unexpected and mis-shaped entry; it never returns a
partial load.

Layout rules (PyTorch -> Flax):
  conv weight (O, I, kh, kw) -> kernel (kh, kw, I, O)
  linear weight (O, I)       -> kernel (I, O)
  batch-norm weight / bias / running_mean / running_var
                             -> params scale / bias, batch_stats mean / var
Fully connected layers after a flatten need no permutation: the Flax models
flatten channel-major as PyTorch does (``recognition.flatten_channel_major``).

Reading files (``read_torch_file``) tells apart what can go wrong, one line
each: no such file (FileNotFoundError), a directory, an empty file, a file that
is no PyTorch checkpoint at all (text, HTML, a Git LFS pointer), a truncated or
corrupt one (TorchFileError, a ValueError), and a genuine pickle holding
Python objects beyond tensors, the only case that suggests ``allow_pickle=True``
(and only for a file one trusts).

torch is an optional extra (``pip install hallujax[torch]``): it is imported
only inside ``read_torch_file``.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import pickletools
import zipfile
from typing import Any, Callable, Iterable, Mapping

import flax
import jax
import numpy as np

from hallujax.errors import named_first_line

# Buffers PyTorch keeps that no Flax network here needs.
ALWAYS_IGNORED_SUFFIXES = ("num_batches_tracked",)


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the network: lists every missing, unexpected and mis-shaped key."""


class TorchFileError(ValueError):
  """A file that cannot be read as a PyTorch checkpoint, with the reason in one line."""


# The first pickle of a legacy (pre-zip) torch.save file holds this number.
LEGACY_TORCH_MAGIC = 0x1950a86a20f9469cfc6c
# Modules whose globals a tensors-only pickle may reference (torch's weights_only unpickler allows these).
TENSOR_MODULES = ("torch", "collections", "builtins", "_codecs", "copyreg")
NVIDIA_MODULES = ("torch_utils", "dnnlib", "training")
# Globals no checkpoint needs and an attack does: unpickling one runs commands or code. A file naming one is
# refused outright, never with the allow_pickle hint (nor loaded with allow_pickle=True).
CODE_RUNNING_MODULES = ("os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy", "pty",
                        "ctypes", "marshal", "code", "codeop", "pickle", "_pickle", "webbrowser", "multiprocessing",
                        "signal", "pdb", "timeit", "commands", "popen2", "platform", "asyncio", "threading")
CODE_RUNNING_BUILTINS = ("eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "__import__",
                         "globals", "locals", "vars", "breakpoint", "input", "apply", "execfile", "__builtin__")


def code_running_globals(names: Iterable[str]) -> list[str]:
  """The names among `names` ("module.name") that would run commands or code when unpickled."""
  return [name for name in names if name.split(".")[0] in CODE_RUNNING_MODULES
          or (name.split(".")[0] in ("builtins", "__builtin__") and name.split(".")[-1] in CODE_RUNNING_BUILTINS)]


def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError(
        "Reading PyTorch checkpoints needs torch: pip install 'hallujax[torch]' (or pip install torch)."
    ) from error
  return torch


def _describe_start(head: bytes) -> str:
  text = head.lstrip().lower()
  if text.startswith((b"<!doctype", b"<html", b"<?xml")):
    return "an HTML/XML page (a failed download or a login page?)"
  if text.startswith(b"version https://git-lfs"):
    return "a Git LFS pointer, not the weights (run `git lfs pull`)"
  if text.startswith((b"{", b"[")):
    return "JSON text"
  return f"bytes {head[:12]!r}"


def check_torch_file(path: str | os.PathLike) -> str:
  """"zip" (torch.save), "legacy" (torch.save before PyTorch 1.6) or "pickle" (a plain pickle.dump), or an error.

  Raises FileNotFoundError for a missing path and TorchFileError for a
  directory, an empty file, a file of another kind and a truncated zip archive.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No checkpoint at {path!r}: the file does not exist.")
  if os.path.isdir(path):
    inside = sorted(f for f in os.listdir(path) if f.endswith((".pt", ".pth", ".tar", ".pkl", ".ckpt")))
    hint = f" (it holds {', '.join(inside[:5])})" if inside else ""
    raise TorchFileError(f"{path!r} is a directory, not a PyTorch checkpoint file{hint}; give the file itself.")
  size = os.path.getsize(path)
  if size == 0:
    raise TorchFileError(f"{path!r} is empty (0 bytes), not a PyTorch checkpoint; was the download or save "
                         f"interrupted?")
  with open(path, "rb") as file:
    head = file.read(64)
  if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
    try:
      with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
      raise TorchFileError(f"{path!r} is a truncated or corrupt PyTorch checkpoint: its zip archive is unreadable "
                           f"({error}; {size} bytes). Download or save it again.") from error
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
      raise TorchFileError(f"{path!r} is a zip archive but not a PyTorch checkpoint (no data.pkl inside; it holds "
                           f"{', '.join(names[:4])}).")
    return "zip"
  if head[:1] == b"\x80" and 2 <= head[1] <= 5:   # pickle PROTO opcode with a known protocol
    # Legacy torch.save opens with the pickle of LEGACY_TORCH_MAGIC: PROTO 2, LONG1 of 10 bytes, the number.
    legacy = head[:4] == b"\x80\x02\x8a\x0a" and int.from_bytes(head[4:14], "little") == LEGACY_TORCH_MAGIC
    return "legacy" if legacy else "pickle"
  raise TorchFileError(f"{path!r} is not a PyTorch checkpoint: it starts with {_describe_start(head)}; expected a "
                       f"torch.save file (zip archive or legacy pickle).")


STRING_OPCODES = ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                  "SHORT_BINSTRING")
INTEGER_OPCODES = ("LONG1", "LONG4", "INT", "LONG", "BININT", "BININT1", "BININT2")


def _scan_pickle(stream) -> tuple[list[str], Any]:
  """(globals "module.name" referenced, the last integer pushed) of one pickle in `stream`.

  Reads opcodes up to STOP without executing anything (pickletools); raises
  ValueError if the stream ends first or holds an unknown opcode (a truncated
  or corrupt file). STACK_GLOBAL takes the two strings pushed last, directly
  or from the memo.
  """
  found, strings, memo, top_string, last_integer = [], [], {}, None, None
  for opcode, argument, _ in pickletools.genops(stream):
    name = opcode.name
    pushed = None
    if name == "GLOBAL":
      module, _, attribute = argument.partition(" ")   # protocol 0-2 spell Python 2 names: __builtin__.set
      found.append(f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attribute}")
    elif name == "STACK_GLOBAL" and len(strings) >= 2:
      found.append(f"{strings[-2]}.{strings[-1]}")
    elif name in STRING_OPCODES:
      pushed = argument
    elif name in ("BINGET", "LONG_BINGET", "GET"):
      pushed = memo.get(argument)
    elif name in INTEGER_OPCODES:
      last_integer = argument
    if name == "MEMOIZE":
      memo[len(memo)] = top_string
    elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
      memo[argument] = top_string
    if pushed is not None:
      strings.append(pushed)
    if name not in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
      top_string = pushed
  return list(dict.fromkeys(found)), last_integer


def pickle_globals(path: str | os.PathLike) -> list[str]:
  """Every global ("module.name") the checkpoint's object pickle references; TorchFileError if truncated."""
  path = os.fspath(path)
  try:
    if check_torch_file(path) == "zip":
      with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
        return _scan_pickle(io.BytesIO(archive.read(name)))[0]
    with open(path, "rb") as file:
      found, first = _scan_pickle(file)
      if first == LEGACY_TORCH_MAGIC:           # legacy torch.save: magic, protocol, sys_info, object
        found = []
        for _ in range(3):
          found += _scan_pickle(file)[0]
      return list(dict.fromkeys(found))
  except (ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
    if isinstance(error, TorchFileError):
      raise
    raise TorchFileError(f"{path!r} is a truncated or corrupt PyTorch checkpoint: its pickle stream ends early or "
                         f"is damaged ({error}). Download or save it again.") from error


def is_nvidia_network_pickle(path: str | os.PathLike) -> bool:
  """Whether `path` is an NVIDIA stylegan2-ada-pytorch network pickle (torch_utils / dnnlib / training classes)."""
  return check_torch_file(path) == "pickle" and any(
      name.split(".")[0] in NVIDIA_MODULES for name in pickle_globals(path))


def _tensor_globals(torch) -> set[str]:
  """Globals torch's weights_only unpickler accepts ("module.name"); a module-prefix rule if torch hides them."""
  try:
    from torch import _weights_only_unpickler  # pylint: disable=import-outside-toplevel
    return set(_weights_only_unpickler._get_allowed_globals()) | {  # pylint: disable=protected-access
        f"{getattr(g, '__module__', '')}.{getattr(g, '__name__', '')}" for g in torch.serialization.get_safe_globals()
        if not isinstance(g, tuple)}
  except (ImportError, AttributeError):
    return _PrefixSet(TENSOR_MODULES)


class _PrefixSet:
  """`name in _PrefixSet(modules)`: the name's top-level module is one of `modules`."""

  def __init__(self, modules):
    self.modules = tuple(modules)

  def __contains__(self, name: str) -> bool:
    return name.split(".")[0] in self.modules


def read_torch_file(path: str | os.PathLike, allow_pickle: bool = False):
  """torch.load a checkpoint on the CPU with tensors-only unpickling; one clear error for every failure.

  `allow_pickle=True` lets torch unpickle arbitrary Python objects: only for
  files you trust, and suggested only when the file really is such a pickle.
  """
  torch = _import_torch()
  path = os.fspath(path)
  kind = check_torch_file(path)
  if kind == "pickle":
    found = pickle_globals(path)
    if any(name.split(".")[0] in NVIDIA_MODULES for name in found):
      raise TorchFileError(f"{path!r} is an NVIDIA stylegan2-ada-pytorch network pickle; read it with "
                           f"hallujax.convert.stylegan2_pkl.load_network_pickle (the StyleGAN2 loaders do this "
                           f"themselves), never with torch.load.")
    raise TorchFileError(f"{path!r} is a plain Python pickle (pickle.dump{', holding ' + ', '.join(found[:3]) if found else ''}), "
                         f"not a torch.save checkpoint; save the weights with torch.save(model.state_dict(), path).")
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # pylint: disable=broad-except  (classified below)
    refused = isinstance(error, pickle.UnpicklingError) and "weights only load failed" in str(error).lower()
    found = pickle_globals(path)      # raises TorchFileError for a truncated / damaged pickle
    if not refused:
      raise TorchFileError(f"{path!r} is a truncated or corrupt PyTorch checkpoint ({kind} format): torch.load "
                           f"failed with {named_first_line(error)}") from error
    beyond = [name for name in found if name not in _tensor_globals(torch)]
    dangerous = code_running_globals(beyond)
    if dangerous:
      raise TorchFileError(f"{path!r} names {', '.join(dangerous[:4])}, which would run commands or code when "
                           f"unpickled; no model checkpoint needs that. Not loading it (allow_pickle does not "
                           f"change this): delete the file or get it again from its source.") from None
    if not beyond:
      raise TorchFileError(f"{path!r} is a corrupt PyTorch checkpoint: it references only tensor types, yet "
                           f"torch.load refused it ({(str(error).strip().splitlines() or [''])[0][:200]})") from error
    if not allow_pickle:
      raise TorchFileError(
          f"{path!r} is a pickle holding Python objects beyond tensors ({', '.join(beyond[:4])}), which torch.load "
          f"refuses with weights_only=True. If you trust the file, pass allow_pickle=True (--allow_pickle on the "
          f"command line).") from error
    try:
      return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as unsafe_error:  # pylint: disable=broad-except
      raise TorchFileError(f"{path!r}: unpickling with allow_pickle=True failed too: {type(unsafe_error).__name__}: "
                           f"{(str(unsafe_error).strip().splitlines() or [''])[0][:200]}") from unsafe_error


def load_torch_state_dict(path: str | os.PathLike, strip_prefixes: Iterable[str] = ("module.",),
                          allow_pickle: bool = False) -> dict[str, np.ndarray]:
  """Read a ``.pt`` / ``.pth`` / ``.pth.tar`` file into {key: float32 numpy array}.

  Accepts a bare state dict or a training checkpoint holding one under
  "state_dict" / "model" / "backbone"; strips DataParallel's "module." prefix.
  Unreadable files raise FileNotFoundError or TorchFileError (see ``read_torch_file``).
  """
  loaded = read_torch_file(path, allow_pickle)
  for field in ("state_dict", "model", "backbone"):
    if isinstance(loaded, Mapping) and isinstance(loaded.get(field), Mapping):
      loaded = loaded[field]
      break
  if not isinstance(loaded, Mapping):
    raise TorchFileError(f"{os.fspath(path)!r} holds a {type(loaded).__name__}, not a state dict "
                         f"({{name: tensor}}).")
  not_arrays = [key for key, value in loaded.items()
                if not (hasattr(value, "detach") or isinstance(value, (np.ndarray, np.generic, float, int)))]
  if not_arrays:
    raise TorchFileError(f"{os.fspath(path)!r}: entries {', '.join(map(str, not_arrays[:5]))} of the state dict are "
                         f"not tensors; expected {{name: tensor}}.")
  return state_dict_to_numpy(loaded, strip_prefixes)


def state_dict_to_numpy(state_dict: Mapping[str, Any], strip_prefixes: Iterable[str] = ("module.",)
                        ) -> dict[str, np.ndarray]:
  """{key: tensor} -> {key without `strip_prefixes`: float32 numpy array} (torch tensors or arrays)."""
  result = {}
  for key, value in state_dict.items():
    for prefix in strip_prefixes:
      if key.startswith(prefix):
        key = key[len(prefix):]
    if hasattr(value, "detach"):
      value = value.detach().cpu().float().numpy()
    result[key] = np.asarray(value, dtype=np.float32)
  return result


def to_flax_layout(torch_array: np.ndarray, flax_leaf_name: str) -> np.ndarray:
  """Transpose a PyTorch weight into the layout of the Flax leaf it fills."""
  if flax_leaf_name == "kernel" and torch_array.ndim == 4:
    return np.transpose(torch_array, (2, 3, 1, 0))
  if flax_leaf_name == "kernel" and torch_array.ndim == 2:
    return torch_array.T
  return torch_array


def torch_leaf_name(collection: str, flax_leaf_name: str) -> str:
  """The PyTorch attribute that holds a Flax leaf ('kernel' -> 'weight', batch_stats 'var' -> 'running_var' ...)."""
  if collection == "batch_stats":
    return {"mean": "running_mean", "var": "running_var"}[flax_leaf_name]
  return {"kernel": "weight", "scale": "weight"}.get(flax_leaf_name, flax_leaf_name)


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    template: Mapping[str, Any],
    torch_module_for: Callable[[tuple[str, ...]], str],
    ignore_prefixes: Iterable[str] = (),
    checkpoint_name: str = "checkpoint",
) -> dict[str, Any]:
  """Fill every leaf of `template` (Flax variables or their shapes) from `state_dict`.

  `torch_module_for(flax_module_path)` gives the PyTorch module name for a
  Flax module path, e.g. ("layer1_0", "downsample_conv") -> "layer1.0.downsample.0".
  Keys under `ignore_prefixes` (e.g. a classifier the Flax network leaves out)
  may be present and are skipped. Raises ``CheckpointMismatchError`` listing
  all missing, unexpected and mis-shaped keys; returns float32 variables with
  the template's structure otherwise.
  """
  ignore_prefixes = tuple(ignore_prefixes)
  flat_template = flax.traverse_util.flatten_dict(flax.core.unfreeze(template))
  missing, mis_shaped, converted, used = [], [], {}, set()
  for flax_path, leaf in flat_template.items():
    collection, *module_path, leaf_name = flax_path
    torch_key = f"{torch_module_for(tuple(module_path))}.{torch_leaf_name(collection, leaf_name)}"
    used.add(torch_key)
    if torch_key not in state_dict:
      missing.append(f"{torch_key} (for {'/'.join(flax_path)}, shape {tuple(leaf.shape)})")
      continue
    value = to_flax_layout(np.asarray(state_dict[torch_key], np.float32), leaf_name)
    if tuple(value.shape) != tuple(leaf.shape):
      mis_shaped.append(f"{torch_key}: checkpoint shape {tuple(state_dict[torch_key].shape)} gives "
                        f"{tuple(value.shape)}, network expects {tuple(leaf.shape)} at {'/'.join(flax_path)}")
      continue
    converted[flax_path] = value
  unexpected = sorted(
      key for key in state_dict
      if key not in used and not key.endswith(ALWAYS_IGNORED_SUFFIXES) and not key.startswith(ignore_prefixes))
  if missing or unexpected or mis_shaped:
    lines = [f"The {checkpoint_name} does not match the network; nothing was loaded."]
    for title, entries in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
      if entries:
        lines.append(f"{len(entries)} {title} key(s):")
        lines.extend(f"  {entry}" for entry in entries)
    raise CheckpointMismatchError("\n".join(lines))
  return flax.traverse_util.unflatten_dict(converted)


def variables_template(module, *example_args, **example_kwargs) -> dict[str, Any]:
  """Shapes of `module`'s variables for these example inputs, without allocating them."""
  return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *example_args, **example_kwargs))
