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


# Notes and wrapping errors name a failure they do not handle by its first line, cut at 300 characters so that
# a note stays one line; the whole text and the traceback stay on the chained exception (`raise ... from error`).
# hallujax.cli.first_line differs on purpose (a command's own one-line message, see there).


def first_line(error: BaseException) -> str:
  """The first non-blank line of `error`'s message, stripped and cut at 300 characters; its type's name if it has none."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0][:300] if lines else type(error).__name__


def named_first_line(error: BaseException) -> str:
  """"ValueError: <first line>" (:func:`first_line`); the type's name alone when the message is empty."""
  return f"{type(error).__name__}: {first_line(error)}" if str(error).strip() else type(error).__name__
