"""python -m hallujax.tools.vividgan_symmetry --config configs/vividgan.py:tiny [--examples 256] [--split test]

How mirror-symmetric a config's frontal targets are: the mean over `--examples` targets of the split of
VividGAN's own symmetry loss L_sys (paper 002, Eq. 3, ``hallujax.methods.vividgan.mirror_symmetry_loss``:
‖flip(h) − h‖² as a mean over pixels, images in [-1, 1]), printed once as the config gives it and once
with the face world's ``data.symmetric_frontal`` flipped, so the option's effect on the targets is one
command. L_sys pulls outputs towards mirror images; it can only help when the ground truth is near one.
"""

from __future__ import annotations

import numpy as np
from absl import flags
from ml_collections import config_flags

from hallujax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "VividGAN config, e.g. configs/vividgan.py:tiny.")
_EXAMPLES = flags.DEFINE_integer("examples", 256, "Targets of the split to average over.")
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Data split.")
flags.mark_flags_as_required(["config"])


def target_symmetry_loss(data_config, split: str, examples: int) -> float:
  """Mean L_sys (Eq. 3) of the first `examples` targets of `split` (the face world's frontal views)."""
  from hallujax.images import to_unit_range   # pylint: disable=import-outside-toplevel
  from hallujax.data.sources import make_source   # pylint: disable=import-outside-toplevel
  data_config = data_config.copy_and_resolve_references()
  data_config.eval_size = data_config.train_size = max(examples, 1)
  source = make_source(data_config, split)
  losses = []
  for index in range(examples):
    target = to_unit_range(source[index]["target"])
    losses.append(np.mean(np.square(target[:, ::-1] - target)))
  return float(np.mean(losses))


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _EXAMPLES.value < 1:
    raise cli.UserError(f"--examples={_EXAMPLES.value}; expected at least 1.")
  config = _CONFIG.value
  if config.data.source != "faceworld":
    raise cli.UserError(f"config.data.source={config.data.source!r}: data.symmetric_frontal is a face-world option; "
                        f"use a face-world config.")
  given = bool(config.data.symmetric_frontal)
  for symmetric in (given, not given):
    data_config = config.data.copy_and_resolve_references()
    data_config.symmetric_frontal = symmetric
    loss = target_symmetry_loss(data_config, _SPLIT.value, _EXAMPLES.value)
    note = "the config" if symmetric == given else "flipped"
    print(f"data.symmetric_frontal={symmetric!s:<5} ({note}): targets' L_sys = {loss:.5f} "
          f"(mean of {_EXAMPLES.value} {config.data.target_size}² {_SPLIT.value} targets, [-1, 1] images)")


if __name__ == "__main__":
  cli.run(main)
