"""TARDIS: fold the FFNs of non-gated LLMs into one d×d matrix plus an exact, predicted correction.

Public API: FoldConfig, calibrate, Variant, load (and install for in-memory models).
"""

from __future__ import annotations

from tardis._version import __version__
from tardis.calibrate import calibrate
from tardis.config import FoldConfig
from tardis.core.artifact import read_variant, verify_artifact
from tardis.engines.hf import install, load
from tardis.errors import (
    ArtifactError,
    CalibrationCancelled,
    ConfigError,
    GatedFFNError,
    TardisError,
    UnsupportedModelError,
)
from tardis.variant import Variant

__all__ = [
    "ArtifactError",
    "CalibrationCancelled",
    "ConfigError",
    "FoldConfig",
    "GatedFFNError",
    "TardisError",
    "UnsupportedModelError",
    "Variant",
    "__version__",
    "calibrate",
    "install",
    "load",
    "read_variant",
    "verify_artifact",
]
