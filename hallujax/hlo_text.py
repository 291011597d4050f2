"""Counting a compiled program's optimized HLO: the benchmark's "HLO ops" column and hallujax.tools.hlo_report
read the same instructions (stdlib only, so the benchmark library needs nothing from the tools)."""

from __future__ import annotations

import re

INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*\S+\s+([\w\-]+)\(")


def hlo_instructions(hlo_text: str) -> list[str]:
  """The instruction lines of an HLO module's text, in every computation (fusion bodies included)."""
  return [line for line in hlo_text.splitlines() if INSTRUCTION.match(line)]


def program_texts(compiled) -> list[str]:
  text = compiled.as_text()
  return text if isinstance(text, list) else [text]


def hlo_op_count(compiled) -> int:
  """Instructions in a compiled program's optimized HLO module (all computations): its size, as compiled."""
  return sum(len(hlo_instructions(text)) for text in program_texts(compiled))
