"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class RelrecError(Exception):
    """Base class for errors that are the user's input, not a bug."""


class InputError(RelrecError):
    """Bad input data: names the file, the row (1-based, header = row 1) and the column."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 column: str | None = None):
        self.file, self.row, self.column, self.reason = file, row, column, message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{': '.join([', '.join(where)] if where else [])}{': ' if where else ''}{message}")


class RunDirError(RelrecError):
    """A run directory is missing a stage's output or is corrupt."""
