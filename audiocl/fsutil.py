"""Writing files so that a reader never sees a partial one.

Every writer goes through a temporary file in the destination's folder
(``.<name>.tmp-<pid>-<random>``), flushed and fsynced, then ``os.replace``-d
over the destination: a crash, SIGKILL or full disk (``ENOSPC``) leaves
either the previous file or the new one, never a truncated or 0-byte file.
On any error the temporary file is removed before the error propagates.

* :func:`atomic_write_bytes` / :func:`atomic_write_text`: the content is in memory.
* :func:`atomic_path`: a context manager yielding a temporary path for
  writers that want a file name (``matplotlib``'s ``savefig``, ``np.save``);
  the path is renamed over the destination when the block ends cleanly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_path"]


def _temp_in(dest: Path) -> tuple[int, Path]:
    # same folder as the destination, so os.replace never crosses a file system
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent)
    return fd, Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename; returns the path."""
    dest = Path(path)
    fd, tmp = _temp_in(dest)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded with ``encoding``."""
    return atomic_write_bytes(path, text.encode(encoding))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix (``.png``, ``.npy``) so writers
    that pick a format from the name still do. An exception inside the block,
    or a failed fsync/rename, removes the temporary file and re-raises.
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
