"""A tier's ``delivery`` policy (CONTRACT §10): how its connections receive events.

``all`` (the default) delivers every event in order and cuts a client that falls behind;
``conflate`` keeps, per connection, only the latest event of each key for ``every``;
``sample`` lets at most ``max`` events through ``per`` and skips the rest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt, field_validator

from bridge.config.fields import CelExpression, Duration, Strict


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be longer than 0s")
    return value


class Conflation(Strict):
    key: CelExpression
    every: Duration

    _every = field_validator("every")(_positive)


class Sampling(Strict):
    max: PositiveInt
    per: Duration

    _per = field_validator("per")(_positive)


class ConflateDelivery(Strict):
    conflate: Conflation


class SampleDelivery(Strict):
    sample: Sampling


Delivery = Literal["all"] | ConflateDelivery | SampleDelivery


def describe(delivery: Delivery) -> str | dict[str, object]:
    """The policy as the config writes it (management API, AsyncAPI export)."""
    if isinstance(delivery, str):
        return delivery
    return delivery.model_dump(mode="json")
