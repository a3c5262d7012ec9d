"""Optional dependencies, imported only when a feature needs them.

``require("lhotse", "lhotse")`` returns the module, or raises one
:class:`~audiocl.errors.AudioclError` line that names the extra to install, so a
plain ``pip install audiocl`` never fails on import and a user who asks for an
optional feature is told exactly what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from audiocl.errors import AudioclError


def require(module: str, extra: str, *, feature: str | None = None) -> ModuleType:
    """Import ``module``; if it is missing, raise an AudioclError naming ``extra``.

    ``feature`` (e.g. ``"audiocl prepare lhotse"``) says what needed it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        # an import error inside the installed package is a real bug, not a missing extra
        if e.name is not None and e.name.split(".")[0] != top:
            raise
        what = feature or "this feature"
        raise AudioclError(
            f"{what} needs the optional package {top!r}: pip install 'audiocl[{extra}]'"
        ) from None
