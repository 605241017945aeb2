"""The one exception type users see: a single line naming what is wrong and where."""


class LmtuneError(Exception):
    """A problem with the user's input (config, data, run directory): printed as one line, exit 2."""
