"""The error the `charzoo` command prints as one line, without a traceback."""


class UserError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""
