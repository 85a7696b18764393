"""The error type for problems a user can fix (bad input, missing files, wrong model)."""

from __future__ import annotations

import click


class UserError(click.ClickException):
    """A clear one-line message for the user; the CLI exits with status 1."""
