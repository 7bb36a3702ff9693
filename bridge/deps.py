"""Moved to `core.deps` (the base layer); this path re-exports its names so old imports keep working."""
from core.deps import (  # noqa: F401
    lazy_attributes,
    quiet_transformers,
    require,
)
