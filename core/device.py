"""Where the networks run: `--device auto|cpu|cuda|mps`, one autocast policy, float32 numpy out,
and how many CPU threads torch uses (`set_threads`, `torch_threads`: the one place that sets them).

Encoders (backbones), the bridge's heads and G run on one torch device; everything that
leaves them (features, bridged vectors, caches, checkpoints) is float32 numpy or CPU
tensors, so nothing on disk depends on where it was computed.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> with autocast(resolve_device("cpu")):   # a no-op on CPU: float32 stays float32
    ...     pass
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from core.deps import require
from core.errors import EmergentBridgeError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


class DeviceUnavailableError(EmergentBridgeError, RuntimeError):
    """A device was asked for that this machine (or this torch build) does not have."""


def resolve_device(name: Any = "auto") -> Any:
    """`"auto"` (CUDA when available, else CPU), `"cpu"`, `"cuda"`, `"cuda:1"`, `"mps"`, or a
    `torch.device` -> a `torch.device` that exists here; raises DeviceUnavailableError otherwise.

    Example:
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    torch = require("torch", "choosing a device")
    if isinstance(name, torch.device):
        name = str(name)
    text = str(name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind = text.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise DeviceUnavailableError(f"unknown device {name!r}: choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    if kind == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}"
            raise DeviceUnavailableError(
                f"--device {text}: no CUDA device is available here ({build}); "
                "use --device auto or --device cpu, or check the driver with nvidia-smi"
            )
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) here")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceUnavailableError(f"--device {text}: Apple MPS is not available here; use --device cpu")
    return torch.device(text)


def autocast(device: Any) -> contextlib.AbstractContextManager:
    """Mixed precision for frozen-encoder forward passes: bf16 on CUDA where the GPU has it
    (fp16 otherwise), a no-op on CPU and MPS (CPU bf16 is slower than fp32 on most CPUs, and
    float32 on CPU keeps cached features bit-stable).

    Example:
        >>> import torch
        >>> with autocast(torch.device("cpu")):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.float32
    """
    torch = require("torch")
    device = resolve_device(device)
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def to_device(array: np.ndarray, device: Any) -> Any:
    """numpy -> tensor on `device`; on CUDA through pinned memory with a non-blocking copy, so
    the host side (decode, preprocessing of the next batch) overlaps the transfer."""
    torch = require("torch")
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def to_numpy(tensor: Any) -> np.ndarray:
    """Any tensor (any device, any float dtype) -> float32 numpy on the host."""
    return tensor.detach().float().cpu().numpy().astype(np.float32, copy=False)


@contextlib.contextmanager
def inference(device: Any) -> Iterator[None]:
    """`torch.inference_mode()` plus `autocast(device)`: how every backbone runs its forward pass."""
    torch = require("torch")
    with torch.inference_mode(), autocast(device):
        yield


# ---------------------------------------------------------------------- CPU threads


def set_threads(n: int | None, *, import_torch: bool = True) -> int | None:
    """Set torch's intra-op threads for this process and return the count it had (None: not set).

    `n=None` leaves torch's own default and imports nothing. With `import_torch=False` only a
    torch this process has already imported is touched (decode workers that never load it stay
    light). Measured on 2 busy cores: 1 thread trained 4x faster than torch's default.

    Example:
        >>> set_threads(None) is None
        True
    """
    if n is None:
        return None
    if n < 1:
        raise ValueError(f"--threads must be at least 1, got {n}")
    if import_torch and importlib.util.find_spec("torch") is not None:
        import torch
    else:
        torch = sys.modules.get("torch")
    if torch is None:  # nothing to set: the tiny preset and the store run without torch
        return None
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    return before


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """`set_threads(n)` for a block, restoring the count torch had before (None: no change)."""
    before = set_threads(n)
    try:
        yield
    finally:
        if before is not None:
            set_threads(before)


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """numpy's BLAS (OpenBLAS) at `n` threads for a block, restored after; a no-op without threadpoolctl.

    Indexing runs it at 1: our numpy products are small (YAMNet's mel filterbank, the label-space
    heads), and a second BLAS thread only competes with the readers, the writer and the encoder's own
    threads. Measured on 2 quiet cores, default torch threads, `scripts/bench_index.py --zero-training`:
    FSDD audio 505 -> 622 items/s, CIFAR-10 images 72 -> 79 items/s.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield
