"""Value types every section of the config uses: the strict base model, durations and
CEL expressions. Each is validated where it is written, so a problem names its field."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationInfo,
)

from bridge.durations import format_duration, parse_duration
from bridge.expressions import DEFAULT_LIMITS, CelLimits, compile_expression


class Strict(BaseModel):
    """A config section: unknown keys are problems, values never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""Seconds, written ``500ms``, ``10s``, ``1m``, ``1h``, ``1d`` or as a bare number."""


def expression_context(limits: CelLimits) -> dict[str, Any]:
    """The pydantic validation context under which every CelExpression is checked against
    ``limits``: the loader passes the config's own, the gateway its running config's."""
    return {"cel_limits": limits}


def _compiles(source: str, info: ValidationInfo) -> str:
    """Compiles within the config's ``gateway.limits`` (CONTRACT §4c), given by
    :func:`expression_context`; without a context the defaults hold."""
    context = info.context if isinstance(info.context, dict) else {}
    limits = context.get("cel_limits", DEFAULT_LIMITS)
    compile_expression(source, limits)  # raises ValueError naming the parser's complaint
    return source


CelExpression = Annotated[str, AfterValidator(_compiles)]
"""A CEL expression over an event (CONTRACT §2), kept as written once it compiles."""
