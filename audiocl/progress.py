"""The one progress display of the project: a tqdm bar on a terminal, plain lines otherwise.

``with progress(total, "embed audio", unit="clip") as bar: ... bar.update(n)``

* stderr is a terminal: a tqdm bar on stderr;
* stderr is a file or a pipe (a recipe's log, CI): no carriage returns or
  colour codes, on stdout (as the training loop's lines; stderr stays the
  channel of the one-line error a user mistake gets), a line ``embed audio: 640/2000 clip (32%) 41.3 clip/s eta 0:00:33``
  at most every :data:`LINE_EVERY_S` seconds, and one closing line
  ``embed audio: 2000 clip in 0:00:48`` - so a short step costs one line;
* quiet (``--quiet``, :func:`set_quiet`) or ``enabled=False``: nothing.

The training loop's display (:class:`audiocl.train.logs.Progress`) builds its
bar with :func:`tqdm_bar` too. :func:`quiet_library_bars` turns off the bars
that libraries draw themselves (transformers' "Loading weights") under the
same conditions.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO

__all__ = [
    "LINE_EVERY_S", "Progress", "fmt_time", "is_quiet", "progress", "quiet_library_bars", "set_quiet", "tqdm_bar",
]  # fmt: skip

# seconds between two plain progress lines when stderr is not a terminal
LINE_EVERY_S = 10.0

_quiet = False


def set_quiet(quiet: bool = True) -> None:
    """Silence every progress display of this process (the CLI's ``--quiet``)."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


def quiet_library_bars() -> None:
    """Turn off the tqdm bars of transformers and huggingface_hub (e.g. the
    "Loading weights" bar of every ``from_pretrained``) when stderr is not a
    terminal or the process is quiet: in a file such a bar is carriage returns
    and block characters on one long line. Call it before a model is loaded;
    on a terminal, not quiet, they stay as they are, and so does a user's own
    ``HF_HUB_DISABLE_PROGRESS_BARS``."""
    import os

    if (sys.stderr.isatty() and not _quiet) or "HF_HUB_DISABLE_PROGRESS_BARS" in os.environ:
        return
    # read by huggingface_hub (and transformers through it) when first imported
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    for name in ("huggingface_hub", "transformers"):
        if name not in sys.modules:
            continue  # the environment variable covers a later import
        try:
            if name == "transformers":
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            else:
                from huggingface_hub.utils import disable_progress_bars

                disable_progress_bars()
        except Exception:  # an older or newer library without these functions
            pass


def fmt_time(seconds: float) -> str:
    """``h:mm:ss`` of a non-negative duration (negative counts as 0)."""
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def tqdm_bar(total: int | None, desc: str | None = None, *, unit: str = "it", initial: int = 0) -> Any:
    """A tqdm bar on stderr (only call it when stderr is a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


class Progress:
    """Progress of one step of ``total`` units (see the module docstring)."""

    def __init__(
        self, total: int | None, desc: str, *, unit: str = "it", enabled: bool = True,
        every_s: float | None = None, file: TextIO | None = None,
    ) -> None:  # fmt: skip
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file  # the plain lines' stream: None is stdout (a command whose stdout is its result passes stderr)
        self.enabled = enabled and not _quiet
        self.every_s = LINE_EVERY_S if every_s is None else every_s
        self.n = 0
        self.t0 = self.t_line = time.perf_counter()
        self.bar: Any = None
        if self.enabled and sys.stderr.isatty():
            self.bar = tqdm_bar(total, desc, unit=unit)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            now = time.perf_counter()
            if now - self.t_line >= self.every_s and (self.total is None or self.n < self.total):
                self.t_line = now
                print(self._line(now), file=self.file or sys.stdout, flush=True)

    def _line(self, now: float) -> str:
        rate = self.n / max(now - self.t0, 1e-9)
        if not self.total:
            return f"{self.desc}: {self.n} {self.unit} {rate:.1f} {self.unit}/s"
        eta = fmt_time((self.total - self.n) / rate) if rate > 0 else "?"
        return (f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%) "
                f"{rate:.1f} {self.unit}/s eta {eta}")  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled:
            self.enabled = False
            print(f"{self.desc}: {self.n} {self.unit} in {fmt_time(time.perf_counter() - self.t0)}",
                  file=self.file or sys.stdout, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        elif self.bar is not None:
            self.bar.close()
            self.bar = None


def progress(total: int | None, desc: str, *, unit: str = "it", enabled: bool = True) -> Progress:
    """A :class:`Progress` (use it as a context manager)."""
    return Progress(total, desc, unit=unit, enabled=enabled)
