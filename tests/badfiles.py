"""A corpus of bad and edge-case inputs, each with the outcome an index run must give it.

`make_corpus(root)` writes every kind under `root` (deterministically: fixed seeds) and returns
`{kind: Case}`. Outcomes:

* `indexed`  the file becomes exactly one point;
* `error`    the file is in the errors report, its reason containing `reason` (lower case);
* `ignored`  no modality reads it (hidden files, unknown extensions): neither.

The kinds cover what a real folder holds when things go wrong (truncated downloads, zero-byte
placeholders, random bytes under a media extension, decompression bombs, special files, symlink
loops, odd names, odd encodings and shapes) and what a hostile one could hold. Used by
tests/test_robustness.py; run as a script to write a corpus for manual runs:

    python -m tests.badfiles /tmp/badcorpus
"""
from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCANNED_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".wav", ".flac", ".ogg",
                ".mp3", ".aiff", ".aif", ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".txt", ".md", ".npy")


@dataclass(frozen=True)
class Case:
    rel: str  # path relative to the corpus root, as the index reports it
    outcome: str  # "indexed", "error" or "ignored"
    reason: str = ""  # a fragment of the error reason (lower case)
    modality: str | None = None  # for indexed files whose modality matters


# ----------------------------------------------------------------------------- writers


def png_bytes(seed: int, size: int = 12, mode: str = "RGB") -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int, mode: str = "RGB", size: int = 16) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="JPEG")
    return buf.getvalue()


def wav_bytes(seed: int, rate: int = 16000, channels: int = 1, samples: int = 8000, subtype: str = "PCM_16",
              wave: np.ndarray | None = None) -> bytes:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    data = wave if wave is not None else (rng.normal(size=(samples, channels)) * 0.1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def wav_with_header_rate(rate: int) -> bytes:
    """A valid 16 kHz WAV whose header then claims `rate` (what a damaged header looks like)."""
    data = bytearray(wav_bytes(5))
    struct.pack_into("<I", data, 24, rate)
    struct.pack_into("<I", data, 28, rate * 2)
    return bytes(data)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = 60_000) -> bytes:
    """A few hundred bytes that declare side x side pixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def ztxt_bomb() -> bytes:
    """A small valid PNG with a zTXt chunk that inflates to 64 MB of text."""
    good = png_bytes(9)
    compressed = zlib.compress(b"A" * (64 * 2**20), 9)
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + compressed)
    return good[:33] + ztxt + good[33:]  # right after the IHDR chunk


def jpeg_bomb(side: int = 60_000) -> bytes:
    """A small JPEG whose frame header (SOF0) declares side x side pixels."""
    data = bytearray(jpeg_bytes(3))
    at = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, side, side)
    return bytes(data)


def mp4_bytes(frames: int = 10, width: int = 32, height: int = 32, seed: int = 0) -> bytes:
    import av

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def gif_bytes(frames: int = 5) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(4)
    ims = [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(frames)]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:])
    return buf.getvalue()


def random_bytes(seed: int, n: int = 3000) -> bytes:
    # Never starting with a real magic number, so no decoder can take them for media.
    return b"\x00garbage\x00" + np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# ----------------------------------------------------------------------------- the corpus


def make_corpus(root: str | Path) -> dict[str, Case]:
    """Write every kind under `root`; returns {kind: Case}. Needs Linux for pipes and /dev/zero."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Case] = {}

    def put(kind: str, rel: str, data: bytes | str, outcome: str, reason: str = "", modality: str | None = None):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        cases[kind] = Case(rel, outcome, reason, modality)

    # --- valid files and valid edge cases: indexed
    put("png", "ok/picture.png", png_bytes(1), "indexed", modality="image")
    put("jpeg", "ok/photo.jpg", jpeg_bytes(2), "indexed", modality="image")
    put("cmyk-jpeg", "ok/cmyk.jpg", jpeg_bytes(3, mode="CMYK"), "indexed", modality="image")
    put("grey-png", "ok/grey.png", png_bytes(4, mode="L"), "indexed", modality="image")
    put("flir-rgb-frame", "flir_adas/FLIR_00001.jpg", jpeg_bytes(5), "indexed", modality="image")
    put("thermal-word", "thermal/frame_0001.png", png_bytes(6, mode="L"), "indexed", modality="thermal")
    put("wav", "ok/sound.wav", wav_bytes(1), "indexed", modality="audio")
    put("wav-8-channels", "ok/eight_channels.wav", wav_bytes(2, channels=8), "indexed", modality="audio")
    put("wav-odd-rate", "ok/odd_rate.wav", wav_bytes(3, rate=44_101), "indexed", modality="audio")
    put("wav-float", "ok/float.wav", wav_bytes(4, subtype="FLOAT"), "indexed", modality="audio")
    put("flac", "ok/sound.flac", _flac(), "indexed", modality="audio")
    put("text", "ok/note.txt", "a spoken seven\n", "indexed", modality="text")
    put("markdown", "ok/readme.md", "# Seven\n\nA handwritten seven.\n", "indexed", modality="text")
    put("depth-npy", "depth/scene.npy", npy_bytes(np.random.default_rng(1).uniform(0.5, 4, (8, 8)).astype(np.float32)),
        "indexed", modality="depth")
    put("depth-npy-some-inf", "depth/holes.npy", npy_bytes(np.where(np.eye(8) > 0, np.inf, 2.0).astype(np.float32)),
        "indexed", modality="depth")
    put("depth-npy-bool", "depth/mask.npy", npy_bytes(np.eye(8, dtype=bool)), "indexed", modality="depth")
    put("mp4", "ok/clip.mp4", mp4_bytes(), "indexed", modality="video")
    put("gif-animated", "ok/anim.gif", gif_bytes(), "indexed", modality="image")
    deep = "/".join(f"d{i}" for i in range(100))
    put("nested-100", f"{deep}/deep.png", png_bytes(7), "indexed", modality="image")
    put("name-spaces", "odd names/a picture with spaces.png", png_bytes(8), "indexed")
    put("name-unicode", "odd names/ünïcödé 日本 🙂.png", png_bytes(10), "indexed")
    put("name-punctuation", "odd names/semi;colon,comma'quote\"[x]#%.png", png_bytes(11), "indexed")
    put("name-newline", "odd names/new\nline.png", png_bytes(12), "indexed")
    put("name-long", "odd names/" + "x" * 240 + ".png", png_bytes(13), "indexed")
    put("name-leading-dash", "odd names/-rf.png", png_bytes(14), "indexed")

    # --- damaged files: reported
    put("png-truncated", "bad/truncated.png", png_bytes(20, size=64)[:200], "error", "truncated")
    put("jpeg-truncated", "bad/truncated.jpg", jpeg_bytes(21, size=64)[:300], "error", "truncated")
    put("wav-truncated-header", "bad/truncated.wav", wav_bytes(22)[:30], "error", "cannot decode audio")
    put("npy-truncated", "bad/truncated.npy", npy_bytes(np.ones((64, 64), np.float32))[:500], "error", ".npy")
    put("mp4-truncated", "bad/truncated.mp4", mp4_bytes()[:400], "error", "video")
    put("png-bomb", "bad/bomb.png", png_bomb(), "error", "decompression bomb")
    put("jpeg-bomb", "bad/bomb.jpg", jpeg_bomb(), "error", "decompression bomb")
    put("ztxt-bomb", "bad/ztxt_bomb.png", ztxt_bomb(), "error", "too large")
    put("wav-999983-hz", "bad/rate_999983.wav", wav_with_header_rate(999_983), "error", "implausible sample rate")
    put("wav-0-samples", "bad/empty_audio.wav", wav_bytes(23, samples=0), "error", "zero-length audio")
    put("wav-nan", "bad/nan.wav", wav_bytes(24, subtype="FLOAT", wave=np.full((800, 1), np.nan, np.float32)),
        "error", "non-finite")
    put("npy-strings", "depth/strings.npy", npy_bytes(np.array([["a", "b"], ["c", "d"]])), "error", "not numeric")
    put("npy-nan-thermal", "thermal/nan.npy", npy_bytes(np.full((8, 8), np.nan, np.float32)), "error", "non-finite")
    put("npy-all-nan-depth", "depth/all_nan.npy", npy_bytes(np.full((8, 8), np.nan, np.float32)), "error",
        "no valid")
    put("npy-empty", "depth/empty.npy", npy_bytes(np.zeros((0, 8), np.float32)), "error", "empty")
    put("npy-5d", "depth/five_d.npy", npy_bytes(np.ones((2, 2, 2, 2, 2), np.float32)), "error", "single-channel")
    put("npy-1x1", "depth/one_pixel.npy", npy_bytes(np.ones((1, 1), np.float32)), "error", "single-channel")
    put("npy-object", "depth/object.npy", _npy_object(), "error", ".npy")
    put("npy-huge-header", "depth/huge.npy", _npy_huge_header(), "error", ".npy")
    put("text-empty", "bad/blank.txt", "   \n\t\n", "error", "empty text")
    put("text-latin1", "bad/latin1.txt", "café crème".encode("latin-1"), "error", "not utf-8")
    put("text-utf16", "bad/utf16.txt", "a spoken seven".encode("utf-16"), "error", "not utf-8")
    for i, ext in enumerate(SCANNED_EXTS):
        kind = ext.lstrip(".")
        put(f"zero-bytes-{kind}", f"zero/empty{ext}", b"", "error", "empty")
        put(f"random-bytes-{kind}", f"random/noise{ext}", random_bytes(100 + i), "error", "")

    # --- special files and names: reported without being opened
    loop_a, loop_b = root / "links" / "a.jpg", root / "links" / "b.jpg"
    loop_a.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("b.jpg", loop_a)
    os.symlink("a.jpg", loop_b)
    cases["symlink-loop-a"] = Case("links/a.jpg", "error", "cannot stat")
    cases["symlink-loop-b"] = Case("links/b.jpg", "error", "cannot stat")
    os.symlink("does-not-exist.png", root / "links" / "dangling.png")
    cases["symlink-dangling"] = Case("links/dangling.png", "error", "cannot stat")
    os.symlink("/dev/zero", root / "links" / "zero.wav")
    cases["symlink-dev-zero"] = Case("links/zero.wav", "error", "character device")
    os.symlink("../ok/picture.png", root / "links" / "good_link.png")
    cases["symlink-valid"] = Case("links/good_link.png", "indexed", modality="image")
    for ext in (".wav", ".png", ".txt"):
        os.mkfifo(root / "pipes" / f"pipe{ext}") if (root / "pipes").is_dir() else \
            ((root / "pipes").mkdir(), os.mkfifo(root / "pipes" / f"pipe{ext}"))
        cases[f"named-pipe-{ext[1:]}"] = Case(f"pipes/pipe{ext}", "error", "named pipe")
    bad_name = os.fsdecode(b"names/latin1-\xe9t\xe9.png")
    (root / "names").mkdir(exist_ok=True)
    (root / bad_name).write_bytes(png_bytes(15))
    cases["name-not-utf8"] = Case("names/latin1-\\xe9t\\xe9.png", "indexed", modality="image")  # shown escaped
    if os.geteuid() != 0:  # root reads anything
        put("no-permission", "bad/secret.png", png_bytes(16), "error", "permission denied")
        os.chmod(root / "bad" / "secret.png", 0)

    # --- neither indexed nor errors
    put("hidden", ".hidden.png", png_bytes(17), "ignored")
    put("unknown-extension", "ok/notes.json", "{}", "ignored")
    return cases


def _flac() -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, (np.random.default_rng(6).normal(size=4000) * 0.1).astype(np.float32), 8000, format="FLAC")
    return buf.getvalue()


def _npy_object() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _npy_huge_header() -> bytes:
    """A .npy header declaring 10^12 floats, followed by a few bytes."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64


if __name__ == "__main__":
    made = make_corpus(sys.argv[1])
    print(f"{len(made)} kinds written under {sys.argv[1]}")
