"""The one error type for bad user input (a file, an option, a config value).

The CLI turns it into one line on stderr and exit code 2. Messages name the file or option.
"""


class UserError(Exception):
    """Bad input from the user: a file that cannot be read, an unknown option value, ..."""
