"""Errors a user can cause and fix: the CLI prints them as one line, no traceback."""

from __future__ import annotations


class AudioclError(Exception):
    """Base class for mistakes in user input (files, configs, arguments).

    The CLI catches these and prints ``audiocl: error: <message>`` with exit
    status 2. Bugs in audiocl itself are ordinary exceptions and keep their
    traceback.
    """


class InputError(AudioclError):
    """A problem located in a user's file: names the file, line and field.

    ``line`` is 1-based; ``field`` is a dotted path inside the record
    (``"texts[2]"``, ``"audio.sampling_rate"``). Either may be None when the
    problem concerns the whole file.
    """

    def __init__(
        self,
        path: str | None,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path or "<input>"
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")
