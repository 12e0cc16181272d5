"""Pipeline steps (CONTRACT §2): each a one-key mapping, discriminated by that key.

``filter`` and ``map`` are CEL; ``window`` aggregates per tumbling or sliding window;
``dedupe`` drops repeats of a key; ``sample`` lets at most ``max`` events through ``per``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Discriminator, PositiveInt, Tag, field_validator, model_validator

from bridge.config.fields import CelExpression, Duration, Strict
from bridge.expressions import compile_aggregate

STEP_KINDS = ("filter", "map", "window", "dedupe", "sample")


class FilterStep(Strict):
    filter: CelExpression


class MapStep(Strict):
    map: CelExpression


class WindowSpec(Strict):
    tumbling: Duration | None = None
    sliding: Duration | None = None
    every: Duration | None = None
    group_by: CelExpression | None = None
    aggregate: dict[str, str]

    @field_validator("aggregate")
    @classmethod
    def _aggregates(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("needs at least one aggregate, e.g. {n: count()}")
        for name, spec in value.items():
            if name in ("group", "window_start", "window_end"):
                raise ValueError(f"aggregate name {name!r} is reserved")
            try:
                compile_aggregate(spec)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> WindowSpec:
        if (self.tumbling is None) == (self.sliding is None):
            raise ValueError("give exactly one of tumbling or sliding")
        if self.sliding is not None:
            if self.every is None:
                raise ValueError("a sliding window needs every")
            ratio = self.sliding / self.every
            if self.every > self.sliding or abs(ratio - round(ratio)) > 1e-9:
                raise ValueError("sliding must be a whole multiple of every")
        elif self.every is not None:
            raise ValueError("every applies to sliding windows only")
        return self


class WindowStep(Strict):
    window: WindowSpec


class DedupeSpec(Strict):
    key: CelExpression
    within: Duration


class DedupeStep(Strict):
    dedupe: DedupeSpec


class SampleSpec(Strict):
    max: PositiveInt
    per: Duration
    group_by: CelExpression | None = None


class SampleStep(Strict):
    sample: SampleSpec


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        (kind,) = value
        return kind if kind in STEP_KINDS else None
    if isinstance(value, BaseModel):
        return next(k for k in STEP_KINDS if k in type(value).model_fields)
    return None


Step = Annotated[
    Annotated[FilterStep, Tag("filter")]
    | Annotated[MapStep, Tag("map")]
    | Annotated[WindowStep, Tag("window")]
    | Annotated[DedupeStep, Tag("dedupe")]
    | Annotated[SampleStep, Tag("sample")],
    Discriminator(
        _step_kind,
        custom_error_type="invalid_step",
        custom_error_message="a step is a mapping with exactly one of "
        "filter, map, window, dedupe, sample",
    ),
]
