"""Errors the user can act on, printed by the CLI as one line."""


class L7ctlError(Exception):
    """A failure with a message fit for the operator."""
