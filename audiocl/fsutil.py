"""Atomic file writes: a file appears under its final name complete, or not at all.

Every writer in the data pipeline (store shards and markers, shard specs,
WebDataset tars, ``sizes.json``) writes to a hidden temporary name in the
destination folder, fsyncs, then ``os.replace``s it into place. On any error
(disk full: ``OSError`` 28, a quota, an interrupt) the temporary file is removed
before the error propagates, so nothing partial is left behind; a process
killed outright (SIGKILL) can leave only a hidden ``.<name>.tmp-<pid>`` file,
which :func:`remove_stale_tmp` (called by the next run) deletes.

* :func:`atomic_write_bytes` / :func:`atomic_write_text`: the content is in memory.
* :func:`atomic_open`: a binary file object for streaming writers.
* :func:`atomic_path`: a temporary *path* for writers that want a file name
  (matplotlib's ``savefig``, ``np.save``); renamed over the destination when the
  block ends cleanly.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

#: glob of the temporary names made by :func:`tmp_path` (hidden, so readers skip them)
TMP_GLOB = ".*.tmp-*"


def tmp_path(path: str | os.PathLike) -> Path:
    """The hidden temporary name for ``path``: ``.<name>.tmp-<pid>`` in the same folder
    (same file system, so the final ``os.replace`` is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[IO[bytes]]:
    """``with atomic_open(p) as f: f.write(...)``: ``p`` appears only if the block
    succeeds; on any exception the temporary file is removed and ``p`` is untouched."""
    final = Path(path)
    tmp = tmp_path(final)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`); returns the path."""
    with atomic_open(path, fsync=fsync) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_open`); returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix (``.png``, ``.npy``) so writers that pick
    a format from the name still do, and matches :data:`TMP_GLOB`. An exception inside
    the block, or a failed fsync/rename, removes the temporary file and re-raises.
    """
    dest = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.tmp-{os.getpid()}-", suffix=dest.suffix, dir=dest.parent)
    os.close(fd)
    tmp_p = Path(tmp)
    try:
        yield tmp_p
        with open(tmp_p, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_p, dest)
    except BaseException:
        tmp_p.unlink(missing_ok=True)
        raise


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete the temporary files a killed writer left in ``folder``; returns how many."""
    n = 0
    d = Path(folder)
    if d.is_dir():
        for stale in d.glob(TMP_GLOB):
            if stale.is_file():
                stale.unlink(missing_ok=True)
                n += 1
    return n
