"""Which gRPC status code each failure gets, with a message the caller can act on.

Business logic raises WorkerError with a status code *name* (or a TARDIS error); only the transport
layer turns names into grpc.StatusCode values.
"""

from __future__ import annotations

from tardis.errors import (
    ArtifactError,
    CalibrationCancelled,
    ConfigError,
    GatedFFNError,
    TardisError,
    UnsupportedModelError,
)


class WorkerError(Exception):
    """A request the worker refuses or cannot serve; `code` is a grpc.StatusCode name."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(message: str) -> WorkerError:
    """NOT_FOUND: a path or id the request names does not exist."""
    return WorkerError("NOT_FOUND", message)


def invalid(message: str) -> WorkerError:
    """INVALID_ARGUMENT: the request itself is wrong."""
    return WorkerError("INVALID_ARGUMENT", message)


def classify(exc: BaseException) -> tuple[str, str]:
    """(status code name, message) for any exception raised while serving a request."""
    if isinstance(exc, WorkerError):
        return exc.code, exc.message
    if isinstance(exc, GatedFFNError | UnsupportedModelError | ConfigError):
        return "INVALID_ARGUMENT", str(exc)
    if isinstance(exc, ArtifactError):
        return "FAILED_PRECONDITION", str(exc)
    if isinstance(exc, CalibrationCancelled):
        return "CANCELLED", str(exc)
    if isinstance(exc, TardisError):
        return "FAILED_PRECONDITION", str(exc)
    if isinstance(exc, FileNotFoundError):
        return "NOT_FOUND", f"{exc}; check the path exists on the worker's filesystem"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "RESOURCE_EXHAUSTED", f"out of memory ({exc}); use a smaller batch_size or model, or free the device"
    return "INTERNAL", f"unexpected {type(exc).__name__}: {exc} (a worker bug; the worker log has the traceback)"
