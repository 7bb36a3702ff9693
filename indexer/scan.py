"""Which files of a folder become points: walk, exclude, detect modality, attach sidecar metadata, shard.

Nothing here reads file contents except `detect_modality` (which peeks at PNG/TIFF
headers) and the sidecar table; hashing and decoding happen in the pipeline's reader.

Labels: a file's `label` comes only from a sidecar table (or from its folder name when
asked with `label_from_folder=True`, the layout of CIFAR-style `class/xxx.jpg` sets).
The parent folder's name is always recorded as `folder`, so a folder-based filter
works without pretending every folder is a class.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from bridge.modalities import (ARRAY_EXTS, AUDIO_EXTS, IMAGE_EXTS, VIDEO_EXTS, check_modality, detect_modality,
                               file_kind)

log = logging.getLogger(__name__)

# Looked for in the scanned folder when no sidecar is given (the Hugging Face
# "imagefolder" convention, so existing dataset folders work as they are).
SIDECAR_NAMES = ("metadata.csv", "metadata.jsonl", "metadata.json", "metadata.parquet")
# Column naming the file in a sidecar table, in order of preference.
SIDECAR_KEYS = ("path", "file_name", "file", "filename")
# Payload fields the indexer owns; sidecar columns with these names are not copied over them.
# `modality` is not among them: a sidecar may set a file's modality (it is checked, then used).
RESERVED_FIELDS = frozenset({"path", "abs_path", "content_hash", "bridge_version", "size", "mtime", "mtime_ns",
                             "folder", "text"})

# Extensions each modality's loader reads, for checking a forced `--modality`.
# Text is read by content, so any extension may be forced to text (e.g. .csv, .json).
_READABLE = {
    "image": IMAGE_EXTS,
    "depth": IMAGE_EXTS | ARRAY_EXTS,
    "thermal": IMAGE_EXTS | ARRAY_EXTS,
    "audio": AUDIO_EXTS,
    "video": VIDEO_EXTS | {".gif"},
}


@dataclass(frozen=True)
class FileEntry:
    """One file that should be in the index, with what we know before reading it."""

    rel_path: str  # POSIX, relative to the scanned folder: the item's identity
    abs_path: Path
    modality: str
    size: int
    mtime_ns: int
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # Set when the file cannot be indexed whatever its content (e.g. a forced modality
    # that cannot read this extension); the pipeline reports it without reading.
    problem: str | None = None

    @property
    def folder(self) -> str:
        parent = PurePosixPath(self.rel_path).parent
        return "" if str(parent) == "." else parent.name


@dataclass
class ScanResult:
    files: list[FileEntry]
    ignored: list[str]  # files no modality reads (README.json, .DS_Store...): not errors
    unreadable: list[tuple[str, str]]  # (rel_path, reason): could not even stat


@dataclass(frozen=True)
class ShardSpec:
    """The subset `index` of `count` (0-based): files whose path hash falls there.

    Example:
        >>> ShardSpec.parse("1/4")
        ShardSpec(index=1, count=4)
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= i < N (0-based), e.g. 0/4 .. 3/4")

    @classmethod
    def parse(cls, text: str) -> "ShardSpec":
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard {text!r}: expected i/N with 0 <= i < N, e.g. 0/4") from None
        return cls(i, n)

    def owns(self, rel_path: str) -> bool:
        return shard_of(rel_path, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(rel_path: str, count: int) -> int:
    """Stable shard number of a relative path: the same on every machine and Python run
    (blake2b, not `hash()`, which is salted per process).

    Example:
        >>> shard_of("cat/0001.jpg", 4) == shard_of("cat/0001.jpg", 4)
        True
    """
    digest = hashlib.blake2b(rel_path.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def scan_directory(
    directory: str | Path,
    *,
    exclude: Iterable[str] = (),
    modality: str | None = None,
    shard: ShardSpec | None = None,
    sidecar: str | Path | None = None,
    label_from_folder: bool = False,
    skip: Iterable[str | Path] = (),
) -> ScanResult:
    """List the files of `directory` to index, sorted by path.

    `exclude` globs match the relative path (`*.tmp`, `raw/*`) or any single path
    component (`.git`, `__pycache__`). Hidden files and folders are skipped. `skip`
    are paths never to index (the index folder itself, when it lies inside).

    Example:
        >>> scan_directory("data", exclude=["*.tmp"]).files[0].modality   # doctest: +SKIP
        'image'
    """
    root = Path(directory).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{directory}: not a folder; give the dataset folder to index")
    if modality is not None:
        check_modality(modality)
    patterns = list(exclude)
    skip_abs = {Path(p).resolve() for p in skip}
    side_path = _find_sidecar(root, sidecar)
    side = load_sidecar(side_path, root) if side_path else {}
    if side_path:
        skip_abs.add(side_path.resolve())

    files: list[FileEntry] = []
    ignored: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: unreadable.append(
            (_rel(Path(e.filename), root), f"cannot list folder ({e.strerror})"))):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and _resolved(here / d) not in skip_abs
                             and not _excluded(_rel(here / d, root), patterns))
        for name in sorted(filenames):
            path = here / name
            rel = _rel(path, root)
            if name.startswith(".") or _excluded(rel, patterns):
                continue
            if not _utf8(rel):
                # Names are bytes on Linux: a file named in Latin-1 is as valid as any. The run's identity,
                # the store and the reports are UTF-8, so it is known by its name with the odd bytes shown
                # as \xNN (`display_path`); the file itself is still read by its real name.
                rel = display_path(rel)
            try:
                entry = _entry(path, rel, root, name, patterns, skip_abs, shard, side, modality, label_from_folder,
                               ignored)
            except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long, a vanished file
                reason = getattr(exc, "strerror", None) or str(exc)
                unreadable.append((rel, f"cannot stat ({reason})"))
                continue
            if isinstance(entry, str):
                unreadable.append((rel, entry))
            elif entry is not None:
                files.append(entry)
    if side:
        missing = set(side) - {f.rel_path for f in files}
        if missing:
            log.info("sidecar %s names %d files not indexed here (missing, excluded or another shard)",
                     side_path, len(missing))
    log.info("scanned %s: %d files to index, %d ignored (no modality), %d unreadable",
             root, len(files), len(ignored), len(unreadable))
    return ScanResult(files, ignored, unreadable)


def _entry(path: Path, rel: str, root: Path, name: str, patterns: list[str], skip_abs: set[Path],
           shard: ShardSpec | None, side: dict[str, dict[str, Any]], modality: str | None,
           label_from_folder: bool, ignored: list[str]) -> FileEntry | str | None:
    """One file's entry; None when it is not to be indexed, a reason when it cannot be."""
    if name.startswith(".") or _excluded(rel, patterns):
        return None
    if shard is not None and not shard.owns(rel):
        return None
    st = os.stat(path)  # follows symlinks; raises on a loop or a dangling link
    if path.resolve() in skip_abs:
        return None
    meta = dict(side.get(rel, {}))
    forced = meta.pop("modality", None) or modality
    problem = None
    if forced is not None:
        try:
            mod = check_modality(str(forced))
        except ValueError as exc:
            mod, problem = str(forced), str(exc)
        if problem is None and mod in _READABLE and path.suffix.lower() not in _READABLE[mod]:
            problem = f"unsupported extension {path.suffix or '(none)'!r} for forced modality {mod!r}"
    elif not stat.S_ISREG(st.st_mode):
        mod = None
    else:
        mod = detect_modality(path, root=root)
        if mod is None:
            ignored.append(rel)
            return None
    if not stat.S_ISREG(st.st_mode):
        # A named pipe blocks its reader forever, /dev/zero never ends: never opened at all.
        return f"not a regular file (a {file_kind(st.st_mode)})"
    label = meta.pop("label", None)
    if label is None and label_from_folder:
        parent = PurePosixPath(rel).parent
        label = None if str(parent) == "." else parent.name
    return FileEntry(rel, path, str(mod), st.st_size, st.st_mtime_ns, None if label is None else str(label), meta,
                     problem)


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: not one of the folders to skip
        return None


def display_path(text: str) -> str:
    """A path as valid UTF-8 text: unchanged when it is, else with each byte that is not UTF-8
    written as \\xNN (what Python's `backslashreplace` gives; `os.fsdecode` names hold them as
    surrogates, which JSON, Parquet and the store refuse).

    Example:
        >>> display_path(os.fsdecode(b"caf\\xe9.txt"))
        'caf\\\\xe9.txt'
    """
    return text if _utf8(text) else os.fsencode(text).decode("utf-8", "backslashreplace")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_sidecar(path: str | Path, root: str | Path) -> dict[str, dict[str, Any]]:
    """Read a CSV / JSON / JSONL / Parquet table mapping files to labels, captions and
    other fields: {relative path: {column: value}}.

    The file column is one of path, file_name, file, filename; paths are relative to the
    scanned folder (absolute paths under it are accepted). Null cells are dropped.

    Example (metadata.csv):
        file_name,label,caption
        cat/1.png,cat,a cat on a mat
    """
    import polars as pl

    path = Path(path)
    ext = path.suffix.lower()
    try:
        if ext == ".csv":
            df = pl.read_csv(path, infer_schema_length=0)  # all strings: labels like "007" stay as written
        elif ext == ".parquet":
            df = pl.read_parquet(path)
        elif ext == ".jsonl":
            df = pl.read_ndjson(path)
        elif ext == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):  # {"a.png": {"label": ...}} or {"a.png": "label"}
                data = [{"path": k, **(v if isinstance(v, dict) else {"label": v})} for k, v in data.items()]
            df = pl.DataFrame(data)
        else:
            raise ValueError(f"sidecar {path}: unsupported format {ext!r}; use .csv, .json, .jsonl or .parquet")
    except (OSError, pl.exceptions.PolarsError, json.JSONDecodeError) as exc:
        raise ValueError(f"sidecar {path}: cannot read it ({exc})") from None
    key = next((k for k in SIDECAR_KEYS if k in df.columns), None)
    if key is None:
        raise ValueError(f"sidecar {path}: needs a file column named one of {', '.join(SIDECAR_KEYS)}; "
                         f"it has {', '.join(df.columns)}")
    root = Path(root).resolve()
    out: dict[str, dict[str, Any]] = {}
    for row in df.iter_rows(named=True):
        name = row.pop(key)
        if name is None:
            continue
        p = Path(str(name))
        rel = _rel(p.resolve(), root) if p.is_absolute() else PurePosixPath(str(name).replace("\\", "/")).as_posix()
        fields = {}
        for col, value in row.items():
            if value is None:
                continue
            if col in RESERVED_FIELDS and col != "modality":  # a modality column forces the file's modality
                log.warning("sidecar %s: column %r is reserved by the indexer; ignored", path, col)
                continue
            fields[col] = value if isinstance(value, (str, int, float, bool)) else str(value)
        out[rel] = fields
    return out


def _find_sidecar(root: Path, sidecar: str | Path | None) -> Path | None:
    if sidecar is not None:
        p = Path(sidecar)
        if not p.is_file():
            raise FileNotFoundError(f"sidecar {sidecar}: no such file")
        return p
    for name in SIDECAR_NAMES:
        if (root / name).is_file():
            log.info("using sidecar metadata %s", root / name)
            return root / name
    return None


def _excluded(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatchcase(rel, p) or any(fnmatch.fnmatchcase(part, p) for part in parts)
               for p in patterns)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
