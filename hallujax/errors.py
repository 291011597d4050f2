"""The project's errors: the ground floor, importable from every module without climbing.

Commands (``hallujax.cli.run``) end each in one line: a :class:`UserError` (and
the other user errors) with exit status 2, :class:`WorkdirInUseError` with 2,
:class:`NonFiniteError` with 1, :class:`Interrupted` with 130.
"""

from __future__ import annotations

EXIT_USAGE = 2


class UserError(ValueError):
  """A mistake the user can fix; its message says what was wrong and what to do."""


class WorkdirInUseError(RuntimeError):
  """Another run holds the workdir's lock."""


class NonFiniteError(FloatingPointError):
  """A loss or an updated state leaf became NaN or infinite; the message names the step, the leaves and the
  last good checkpoint."""


class Interrupted(Exception):
  """The run stopped on Ctrl-C / SIGTERM after saving (the message says where)."""
