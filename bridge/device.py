"""Moved to `core.device` (the base layer); this path re-exports its names so old imports keep working."""
from core.device import (  # noqa: F401
    DEVICE_CHOICES,
    DeviceUnavailableError,
    autocast,
    inference,
    resolve_device,
    set_threads,
    to_device,
    to_numpy,
    torch_threads,
)
