"""The server's one error type: a status and the one sentence the client gets as `{"error": ...}`."""
from __future__ import annotations

from core.errors import InputError


class ApiError(Exception):
    """An answer other than 200, with the one sentence the client gets as `{"error": ...}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def as_api_error(exc: BaseException | None) -> BaseException:
    if isinstance(exc, InputError):
        return ApiError(400, exc.reason)
    return exc if exc is not None else RuntimeError("encoding failed")
