"""Which hub serves a topic: topics share a hub when they read the same channel the
same way (steps, replay, masking, endpoint), so each event is read and encoded once."""

from __future__ import annotations

import json

from bridge.catalog import TopicMatch
from bridge.config import Target
from bridge.window_topics import WindowJob
from gateway.upstreams import source_name


def hub_key(
    match: TopicMatch, job: WindowJob | None, masked: bool = False, target: Target = "production"
) -> tuple[str, str, str]:
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
    if job is not None:  # the worker's output: another topic, maybe on another broker
        return (job.kafka, job.output, json.dumps(shape, sort_keys=True))
    source = source_name(match.api, target)
    return (source, match.channel, json.dumps(shape, sort_keys=True))
