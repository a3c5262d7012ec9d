"""The base of every typed config (training, model, encoder parameters) and its one error formatter.

Configs are pydantic models that reject unknown keys (``extra="forbid"``), so a
typo such as ``optim.lr_rate`` fails naming the key instead of silently
training with a default, and re-validate on assignment.
:func:`format_validation_error` turns pydantic's report into one line that
names each offending key by its dotted path.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["StrictModel", "format_validation_error"]


class StrictModel(BaseModel):
    """Unknown keys are rejected; assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line, the problems joined by ``; ``, each naming the key's dotted path
    (under ``prefix``): ``unknown key 'optim.lr_rate'`` or ``'data.batch_size': <reason>``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        else:
            parts.append(f"'{loc}': {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)
