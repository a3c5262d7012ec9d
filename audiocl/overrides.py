"""The one command-line override syntax: ``KEY=VALUE``, the value parsed as YAML.

Every subcommand that takes overrides uses it: ``audiocl train`` (positional
``key=value`` or ``--set key=value``, dotted keys into the training config) and
``audiocl extract`` (``--set key=value``, front-end parameters). The value is
one YAML scalar or flow collection: ``80``, ``1e-3``, ``null``, ``true``,
``hann``, ``[audio, text]``, ``{name: clip}``; an empty value is ``null``, and
``1e-3`` is a number (as in JSON and YAML 1.2; PyYAML alone reads it as a string).
JSON values (``--set f_max=8000.0``, ``"hann"``) are valid YAML and read the same.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from audiocl.config_yaml import load_yaml
from audiocl.errors import AudioclError, InputError

__all__ = ["apply_overrides", "parse_override"]

# YAML 1.1 (PyYAML) reads 1e-3 and 8e1 as strings; JSON and YAML 1.2 read them as numbers
_EXP_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], the value parsed as YAML)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise AudioclError(f"override {text!r}: expected key=value with a dotted key, e.g. optim.lr=1e-3")
    try:
        parsed = load_yaml(value, "<command line>") if value.strip() else None
    except InputError as err:
        raise AudioclError(f"override {text!r}: value is not valid YAML ({err.message})") from None
    if isinstance(parsed, str) and _EXP_NUMBER.match(value.strip()):
        parsed = float(parsed)
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key=value`` override set (dotted paths make
    or enter sections; a path through a non-section value is refused)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise AudioclError(f"override {text!r}: '{where}' is not a section")
            node = child
        node[path[-1]] = value
    return out
