"""Errors a user can act on: each names the input, what was expected, and what to do."""

from __future__ import annotations


class TardisError(Exception):
    """Base class for every error TARDIS raises on purpose."""


class GatedFFNError(TardisError):
    """The model's FFN is gated (SwiGLU/GeGLU), which cannot be folded."""


class UnsupportedModelError(TardisError):
    """No adapter knows this model family."""


class ArtifactError(TardisError):
    """A variant artifact is missing a file, or a file does not match its recorded hash."""


class ConfigError(TardisError, ValueError):
    """A FoldConfig value is out of its allowed range."""


class CalibrationCancelled(TardisError):
    """Calibration stopped because the caller asked it to (cooperative cancellation)."""
