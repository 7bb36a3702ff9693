"""The six modalities: how each is recognised, decoded and preprocessed the way its field does it.

Loaders return *canonical* arrays, independent of any encoder:

| modality | canonical form |
|---|---|
| text    | `str` (UTF-8, stripped, non-empty) |
| image   | `uint8 (H, W, 3)` RGB |
| depth   | `float32 (H, W)` metres, 0 where the sensor has no reading |
| thermal | `float32 (H, W)` relative temperature in [0, 1] (no RGB statistics) |
| audio   | `float32 (n,)` mono at 16 kHz |
| video   | `uint8 (T, H, W, 3)` evenly sampled RGB frames |

Every bad input raises `InputError(path, reason)`; nothing returns `None`.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.deps import require
from bridge.errors import InputError

MODALITIES: tuple[str, ...] = ("text", "image", "audio", "depth", "thermal", "video")
SAMPLE_RATE = 16_000
MAX_IMAGE_PIXELS = 50_000_000  # refuse decompression bombs well before they eat memory

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
AUDIO_EXTS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
TEXT_EXTS = {".txt", ".md"}
ARRAY_EXTS = {".npy"}

# Folder or file-name words that say a grey picture is a depth map or a thermal frame.
_DEPTH_WORDS = re.compile(r"(^|[^a-z])(depth|disparity|depths)([^a-z]|$)")
_THERMAL_WORDS = re.compile(r"(^|[^a-z])(thermal|infrared|lwir|ir|flir)([^a-z]|$)")


def check_modality(modality: str) -> str:
    """Return `modality` if known, else raise a ValueError listing the known ones."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    return modality


def detect_modality(path: str | Path, root: str | Path | None = None) -> str | None:
    """Guess a file's modality from its extension, its path words and (for PNG/TIFF) its pixels.

    Returns None for files no modality reads. Depth and thermal are told apart from
    ordinary pictures by a path word (`depth/`, `_ir.png`, `thermal/`...) or, for
    depth, by 16-bit single-channel pixels, which is how RGB-D sensors store it.
    With `root`, only the words of the path below `root` count: the folders a dataset
    happens to sit in (`~/ir-archive/photos`) say nothing about its files.

    Example:
        >>> detect_modality("scans/depth/0001.png") == "depth"
        True
        >>> detect_modality("/data/depth_project/photos/1.jpg", root="/data/depth_project")
        'image'
    """
    path = Path(path)
    ext = path.suffix.lower()
    named = path
    if root is not None:
        try:
            named = path.relative_to(root)
        except ValueError:
            named = Path(path.name)  # not under root: trust no folder, only the file name
    words = named.with_suffix("").as_posix().lower().replace("\\", "/")
    if ext in AUDIO_EXTS:
        return "audio"
    if ext in VIDEO_EXTS:
        return "video"
    if ext in TEXT_EXTS:
        return "text"
    if ext in ARRAY_EXTS:
        return "thermal" if _THERMAL_WORDS.search(words) and not _DEPTH_WORDS.search(words) else "depth"
    if ext in IMAGE_EXTS:
        if _DEPTH_WORDS.search(words):
            return "depth"
        if _THERMAL_WORDS.search(words):
            return "thermal"
        if ext in {".png", ".tif", ".tiff"} and _is_16bit_grey(path):
            return "depth"
        return "image"
    return None


def _is_16bit_grey(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode in {"I;16", "I;16B", "I;16L", "I"}
    except Exception:  # detection only; the loader reports the real error
        return False


# ---------------------------------------------------------------------------- loaders


def load(modality: str, source: Any) -> Any:
    """Decode `source` (a path, or an in-memory value) into the modality's canonical form.

    Example:
        >>> load("text", "a spoken seven")
        'a spoken seven'
    """
    check_modality(modality)
    return _LOADERS[modality](source)


def load_text(source: str | Path) -> str:
    if isinstance(source, Path) or (isinstance(source, str) and _looks_like_text_file(source)):
        path = Path(source)
        raw = _read_bytes(path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(path, f"not UTF-8 text (byte {exc.start})") from None
        name = path
    else:
        text, name = str(source), "<text>"
    text = text.strip()
    if not text:
        raise InputError(name, "empty text")
    return text


def _looks_like_text_file(value: str) -> bool:
    return Path(value).suffix.lower() in TEXT_EXTS and names_a_file(value)


def names_a_file(value: str) -> bool:
    """Whether a string is the path of an existing file, without ever raising: a string that
    cannot be a path (too long, a newline, a NUL byte) is simply not one. Used to tell a
    query file from a query text.

    Example:
        >>> names_a_file("a spoken seven " * 40)
        False
    """
    if not value or "\n" in value or "\0" in value or len(value) > 4096:
        return False
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # e.g. ENAMETOOLONG: a component over 255 bytes
        return False


def load_image(source: str | Path | np.ndarray) -> np.ndarray:
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise InputError("<array>", f"an image must be (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(arr[..., :3])
    im = _open_picture(Path(source))
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_depth(source: str | Path | np.ndarray) -> np.ndarray:
    """Depth in metres. 16-bit PNG/TIFF are millimetres (Kinect, NYU, SUN RGB-D convention);
    `.npy` and float arrays are metres already."""
    if isinstance(source, np.ndarray):
        name, arr = "<array>", source.astype(np.float32)
    else:
        path = Path(source)
        name = str(path)
        if path.suffix.lower() == ".npy":
            arr = _load_npy(path).astype(np.float32)
        else:
            im = _open_picture(path)
            raw = np.asarray(im)
            # 16-bit integer maps hold millimetres; an 8-bit map has no unit, so read it as [0, 10] m.
            arr = raw.astype(np.float32) / (1000.0 if raw.dtype in (np.uint16, np.int32) else 25.5)
    arr = _single_channel(arr, name)
    arr = np.where(np.isfinite(arr) & (arr > 0), arr, 0.0).astype(np.float32)
    if not (arr > 0).any():
        raise InputError(name, "depth map has no valid (positive, finite) readings")
    return arr


def load_thermal(source: str | Path | np.ndarray) -> np.ndarray:
    """Thermal frames are single-channel intensities (8-bit, 16-bit radiometric or float);
    scaled to [0, 1] by the frame's own range, never by RGB statistics."""
    if isinstance(source, np.ndarray):
        name, arr = "<array>", source
    else:
        path = Path(source)
        name = str(path)
        arr = _load_npy(path) if path.suffix.lower() == ".npy" else np.asarray(_open_picture(path))
    if arr.ndim == 3 and arr.shape[2] in (3, 4):  # false-colour or grey saved as RGB: use luminance
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    arr = _single_channel(arr.astype(np.float32), name)
    if not np.isfinite(arr).all():
        raise InputError(name, "thermal frame has non-finite values")
    lo, hi = float(arr.min()), float(arr.max())
    return ((arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)).astype(np.float32)


def load_audio(source: str | Path | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
    """Decode with soundfile, mix to mono, resample to 16 kHz with torchaudio.

    An array source is taken at `sample_rate` (16 kHz if not given)."""
    if isinstance(source, np.ndarray):
        name, wave, sr = "<array>", source.astype(np.float32), sample_rate or SAMPLE_RATE
    else:
        sf = require("soundfile", "audio decoding")
        path = Path(source)
        name = str(path)
        _read_bytes(path, only_check=True)
        try:
            wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError for bad files
            raise InputError(path, f"cannot decode audio ({_short(exc)})") from None
        declared = _wav_declared_frames(path)
        if declared is not None and wave.shape[0] < declared:
            # libsndfile reads what is there and only warns; a cut-off recording must not pass as whole.
            raise InputError(path, f"truncated: {wave.shape[0]} of {declared} frames")
        wave = wave.mean(axis=1)
    if wave.ndim == 2:
        wave = wave.mean(axis=0 if wave.shape[0] < wave.shape[1] else 1)
    if wave.ndim != 1:
        raise InputError(name, f"audio must be 1-D or (channels, samples), got {wave.shape}")
    if wave.size == 0:
        raise InputError(name, "zero-length audio")
    if not np.isfinite(wave).all():
        raise InputError(name, "audio has non-finite samples")
    return resample(wave, sr, SAMPLE_RATE)


# WAV format tags whose block_align is exactly one frame (PCM, IEEE float, A-law, mu-law, extensible).
_WAV_FRAME_FORMATS = {0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE}


def _wav_declared_frames(path: Path) -> int | None:
    """The frame count a RIFF/WAVE header declares (data chunk size / block align), or None when
    the file is no WAV, the header does not say (streaming writers leave 0 or 0xFFFFFFFF) or the
    codec packs several frames per block."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if kind == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    if len(fmt) < 16:
                        return None
                    tag, _, _, _, block_align = struct.unpack("<HHIIH", fmt[:14])
                    if tag not in _WAV_FRAME_FORMATS or not block_align:
                        return None
                elif kind == b"data":
                    if block_align is None or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size & 1), 1)
    except OSError:
        return None


def resample(wave: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (torchaudio's sinc interpolation)."""
    if sr == target:
        return wave.astype(np.float32)
    torch = require("torch", "audio resampling")
    taf = require("torchaudio.functional", "audio resampling")
    out = taf.resample(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), sr, target)
    return out.numpy()


def audio_clips(wave: np.ndarray, clip_seconds: float, max_clips: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Cut a waveform into fixed-length clips, as ImageBind does: a short file is
    zero-padded into one clip; a long one gives up to `max_clips` evenly spaced clips,
    whose embeddings the encoder averages.

    Example:
        >>> audio_clips(np.ones(40_000, np.float32), 1.0, 3).shape
        (3, 16000)
    """
    n = int(round(clip_seconds * sample_rate))
    if wave.size <= n:
        return np.pad(wave, (0, n - wave.size))[None, :].astype(np.float32)
    count = min(max_clips, int(np.ceil(wave.size / n)))
    starts = np.linspace(0, wave.size - n, count).round().astype(int)
    return np.stack([wave[s : s + n] for s in starts]).astype(np.float32)


def load_video(source: str | Path | np.ndarray, frames: int = 8) -> np.ndarray:
    """Evenly sample `frames` RGB frames with PyAV (FFmpeg ships in its wheel);
    animated GIFs go through Pillow."""
    if isinstance(source, np.ndarray):
        if source.ndim != 4 or source.shape[-1] != 3:
            raise InputError("<array>", f"video must be (T, H, W, 3), got {source.shape}")
        return sample_frames(source.astype(np.uint8), frames)
    path = Path(source)
    _read_bytes(path, only_check=True)
    if path.suffix.lower() == ".gif":
        im = _open_picture(path)
        all_frames = []
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            all_frames.append(np.asarray(im.convert("RGB")))
        return sample_frames(np.stack(all_frames), frames)
    av = require("av", "video decoding")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (IndexError, av.error.FFmpegError, OSError) as exc:
        raise InputError(path, f"cannot decode video ({_short(exc)})") from None
    if not decoded:
        raise InputError(path, "video has no frames")
    return sample_frames(np.stack(decoded), frames)


def sample_frames(video: np.ndarray, frames: int) -> np.ndarray:
    idx = np.linspace(0, len(video) - 1, frames).round().astype(int)
    return video[idx]


_LOADERS = {
    "text": load_text,
    "image": load_image,
    "audio": load_audio,
    "depth": load_depth,
    "thermal": load_thermal,
    "video": load_video,
}


# ------------------------------------------------------------------- field preprocessing


def depth_to_disparity(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> disparity-like input in [0, 1] (near is bright, holes are 0), the input
    ImageBind and Omnivore feed an image backbone for depth. Disparity is min-max scaled
    over the valid pixels: a scene's absolute distance says little, its relief says much.

    Example:
        >>> (3 * depth_to_disparity(np.array([[1.0, 2.0], [0.0, 4.0]], np.float32))).round().tolist()
        [[3.0, 1.0], [0.0, 0.0]]
    """
    valid = depth_m > 0
    disp = np.zeros_like(depth_m, dtype=np.float32)
    if not valid.any():
        return disp
    inv = 1.0 / depth_m[valid]
    lo, hi = inv.min(), inv.max()
    disp[valid] = (inv - lo) / (hi - lo) if hi > lo else 1.0
    return disp


# ------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Item:
    """One thing to embed: where it comes from, and what we know of it."""

    id: str
    modality: str
    source: Any  # a path, or an in-memory value (text, array)
    label: str | None = None


def _read_bytes(path: Path, only_check: bool = False) -> bytes:
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    try:
        if path.stat().st_size == 0:
            raise InputError(path, "empty file (0 bytes)")
        return b"" if only_check else path.read_bytes()
    except PermissionError:
        raise InputError(path, "permission denied") from None


def _open_picture(path: Path):
    from PIL import Image

    _read_bytes(path, only_check=True)
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            im.load()  # decode now, so a truncated file fails here and not later
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(path, f"decompression bomb refused ({_short(exc)})") from None
    except Image.UnidentifiedImageError:
        raise InputError(path, "unknown or corrupt image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"truncated or corrupt image ({_short(exc)})") from None
    return im


def _load_npy(path: Path) -> np.ndarray:
    _read_bytes(path, only_check=True)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(path, f"cannot read .npy array ({_short(exc)})") from None


def _single_channel(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise InputError(name, f"expected a single-channel (H, W) map, got shape {arr.shape}")
    return arr


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]

