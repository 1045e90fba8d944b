"""What every algorithm shares: typed options parsed in one place, and the change it reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from qvision.errors import QVisionError


class Options(BaseModel):
    """An algorithm's settings (``--algo-option NAME.KEY=VALUE``). Command-line strings are
    converted by type ('300' -> 300, 'false' -> False); unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_options(name: str, cls: type[Options], raw: Mapping[str, Any]) -> Options:
    """``raw`` as ``cls``, or one line naming the first problem."""
    try:
        return cls.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            known = ", ".join(cls.model_fields) or "none"
            raise QVisionError(f"unknown {name} option '{key}' (known: {known})") from None
        raise QVisionError(
            f"{name}.{key}: {err['msg'][0].lower()}{err['msg'][1:]}, not {err['input']!r}"
        ) from None


@dataclass
class Change:
    """What ``apply`` reports; the registry adds the name, stage, options and time."""

    unit: str
    changed: int
    message: str  # one line for the plan's warnings and the result JSON
    of: int | None = None
    error: str | None = None
    error_before: float | None = None
    error_after: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
