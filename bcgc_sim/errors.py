"""The one exception type for mistakes a user can make (bad config, bad input file, ...)."""


class UserError(Exception):
    """A problem the user can fix; the CLI prints its message as one line and exits with status 2."""
