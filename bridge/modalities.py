"""The six modalities: how each is recognised, decoded and preprocessed the way its field does it.

(Over 500 lines on purpose: the six loaders and their bounds against hostile files sit on one page,
so the canonical forms below and every input check can be read and compared together.)

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

import functools
import math
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.deps import require
from core.errors import InputError

MODALITIES: tuple[str, ...] = ("text", "image", "audio", "depth", "thermal", "video")
SAMPLE_RATE = 16_000
MAX_IMAGE_PIXELS = 50_000_000  # refuse decompression bombs well before they eat memory
# What is read of a text file: far more than any text encoder takes (MiniLM 256 tokens, CLIP 77), so a
# longer file (a book, a transcript, a log) is embedded from this first part; the index's payload says so.
MAX_TEXT_BYTES = 256 * 2**10
MAX_AUDIO_SECONDS = 20 * 60  # longer recordings are embedded from their first 20 minutes
AUDIO_RATES = (1_000, 384_000)  # sample rates outside this range are header damage, not audio
MAX_ARRAY_ELEMENTS = MAX_IMAGE_PIXELS  # a .npy map is a picture: the same bound
# torchaudio's sinc kernel holds (new / g) x (old / g) floats (g = gcd): a prime rate such as
# 999,983 Hz asks for tens of GB. Above this many kernel cells, the rate is rounded to 100 Hz.
_MAX_RESAMPLE_KERNEL = 2_000_000

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
AUDIO_EXTS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
TEXT_EXTS = {".txt", ".md"}
ARRAY_EXTS = {".npy"}

# Folder or file-name words that say a grey picture is a depth map or a thermal frame.
_DEPTH_WORDS = re.compile(r"(^|[^a-z])(depth|disparity|depths)([^a-z]|$)")
# Not camera brands ("flir"): FLIR-style datasets name their RGB frames FLIR_*.jpg too. A folder of
# thermal frames without a thermal word sets `modality` in its sidecar or passes --modality.
_THERMAL_WORDS = re.compile(r"(^|[^a-z])(thermal|infrared|lwir|ir)([^a-z]|$)")


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

    if not is_regular_file(path):  # a named pipe or a device would block or never end
        return False
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
        raw, size = _read_head(path, MAX_TEXT_BYTES)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not (size > len(raw) and exc.start >= len(raw) - 3 and exc.reason == "unexpected end of data"):
                raise InputError(path, f"not UTF-8 text (byte {exc.start})") from None
            text = raw[: exc.start].decode("utf-8")  # the first part ended inside a character: drop its bytes
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
    path = Path(source)
    im = _open_picture(path)
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:  # modes Pillow cannot turn into RGB (e.g. some 16-bit ones)
        raise InputError(path, f"cannot convert {im.mode} pixels to RGB ({_short(exc)})") from None


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
            with sf.SoundFile(str(path)) as f:
                sr = int(f.samplerate)
                if not AUDIO_RATES[0] <= sr <= AUDIO_RATES[1]:
                    raise InputError(path, f"implausible sample rate {sr} Hz in the header (expected "
                                           f"{AUDIO_RATES[0]}-{AUDIO_RATES[1]} Hz); the file is damaged")
                if f.channels > 64:
                    raise InputError(path, f"implausible channel count {f.channels} in the header")
                # Bounded memory whatever the header claims: at most MAX_AUDIO_SECONDS are decoded.
                wave = f.read(frames=MAX_AUDIO_SECONDS * sr, dtype="float32", always_2d=True)
        except InputError:
            raise
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
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    g = math.gcd(sr, target)
    if (sr // g) * (target // g) > _MAX_RESAMPLE_KERNEL:
        # An odd rate (44,101 Hz) would need a huge kernel; 100 Hz off is inaudible to an encoder.
        sr = max(100, round(sr / 100) * 100)
        if sr == target:
            return wave.astype(np.float32)
    torch = require("torch", "audio resampling")
    with torch.inference_mode():
        out = _resampler(sr, target)(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
    return out.numpy()


@functools.lru_cache(maxsize=16)
def _resampler(sr: int, target: int) -> Any:
    """torchaudio's Resample keeps its sinc kernel: half the time of rebuilding it per file
    (0.10 vs 0.20 ms for a 1 s clip, 8 -> 16 kHz; same output to 1e-7)."""
    transforms = require("torchaudio.transforms", "audio resampling")
    return transforms.Resample(sr, target)


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
        total = max(1, getattr(im, "n_frames", 1))
        picked = []
        for i in _frame_indices(total, frames):  # only the frames kept are decoded into arrays
            im.seek(int(i))
            picked.append(np.asarray(im.convert("RGB")))
        return np.stack(picked)
    av = require("av", "video decoding")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.codec_context.width * stream.codec_context.height > MAX_IMAGE_PIXELS:
                raise InputError(path, f"video frames of {stream.codec_context.width}x"
                                       f"{stream.codec_context.height} are too large (decompression bomb?)")
            total = stream.frames or sum(1 for p in container.demux(stream) if p.size)
            if total:
                container.seek(0)
            picked = _decode_frames(container, stream, _frame_indices(total, frames) if total else None)
    except InputError:
        raise
    except (IndexError, av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(path, f"cannot decode video ({_short(exc)})") from None
    if not picked:
        raise InputError(path, "video has no frames")
    return sample_frames(np.stack(picked), frames) if len(picked) != frames else np.stack(picked)


def _frame_indices(total: int, frames: int) -> np.ndarray:
    return np.linspace(0, total - 1, frames).round().astype(int)


def _decode_frames(container: Any, stream: Any, wanted: np.ndarray | None) -> list[np.ndarray]:
    """Decode in order, converting only the wanted frames: memory holds `frames` pictures, not
    the whole video (a 720p clip of 450 frames would otherwise take 1.2 GB before sampling).
    Without a frame count (`wanted` None), every frame is a candidate and the list is thinned
    as it grows, keeping memory bounded all the same."""
    picked: list[np.ndarray] = []
    if wanted is None:
        stride, kept = 1, []
        for i, frame in enumerate(container.decode(stream)):
            if i % stride == 0:
                kept.append(frame.to_ndarray(format="rgb24"))
                if len(kept) >= 64:
                    kept, stride = kept[::2], stride * 2
        return kept
    want = {int(i): n for n, i in enumerate(wanted)}
    last_i, last = -1, None
    for i, frame in enumerate(container.decode(stream)):
        last_i, last = i, frame
        if i in want:
            picked.append(frame.to_ndarray(format="rgb24"))
        if i >= int(wanted[-1]):
            break
    if last is not None and len(picked) < len(wanted) and last_i not in want:
        # The header promised more frames than the stream holds: end on the last one there is.
        picked.append(last.to_ndarray(format="rgb24"))
    return picked


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


def is_regular_file(path: str | Path) -> bool:
    """True for a regular file (after symlinks); False for pipes, devices, folders, loops, missing.

    Reading a named pipe blocks forever and `/dev/zero` never ends, so every reader asks first.

    Example:
        >>> is_regular_file("/dev/zero")
        False
    """
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def file_kind(mode: int) -> str:
    """A file type in words, for error reasons ("named pipe", "character device"...)."""
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


def _read_bytes(path: Path, only_check: bool = False, limit: int | None = None) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as exc:  # a symlink loop, a name too long...
        raise InputError(path, f"cannot open ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(path, f"not a regular file (a {file_kind(st.st_mode)})")
    if st.st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    if limit is not None and st.st_size > limit:
        raise InputError(path, f"too large ({st.st_size} bytes; at most {limit} are read for this modality)")
    if only_check:
        return b""
    try:
        with open(path, "rb") as f:
            return f.read(limit if limit is not None else -1)
    except PermissionError:
        raise InputError(path, "permission denied") from None
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None


def _read_head(path: Path, limit: int) -> tuple[bytes, int]:
    """The first `limit` bytes of a file and its whole size (a long text is embedded from its start)."""
    _read_bytes(path, only_check=True)  # the same refusals as every loader: missing, special, empty
    try:
        with open(path, "rb") as f:
            return f.read(limit), os.fstat(f.fileno()).st_size
    except PermissionError:
        raise InputError(path, "permission denied") from None
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None


def text_part(size: int) -> str | None:
    """What of a text file of `size` bytes is embedded, when not all of it: for the index's payload.

    Example:
        >>> text_part(100) is None
        True
        >>> text_part(50 * 2**20)
        'first part: the first 262144 of 52428800 bytes (a text encoder reads only its first tokens)'
    """
    if size <= MAX_TEXT_BYTES:
        return None
    return f"first part: the first {MAX_TEXT_BYTES} of {size} bytes (a text encoder reads only its first tokens)"


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
    """A numeric .npy map. The header is checked (memory-mapped) before any data is read, so
    a header declaring a huge shape or a truncated file costs nothing."""
    _read_bytes(path, only_check=True)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as exc:
        raise InputError(path, f"cannot read .npy array ({_short(exc)})") from None
    if arr.dtype.kind not in "biuf":
        raise InputError(path, f".npy array of dtype {arr.dtype} is not numeric (need ints, floats or bools)")
    if arr.size == 0:
        raise InputError(path, f".npy array is empty (shape {arr.shape})")
    if arr.size > MAX_ARRAY_ELEMENTS:
        raise InputError(path, f".npy array of shape {arr.shape} is too large ({arr.size} values; "
                               f"at most {MAX_ARRAY_ELEMENTS})")
    return np.array(arr)


def _single_channel(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise InputError(name, f"expected a single-channel (H, W) map, got shape {arr.shape}")
    return arr


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]

