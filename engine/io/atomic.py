"""Atomic file writes, the one way the engine and the desktop put a file on disk.

A write goes to a hidden ``.<name>.<random>.part`` file in the destination folder and is renamed over
the destination (``os.replace``) only once it is complete, so a crash, a full disk or a cancelled run
leaves the old file (or none), never half of one. The finished file gets the mode a plain ``open``
would give. No torch, no Qt: both sides of the house import this.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PART_SUFFIX = ".part"


def default_file_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give (temporary files start private)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def new_part_file(path: Path) -> Path:
    """Create an empty hidden temporary file next to ``path`` and return its name (raises OSError)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PART_SUFFIX)
    os.close(fd)
    return Path(tmp)


def commit_part_file(tmp: Path, path: Path, fsync: bool = False) -> None:
    """Give ``tmp`` the default mode and rename it over ``path`` (``fsync`` first when asked)."""
    if fsync:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it replaces ``path``, on any
    error (or KeyboardInterrupt) it is removed and the error propagates. The folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_part_file(path)
    try:
        yield tmp
        commit_part_file(tmp, path, fsync=fsync)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, fsync: bool = False) -> None:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data, indent: int | None = 2) -> None:
    write_text(path, json.dumps(data, indent=indent))
