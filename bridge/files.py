"""Moved to `core.files` (the base layer); this path re-exports its names so old imports keep working."""
from core.files import (  # noqa: F401
    atomic_path,
    atomic_write,
    atomic_write_json,
    fsync_dir,
    user_cache_dir,
)
