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

torch is an optional extra (``pip install hallujax[torch]``): it is imported
only inside ``load_torch_state_dict``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Mapping

import flax
import jax
import numpy as np

# Buffers PyTorch keeps that no Flax network here needs.
ALWAYS_IGNORED_SUFFIXES = ("num_batches_tracked",)


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the network: lists every missing, unexpected and mis-shaped key."""


def load_torch_state_dict(path: str | os.PathLike, strip_prefixes: Iterable[str] = ("module.",)
                          ) -> dict[str, np.ndarray]:
  """Read a ``.pt`` / ``.pth`` / ``.pth.tar`` file into {key: float32 numpy array}.

  Accepts a bare state dict or a training checkpoint holding one under
  "state_dict" / "model" / "backbone"; strips DataParallel's "module." prefix.
  """
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError(
        "Reading PyTorch checkpoints needs torch: pip install 'hallujax[torch]' (or pip install torch)."
    ) from error
  if not os.path.exists(path):
    raise FileNotFoundError(f"No checkpoint at {os.fspath(path)!r}.")
  loaded = torch.load(path, map_location="cpu", weights_only=True)
  for field in ("state_dict", "model", "backbone"):
    if isinstance(loaded, Mapping) and isinstance(loaded.get(field), Mapping):
      loaded = loaded[field]
      break
  if not isinstance(loaded, Mapping):
    raise ValueError(f"{os.fspath(path)!r} holds a {type(loaded).__name__}, not a state dict.")
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
