"""Domain errors raised by service logic; each carries the gRPC status it maps to."""

from __future__ import annotations

import grpc


class RecsysError(Exception):
    """Base class; the message says what was wrong and names the field."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(RecsysError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field


class NotFound(RecsysError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(RecsysError):
    code = grpc.StatusCode.UNAVAILABLE
