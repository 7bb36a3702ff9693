"""Moments: the fixed windows a long recording or video is cut into, so a search can say *where*.

A long audio or video file is indexed as its whole-file point plus one point per window
(`MomentSpec`: window length and hop per modality; the index record keeps the spec it was built
with). Each window is a canonical item of the file's own modality (a stretch of the 16 kHz
waveform; the frames shown in that stretch of the video), so the preset's encoder embeds it
exactly as it embeds a short file: no encoder knows about moments. A file no longer than
`min_seconds` stays one point.

Video windows come from a second, timed decode at `fps` frames a second, each frame scaled down
to at most `max_side` pixels (the image encoders take 224): memory stays bounded for a long film,
and the whole-file point keeps the frames `load_video` picks, as before moments existed. Like
audio (`MAX_AUDIO_SECONDS`), only the first `MAX_MOMENT_SECONDS` of a video are cut.

Example:
    >>> wave = np.zeros(16_000 * 16, np.float32)
    >>> [(m.start, m.end) for m in audio_moments(wave)][:3]
    [(0.0, 3.0), (1.5, 4.5), (3.0, 6.0)]
    >>> clock(75.4)
    '01:15'
    >>> span(23.17, 23.39)
    '00:23-00:24'
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.modalities import MAX_AUDIO_SECONDS, SAMPLE_RATE

MAX_MOMENT_SECONDS = MAX_AUDIO_SECONDS  # the part of a long video that is cut into moments


@dataclass(frozen=True)
class MomentSpec:
    """How one modality's long files are cut: `window` seconds every `hop` seconds, for files
    longer than `min_seconds`; video frames are sampled at `fps` (frames a window: window x fps)."""

    window: float
    hop: float
    min_seconds: float
    fps: float = 0.0
    max_side: int = 0

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v}


# Audio: 3 s windows (an environmental sound event; YAMNet reads it as 4 patches of 0.96 s) every
# 1.5 s, so an event of up to 1.5 s lies whole in some window; on ESC-10 clips joined with pauses,
# 5 s windows every 2.5 s put the top moment inside its clip for 2 of 7 clips, 3 s every 1.5 s (with
# the quiet edges trimmed) for all 7 (tests/test_moments.py builds that recording). Video: 4 s
# windows of 4 frames (a shot), every 2 s. A file of up to 10 s stays one point, as before.
MOMENT_SPECS: dict[str, MomentSpec] = {
    "audio": MomentSpec(window=3.0, hop=1.5, min_seconds=10.0),
    "video": MomentSpec(window=4.0, hop=2.0, min_seconds=10.0, fps=1.0, max_side=256),
}


@dataclass
class Moment:
    """One window of a long file: its times in seconds and its canonical item."""

    start: float
    end: float
    item: Any


def moment_specs_json() -> dict[str, dict[str, Any]]:
    """The specs as the index record keeps them."""
    return {m: spec.to_json() for m, spec in MOMENT_SPECS.items()}


def clock(seconds: float) -> str:
    """Seconds as `mm:ss` (`h:mm:ss` from an hour on), as a player shows them."""
    total = int(math.floor(max(0.0, float(seconds)) + 1e-6))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def span(start: float, end: float) -> str:
    """A moment's times as `mm:ss-mm:ss`, the end rounded up, so a moment shorter than a second
    does not read as ending where it starts."""
    return f"{clock(start)}-{clock(math.ceil(float(end) - 1e-6))}"


def embedded_part(modality: str, source: str | Path, item: Any) -> str | None:
    """What of a long audio or video file the index covers, when not all of it (for the payload and
    the run's summary): a recording is embedded, and cut into moments, from its first
    `MAX_AUDIO_SECONDS`; a video's whole-file point sees all of it, its moments the first
    `MAX_MOMENT_SECONDS`. None when the file is covered whole (or its length cannot be told)."""
    if modality == "audio":
        covered = item.size / SAMPLE_RATE
        whole = _declared_seconds(source, audio=True)
        what = "embedded and cut into moments"
    elif modality == "video":
        whole = _declared_seconds(source, audio=False)
        covered, what = MAX_MOMENT_SECONDS, "cut into moments"
    else:
        return None
    if whole is None or whole <= covered + 1.0:
        return None
    return f"first {clock(covered)} of {clock(whole)} {what} (the first {MAX_MOMENT_SECONDS // 60} minutes of a long file)"


def _declared_seconds(source: str | Path, audio: bool) -> float | None:
    """A file's length as its header declares it, or None where it does not say."""
    try:
        if audio:
            import soundfile as sf

            info = sf.info(str(source))
            return info.frames / info.samplerate if info.samplerate else None
        import av

        with av.open(str(source)) as container:
            return container.duration / 1e6 if container.duration else None
    except Exception:  # noqa: BLE001 - a note in the payload, never a reason to fail the file
        return None


def window_starts(duration: float, spec: MomentSpec) -> list[float]:
    """Start times of the windows of a file `duration` seconds long; [] for a short file. The
    last window ends at the file's end (the tail is never lost)."""
    if duration <= spec.min_seconds:
        return []
    count = int(math.floor((duration - spec.window) / spec.hop)) + 1
    starts = [round(i * spec.hop, 3) for i in range(count)]
    last = round(duration - spec.window, 3)
    if last - starts[-1] > 1e-3:
        starts.append(last)
    return starts


def audio_moments(wave: np.ndarray, spec: MomentSpec | None = None) -> list[Moment]:
    """The windows of a canonical waveform (16 kHz mono); [] for a short one."""
    spec = spec or MOMENT_SPECS["audio"]
    duration = wave.size / SAMPLE_RATE
    out = []
    for start in window_starts(duration, spec):
        a = int(round(start * SAMPLE_RATE))
        b = min(wave.size, a + int(round(spec.window * SAMPLE_RATE)))
        lo, hi = sounding_span(wave[a:b])
        out.append(Moment(round((a + lo) / SAMPLE_RATE, 3), round((a + hi) / SAMPLE_RATE, 3),
                          np.ascontiguousarray(wave[a:b])))
    return out


def sounding_span(wave: np.ndarray, frame: int = SAMPLE_RATE // 100, quiet_db: float = 30.0) -> tuple[int, int]:
    """(first, end) sample of the part of a window that sounds: its quiet frames (`quiet_db` below its
    loudest 10 ms) at either edge left out, so a moment whose window begins in a pause is played from
    where its sound begins. The item embedded is still the whole window; a window all quiet, or one
    too short to judge, keeps its full span.

    Example:
        >>> w = np.zeros(32_000, np.float32); w[8_000:24_000] = 0.5
        >>> sounding_span(w)
        (8000, 24000)
    """
    n = wave.size // frame
    if n < 2:
        return 0, wave.size
    rms = np.sqrt(np.mean(np.square(wave[: n * frame].reshape(n, frame), dtype=np.float64), axis=1))
    loud = rms >= rms.max() * 10 ** (-quiet_db / 20) if rms.max() > 0 else np.ones(n, bool)
    first, last = int(np.argmax(loud)), int(n - 1 - np.argmax(loud[::-1]))
    return first * frame, wave.size if last == n - 1 else (last + 1) * frame


def video_moments(path: str | Path, spec: MomentSpec | None = None) -> list[Moment]:
    """The windows of a video file, from a timed decode; [] for a short one (or a GIF: its frames
    carry no reliable times)."""
    spec = spec or MOMENT_SPECS["video"]
    path = Path(path)
    if path.suffix.lower() == ".gif":
        return []
    frames, times, duration = timed_frames(path, spec)
    out = []
    for start in window_starts(duration, spec):
        end = start + spec.window
        picked = [f for f, t in zip(frames, times) if start <= t < end]
        if not picked:  # a window between two sampled frames (a still): the last frame before it
            before = [f for f, t in zip(frames, times) if t < start]
            picked = before[-1:] or frames[:1]
        out.append(Moment(start, round(min(end, duration), 3), np.stack(picked)))
    return out


def timed_frames(path: Path, spec: MomentSpec) -> tuple[list[np.ndarray], list[float], float]:
    """Frames sampled at `spec.fps` with their times, and the video's duration (seconds).
    Decoding stops at `MAX_MOMENT_SECONDS`. Raises what PyAV raises on a damaged file (the
    reader reports it; `load_video` has already read the file once)."""
    from core.deps import require

    av = require("av", "video decoding")
    frames: list[np.ndarray] = []
    times: list[float] = []
    next_t, last_t, step = 0.0, 0.0, 1.0 / spec.fps
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        if not declared and container.duration:
            declared = container.duration / 1e6
        if declared and declared <= spec.min_seconds:
            return [], [], declared
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            t = float(frame.time)
            if t >= MAX_MOMENT_SECONDS:
                break
            last_t = t
            if t + 1e-6 < next_t:
                continue
            frames.append(_scaled(frame, spec.max_side))
            times.append(round(t, 3))
            next_t = t + step
    frame_step = float(1 / stream.average_rate) if stream.average_rate else 0.0
    duration = min(max(declared, last_t + frame_step), MAX_MOMENT_SECONDS)
    return frames, times, duration


def _scaled(frame: Any, max_side: int) -> np.ndarray:
    w, h = frame.width, frame.height
    scale = min(1.0, max_side / max(w, h)) if max_side else 1.0
    if scale < 1.0:
        frame = frame.reformat(width=max(2, int(w * scale)) // 2 * 2, height=max(2, int(h * scale)) // 2 * 2)
    return frame.to_ndarray(format="rgb24")


def cut_moments(modality: str, source: str | Path, item: Any) -> list[Moment]:
    """A decoded file's moments: audio from its canonical waveform, video from a timed decode of
    `source`; [] for other modalities and short files."""
    if modality == "audio":
        return audio_moments(item)
    if modality == "video":
        return video_moments(source)
    return []
