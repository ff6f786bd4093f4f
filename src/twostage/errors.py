"""The one error type for bad user input (a file, an option, a config value), and its helpers.

The CLI turns it into one line on stderr and exit code 2. Messages name the file or option and
quote values through `short`, so a huge value never floods the terminal.
"""

from typing import Any

SHORT_LIMIT = 80  # characters of a value quoted in a message


class UserError(Exception):
    """Bad input from the user: a file that cannot be read, an unknown option value, ..."""


class InputWarning(UserWarning):
    """Input used with a caveat the user should know (e.g. only the first frame of a GIF)."""


def short(value: Any, *, quote: bool = True) -> str:
    """`repr(value)` (or `str` when not `quote`), cut to SHORT_LIMIT characters with "…"."""
    text = repr(value) if quote else str(value)
    return text if len(text) <= SHORT_LIMIT else text[: SHORT_LIMIT - 1] + "…"
