"""The server's checks on the clients' replies (aggregation.aggregate_replies): a poisoned reply is dropped."""

import numpy as np
import pytest

from hallujax.federated import aggregation

GLOBAL = {"encoder": {"kernel": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
                      "bias": np.full((4,), 0.5, np.float32)},
          "discriminator": {"kernel": np.linspace(0, 2, 6, dtype=np.float32).reshape(2, 3)}}
LEAVES = [GLOBAL["discriminator"]["kernel"], GLOBAL["encoder"]["bias"], GLOBAL["encoder"]["kernel"]]   # tree order


def honest(partition: int) -> aggregation.Reply:
  """A client's small local update of the global model."""
  rng = np.random.default_rng(partition)
  arrays = [leaf + rng.normal(0, 0.05, leaf.shape).astype(np.float32) for leaf in LEAVES]
  return aggregation.Reply(f"node {100 + partition}", partition, arrays)


def poisoned(change):
  reply = honest(2)
  change(reply)
  return reply


def set_leaf(index, value):
  def change(reply):
    reply.arrays[index] = value
  return change


def with_value(index, value, dtype=np.float32):
  def change(reply):
    array = reply.arrays[index].astype(dtype)
    array.flat[0] = value
    reply.arrays[index] = array
  return change


HOSTILE = {
    "nan": (with_value(2, np.nan), "non-finite"),
    "+inf": (with_value(0, np.inf), "non-finite"),
    "1e30": (with_value(1, 1e30), "from the global model"),
    "float64": (lambda reply: set_leaf(2, reply.arrays[2].astype(np.float64))(reply), "float64"),
    "int32": (lambda reply: set_leaf(1, reply.arrays[1].astype(np.int32))(reply), "int32"),
    "wrong shape": (set_leaf(2, np.zeros((4, 3), np.float32)), "shape"),
    "missing array": (lambda reply: reply.arrays.pop(), "2 arrays"),
    "no arrays": (lambda reply: setattr(reply, "arrays", None), "no parameters"),
    "not an array": (set_leaf(0, [[0.0] * 3] * 2), "not an array"),
    "missing partition id": (lambda reply: setattr(reply, "partition_id", None), "partition id"),
    "partition out of range": (lambda reply: setattr(reply, "partition_id", 7), "partition id"),
    "fractional partition": (lambda reply: setattr(reply, "partition_id", 1.5), "partition id"),
    "large update": (lambda reply: setattr(reply, "arrays", [leaf * 40 for leaf in reply.arrays]), "bound"),
    "unreadable": (lambda reply: setattr(reply, "problem", "its arrays do not decode (ValueError)"), "decode"),
}


def honest_mean(partitions):
  return [np.mean([honest(k).arrays[i] for k in partitions], axis=0) for i in range(len(LEAVES))]


def leaves_of(tree):
  return [np.asarray(tree["discriminator"]["kernel"]), np.asarray(tree["encoder"]["bias"]),
          np.asarray(tree["encoder"]["kernel"])]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_poisoned_reply_is_dropped_and_the_global_model_is_the_mean_of_the_honest_ones(name, caplog):
  change, reason = HOSTILE[name]
  bad = poisoned(change)
  result, replied, dropped = aggregation.aggregate_replies([honest(0), bad, honest(1)], GLOBAL, num_partitions=4)
  assert replied == [0, 1]
  assert [sender for sender, _ in dropped] == ["node 102"] and reason in dropped[0][1]
  assert "node 102" in caplog.text and reason in caplog.text
  for leaf, expected in zip(leaves_of(result), honest_mean([0, 1])):
    assert leaf.dtype == np.float32 and np.isfinite(leaf).all()
    np.testing.assert_allclose(leaf, expected, rtol=1e-6, atol=1e-7)


def test_two_replies_claiming_one_partition_are_both_dropped():
  impostor = honest(3)
  impostor.partition_id, impostor.sender = 1, "node 999"
  result, replied, dropped = aggregation.aggregate_replies([honest(0), honest(1), impostor, honest(2)], GLOBAL, 4)
  assert replied == [0, 2] and sorted(sender for sender, _ in dropped) == ["node 101", "node 999"]
  for leaf, expected in zip(leaves_of(result), honest_mean([0, 2])):
    np.testing.assert_allclose(leaf, expected, rtol=1e-6, atol=1e-7)


def test_honest_replies_are_all_averaged_and_no_usable_reply_gives_none():
  result, replied, dropped = aggregation.aggregate_replies([honest(2), honest(0), honest(1)], GLOBAL, 3)
  assert replied == [0, 1, 2] and dropped == []
  for leaf, expected in zip(leaves_of(result), honest_mean([0, 1, 2])):
    np.testing.assert_allclose(leaf, expected, rtol=1e-6, atol=1e-7)
  result, replied, dropped = aggregation.aggregate_replies([poisoned(with_value(0, np.nan))], GLOBAL, 3)
  assert result is None and replied == [] and len(dropped) == 1


def test_the_saved_global_model_after_a_poisoned_round_is_finite_and_the_honest_mean(tmp_path):
  pytest.importorskip("flwr")
  from hallujax.federated import flower
  bad = poisoned(with_value(2, np.inf))
  bad.partition_id = 1                      # also claims an honest client's partition
  result, replied, _ = aggregation.aggregate_replies([honest(0), bad, honest(2)], GLOBAL, 3)
  path = flower.save_global(str(tmp_path), 0, result, replied)
  saved, metadata = flower.load_global(path, GLOBAL)
  assert metadata == {"round": 0, "replied": [0, 2]}
  for leaf, expected in zip(leaves_of(saved), honest_mean([0, 2])):
    assert np.isfinite(leaf).all()
    np.testing.assert_allclose(leaf, expected, rtol=1e-6, atol=1e-7)
