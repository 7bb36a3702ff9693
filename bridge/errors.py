"""Moved to `core.errors` (the base layer); this path re-exports its names so old imports keep working."""
from core.errors import (  # noqa: F401
    BridgeMismatchError,
    CheckpointError,
    EmergentBridgeError,
    InputError,
    MissingDependencyError,
)
