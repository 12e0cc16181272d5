"""Which hub serves a topic: topics share a hub when they read the same channel the
same way (steps, replay, masking, endpoint), so each event is read and encoded once."""

from __future__ import annotations

import json

from bridge.catalog import TopicMatch
from bridge.config import Target
from bridge.window_topics import WindowJob
from gateway.upstreams import source_name


class HubKeys:
    """The hub key of each topic, its shape worked out once per topic of the catalogue
    (a reconnect storm asks it per stream)."""

    def __init__(self) -> None:
        self._shapes: dict[tuple[int, int, bool], tuple[str, object, object]] = {}

    def key(
        self,
        match: TopicMatch,
        job: WindowJob | None,
        masked: bool = False,
        target: Target = "production",
    ) -> tuple[str, str, str]:
        api, topic = match.api, match.topic
        cache_key = (id(topic), id(api), masked)
        cached = self._shapes.get(cache_key)
        if cached is None or cached[1] is not topic or cached[2] is not api:
            # The objects are kept with their shape: their ids stay theirs meanwhile.
            cached = self._shapes[cache_key] = (hub_shape(match, job, masked), topic, api)
        if job is not None:  # the worker's output: another topic, maybe on another broker
            return (job.kafka, job.output, cached[0])
        return (source_name(api, target), match.channel, cached[0])


def hub_shape(match: TopicMatch, job: WindowJob | None, masked: bool) -> str:
    """Topics share a hub when they read the same channel the same way."""
    topic = match.topic
    steps = topic.pipeline if job is None else job.after
    shape = {
        "steps": [s.model_dump(mode="json") for s in steps],
        "replay": match.api.replay.model_dump(mode="json"),
        "debezium": topic.debezium,
        "unwrap": topic.unwrap,
        "mask": topic.mask.model_dump(mode="json") if masked and topic.mask else None,
    }
    endpoint = match.api.endpoint
    if endpoint is not None:  # a changed endpoint is another upstream connection
        shape["endpoint"] = endpoint.model_dump(mode="json")
    return json.dumps(shape, sort_keys=True)
