"""How notes and wrapping errors name a failure they do not handle (hallujax.errors)."""

from hallujax import errors


def test_a_failure_is_named_by_its_type_and_first_non_blank_line():
  error = RuntimeError("\n  the file does not open  \nTraceback details the user does not need")
  assert errors.first_line(error) == "the file does not open"
  assert errors.named_first_line(error) == "RuntimeError: the file does not open"
  assert len(errors.first_line(ValueError("x" * 5000))) == 300   # one dump-sized line stays one readable note


def test_an_empty_message_is_named_by_its_type_instead_of_failing():
  # An exception with no text (a bare `raise KeyError()` in a decoder) must still give a note, not an IndexError.
  for error in (EOFError(), EOFError("  \n ")):
    assert errors.first_line(error) == "EOFError"
    assert errors.named_first_line(error) == "EOFError"
