"""The error a request can end in: :class:`ServeError`, answered as a 4xx JSON error."""

from __future__ import annotations


class ServeError(Exception):
    """A request the service refuses: becomes a 4xx JSON error (never a 500)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
