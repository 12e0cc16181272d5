"""A topic's whole pipeline: its configured steps plus the change-event options of
CONTRACT §7b around them — ``debezium`` (Kafka topics carrying Debezium JSON) before,
``mask`` (for clients without the unmasking scope) and ``unwrap`` after.

Pipelines see the envelope as ``data``; the mask and unwrap apply to what comes out.
A masked and an unmasked variant are two hubs (each encodes its events once).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from bridge.config import Step, Topic
from bridge.event import Event
from pipelines.cdc import from_debezium, mask, unwrap
from pipelines.operators import EventFunction
from pipelines.pipeline import ErrorHandler, Pipeline, build_pipeline


def masked_for(topic: Topic, scopes: Collection[str]) -> bool:
    """Whether a client with ``scopes`` gets the topic's masked columns as null."""
    spec = topic.mask
    return spec is not None and (spec.unless_scope is None or spec.unless_scope not in scopes)


def topic_pipeline(
    topic: Topic,
    on_error: ErrorHandler,
    *,
    masked: bool,
    budget: float | None = None,
    steps: Sequence[Step] | None = None,
) -> Pipeline:
    """``steps``: instead of the topic's own (the steps after a window a worker runs)."""
    before: list[EventFunction] = [_from_debezium] if topic.debezium else []
    after: list[EventFunction] = []
    if masked and topic.mask is not None:
        columns = frozenset(topic.mask.columns)
        # unwrap comes after: the mask applies to the envelope's before and after.
        after.append(lambda event: event.with_data(mask(event.data, columns)))
    if topic.unwrap:
        after.append(_unwrap)
    steps = topic.pipeline if steps is None else steps
    return build_pipeline(steps, on_error, before=before, after=after, budget=budget)


def _from_debezium(event: Event) -> Event | None:
    envelope = from_debezium(event.data)
    return None if envelope is None else event.with_data(envelope)


def _unwrap(event: Event) -> Event:
    row, name = unwrap(event.data)
    return replace(event, data=row, name=name)
