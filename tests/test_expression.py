"""The expression classifier of VividGAN's Table VII: frontal faces, seven expressions, learns on unseen people."""

import functools

import jax
import numpy as np

from configs import expression as expression_config
from hallujax.data.faceworld import EXPRESSIONS
from hallujax.data.pipeline import PrepareExample
from hallujax.data.sources import make_source
from hallujax.methods import expression, get_method


def faces(config, split, count):
  source, prepare = make_source(config.data, split), PrepareExample(config.data)
  examples = [prepare.map(source[index]) for index in range(count)]
  return {key: np.stack([e[key] for e in examples]) for key in ("target", "expression", "identity", "yaw")}


def test_configs_give_frontal_faces_of_people_vividgan_never_sees():
  for variant, size in (("", 128), ("smoke", 64), ("tiny", 32)):
    config = expression_config.get_config(variant)
    assert config.data.target_size == size
    assert (config.data.max_yaw, config.data.max_pitch, config.data.max_roll) == (0.0, 0.0, 0.0)
    assert config.data.world_seed != 0 and config.data.identity_split == "disjoint"
  assert get_method(expression_config.get_config("tiny").method) is expression


def test_a_short_run_names_expressions_of_held_out_people_better_than_the_majority_class():
  config = expression_config.get_config("tiny")
  train, held_out = faces(config, "train", 1024), faces(config, "validation", 192)
  assert not set(train["identity"]) & set(held_out["identity"])   # unseen people
  assert np.all(held_out["yaw"] == 0.0) and set(held_out["expression"]) == set(range(len(EXPRESSIONS)))
  method = expression.make(config)
  state = jax.jit(method.init)(jax.random.key(0))
  step = jax.jit(functools.partial(method.steps["train"], frozen={}, rng=None))
  evaluate = jax.jit(functools.partial(method.eval_step, frozen={}))
  order = np.random.default_rng(0).permutation(np.tile(np.arange(1024), 19))
  for index in range(600):
    rows = order[index * 32:(index + 1) * 32]
    state, metrics = step(state, batch={k: train[k][rows] for k in ("target", "expression")})
  accuracy = float(np.mean(evaluate(state, batch={k: held_out[k] for k in ("target", "expression")})[
      "expression_accuracy"]))
  majority = np.max(np.bincount(held_out["expression"])) / len(held_out["expression"])
  assert accuracy > majority + 0.08, f"held-out accuracy {accuracy:.3f}, majority class {majority:.3f}"
  # Logits of any face size: a 64² face is read at the classifier's 32².
  logits = expression.classify_function(config)(state, jax.image.resize(held_out["target"][:4], (4, 64, 64, 3),
                                                                         "bilinear"))
  assert logits.shape == (4, len(EXPRESSIONS)) and np.all(np.isfinite(logits))
