"""What a user reads about a training config: the resolved YAML and the list of keys.

* :func:`resolved_yaml` - the config after the file, the overrides and the
  defaults, paths absolute (so the text trains the same run from any folder):
  ``audiocl train --print-config``. Fed back as ``--config`` it validates to
  the same :class:`~audiocl.train.config.TrainingConfig`.
* :func:`config_keys` / :func:`keys_text` - every dotted key of the schema
  with its type, default and description, read from the pydantic models of
  :mod:`audiocl.train.config` (so the list cannot drift from what is
  accepted): ``audiocl config keys``.

No ``${...}`` interpolation: the libraries that give it (OmegaConf,
jsonargparse) are not dependencies of the project.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from audiocl.train.config import TrainingConfig, absolute_paths

__all__ = ["config_keys", "keys_text", "resolved_yaml"]


def resolved_yaml(cfg: TrainingConfig) -> str:
    """``cfg`` (paths made absolute) as YAML, sections in schema order."""
    import yaml

    return yaml.safe_dump(absolute_paths(cfg).to_dict(), sort_keys=False, allow_unicode=True)


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    if ann is type(None):
        return "null"
    return getattr(ann, "__name__", str(ann))


def _default(info: Any) -> Any:
    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        value = info.default_factory()
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return "<required>"


def config_keys(model: type[BaseModel] = TrainingConfig, prefix: str = "") -> list[dict[str, Any]]:
    """``[{"key", "type", "default", "description"}]`` for every leaf of ``model``."""
    out: list[dict[str, Any]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += config_keys(ann, key + ".")
            continue
        out.append({"key": key, "type": _type_name(ann), "default": _default(info),
                    "description": info.description or ""})  # fmt: skip
    return out


def keys_text() -> str:
    """The key list as aligned text, one key a line."""
    import json

    rows = config_keys()
    kw = max(len(r["key"]) for r in rows)
    tw = min(max(len(r["type"]) for r in rows), 40)
    lines = []
    for r in rows:
        default = json.dumps(r["default"]) if not isinstance(r["default"], str) or r["default"] != "<required>" else r["default"]
        desc = f"  # {r['description']}" if r["description"] else ""
        lines.append(f"{r['key']:<{kw}}  {r['type']:<{tw}}  = {default}{desc}")
    return "\n".join(lines) + "\n"
