"""connectors.kafka_topics.KafkaTopics.records against Apache Kafka: the range the window
worker reads itself when Faust skipped records after a rebalance (worker/continuity.py)."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer

from connectors.kafka_topics import KafkaTopics

KAFKA = "127.0.0.1:9092"


async def test_records_gives_exactly_the_range_asked_with_what_the_agents_use() -> None:
    topic = f"range-{uuid.uuid4().hex[:10]}"
    async with KafkaTopics(KAFKA) as kafka:
        await kafka.ensure(topic, 2)
        producer = AIOKafkaProducer(bootstrap_servers=KAFKA)
        await producer.start()
        try:
            for n in range(6):
                await producer.send_and_wait(
                    topic,
                    str(n).encode(),
                    key=b"k%d" % n,
                    partition=1,
                    timestamp_ms=1_700_000_000_000 + n,
                    headers=[("h", b"%d" % n)],
                )
        finally:
            await producer.stop()
        records = await kafka.records(topic, 1, 2, 5)
        beyond = await kafka.records(topic, 1, 4, 100)  # up to the end of the log
        other = await kafka.records(topic, 0, 0, 3)  # a partition with none
    assert [(r.partition, r.offset, r.key, r.value) for r in records] == [
        (1, 2, b"k2", b"2"),
        (1, 3, b"k3", b"3"),
        (1, 4, b"k4", b"4"),
    ]
    assert [r.headers for r in records] == [[("h", b"2")], [("h", b"3")], [("h", b"4")]]
    assert [r.timestamp for r in records] == [
        1_700_000_000.002,
        1_700_000_000.003,
        1_700_000_000.004,
    ]
    assert [r.offset for r in beyond] == [4, 5]
    assert other == []
