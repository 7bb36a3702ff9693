"""The project's error types: one for bad inputs, one for missing optional packages."""
from __future__ import annotations

from pathlib import Path


class EmergentBridgeError(Exception):
    """Base class: every error the library raises on purpose derives from it."""


class InputError(EmergentBridgeError, ValueError):
    """A file (or in-memory item) that cannot be used, with the reason.

    Example:
        >>> str(InputError("a.wav", "zero-length audio"))
        'a.wav: zero-length audio'
    """

    def __init__(self, source: str | Path, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class MissingDependencyError(EmergentBridgeError, ImportError):
    """An optional package is needed for this feature and is not installed."""


class BridgeMismatchError(EmergentBridgeError):
    """An index was built with another bridge (preset, checkpoint or dims)."""


class CheckpointError(EmergentBridgeError):
    """A bridge checkpoint folder that cannot be used: missing, garbled, truncated, altered or unreadable."""
