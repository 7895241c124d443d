"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class UserError(Exception):
    """A mistake the user can fix (missing file, bad config value, wrong file format)."""
