"""hallujax.tools.hlo_report: a Python loop of N blocks is named, with a size that grows with N."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from hallujax.hlo_text import hlo_op_count
from hallujax.tools import hlo_report

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = str(REPO / "tests" / "tiny.py")


class Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    return jnp.tanh(nn.Dense(4)(x)) * 0.5 + x


class Tower(nn.Module):
  """`blocks` residual blocks written as a Python loop: each one unrolls into the program."""
  blocks: int

  @nn.compact
  def __call__(self, x):
    for _ in range(self.blocks):
      x = Block()(x)   # the loop line
    return jnp.sum(x)


class ScanTower(nn.Module):
  """The same blocks as one nn.scan: the program holds one block whatever their number."""
  blocks: int

  @nn.compact
  def __call__(self, x):
    body = nn.scan(lambda module, carry, _: (Block()(carry), None), variable_axes={"params": 0},
                   split_rngs={"params": True}, length=self.blocks)
    return jnp.sum(body(self, x, None)[0])


def gradient_program(module):
  x = jnp.ones((2, 4))
  params = module.init(jax.random.key(0), x)
  return jax.jit(jax.grad(lambda p: module.apply(p, x))).trace(params)


def test_a_python_loop_over_blocks_is_named_and_grows_with_the_loop():
  programs = {n: hlo_report.jaxpr_ops(gradient_program(Tower(n)).jaxpr) for n in (2, 4, 6)}
  by_scope = dict(hlo_report.contributors(programs[6], "scope", depth=2))
  blocks = {name: count for name, count in by_scope.items() if name.startswith("Tower/Block_")}
  assert sorted(blocks) == [f"Tower/Block_{i}" for i in range(6)]
  # Blocks 1-5 are one block's ops each (block 0's backward needs no gradient for the tower's input).
  assert len({blocks[f"Tower/Block_{i}"] for i in range(1, 6)}) == 1

  def loop_line(ops):
    """Ops made by a Block called from the Tower's loop line (depth 2: the layer's line < the caller's)."""
    lines = dict(hlo_report.contributors(ops, "line", depth=2))
    (count,) = [count for name, count in lines.items()
                if name.startswith("tests/test_hlo_report.py") and "(Block.__call__) < " in name
                and name.endswith("(Tower.__call__)")]
    return count
  # Two more blocks, one more block's ops at that line each time; nothing else in the program grows.
  per_block = blocks["Tower/Block_1"]
  assert loop_line(programs[4]) - loop_line(programs[2]) == 2 * per_block
  assert loop_line(programs[6]) - loop_line(programs[4]) == 2 * per_block
  assert len(programs[6]) - loop_line(programs[6]) == len(programs[2]) - loop_line(programs[2])


def test_a_scanned_tower_does_not_grow_and_the_optimized_module_agrees():
  scanned = [len(hlo_report.jaxpr_ops(gradient_program(ScanTower(n)).jaxpr)) for n in (2, 6)]
  assert scanned[0] == scanned[1]
  unrolled = [hlo_op_count(gradient_program(Tower(n)).lower().compile()) for n in (2, 6)]
  rolled = [hlo_op_count(gradient_program(ScanTower(n)).lower().compile()) for n in (2, 6)]
  assert unrolled[1] > unrolled[0] + 20 and rolled[1] == rolled[0]
  # The optimized module's metadata names the blocks too.
  ops = hlo_report.hlo_ops(gradient_program(Tower(6)).lower().compile().as_text())
  scopes = {name for name, _ in hlo_report.contributors(ops, "scope", depth=2)}
  assert {f"Tower/Block_{i}" for i in range(6)} <= scopes
  lines = {name for name, _ in hlo_report.contributors(ops, "line", depth=2)}
  assert any(name.startswith("tests/test_hlo_report.py") and name.endswith("(Tower.__call__)") for name in lines)


def test_clean_scope_drops_programs_and_transforms():
  assert hlo_report.clean_scope("jit(step)/jit(main)/transpose(jvp(Generator))/block_0/Dense_0") == \
      "Generator/block_0/Dense_0"
  assert hlo_report.clean_scope("jvp()/vmap(Critic)/while/body") == "Critic/while/body"


def test_command_reports_a_methods_step_and_rejects_an_unknown_step():
  command = [sys.executable, "-m", "hallujax.tools.hlo_report", f"--config={TINY}", "--top=3"]
  done = subprocess.run(command + ["--step=all"], capture_output=True, text=True, cwd=REPO, timeout=300)
  assert done.returncode == 0, done.stderr
  assert "step warmup (jaxpr)" in done.stdout and "step main (jaxpr)" in done.stdout
  assert " ops in " in done.stdout
  wrong = subprocess.run(command + ["--step=nope"], capture_output=True, text=True, cwd=REPO, timeout=300)
  assert wrong.returncode == 2 and "--step=nope" in wrong.stderr and "warmup" in wrong.stderr
