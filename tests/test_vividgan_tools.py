"""VividGAN's table tools: Table II's yaw grouping, Table IV's parameter counts, Table VII's confusion."""

import jax
import numpy as np

from configs import vividgan as vividgan_config
from hallujax import scoring
from hallujax.data import faceworld_params
from hallujax.methods import vividgan
from hallujax.tools import vividgan_efficiency, vividgan_expression


def test_the_paper_yaw_set_groups_by_exact_magnitude_and_continuous_yaw_by_15_degree_buckets():
  signed = np.array(faceworld_params.signed_yaws(faceworld_params.PAPER_YAW_SET))
  groups, labels = scoring.yaw_groups(np.concatenate([signed, signed[:3]]))
  assert labels == ["±15°", "±22°", "±30°", "±40°", "±45°", "±55°", "±60°", "±75°", "±90°"]
  assert groups[0] == groups[17] == 8 and groups[8] == groups[9] == 0 and groups[-1] == 6   # ±90, ±15, -60
  continuous = np.random.default_rng(0).uniform(-90, 90, 200)
  groups, labels = scoring.yaw_groups(continuous)
  assert labels[0] == "0-15°" and labels[-1] == "75-90°" and len(labels) == 6
  np.testing.assert_array_equal(groups, np.floor(np.abs(continuous) / 15).astype(int))


def test_table_iv_counts_the_test_time_generators_of_the_paper_configuration():
  method = vividgan.make(vividgan_config.get_config(""))
  counts = vividgan_efficiency.parameter_counts(method)
  assert set(counts) == {"coarse", "landmarks", "touching_up", "fine", "coarse_discriminator", "fine_discriminator"}
  assert 18e6 < counts["coarse"] < 19e6 and 30e6 < counts["fine"] < 31.5e6   # docs/vividgan.md's figures
  # The host-made random state has init's structure (no compiled init needed to time a forward).
  state = vividgan_efficiency.random_state(vividgan.make(vividgan_config.get_config("tiny")))
  abstract = jax.eval_shape(vividgan.make(vividgan_config.get_config("tiny")).init, jax.random.key(0))
  assert jax.tree.structure(state) == jax.tree.structure(abstract)
  assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(abstract)))


def test_confusion_counts_true_rows_and_predicted_columns():
  counts = vividgan_expression.confusion(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
  np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [0, 1, 0]])
