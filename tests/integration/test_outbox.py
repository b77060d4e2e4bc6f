"""The worker's outbox against the real broker: delivered means on the broker."""

from __future__ import annotations

import asyncio
import uuid

from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import Outbox, ensure_topics


def test_delivered_returns_once_every_record_sent_is_on_the_broker(isolated) -> None:
    settings = isolated.settings
    topic = settings.topics.alerts
    partitions = ensure_topics(settings)[topic]
    outbox = Outbox(settings)
    for i in range(2000):
        outbox.send(topic, f"k{i}".encode(), f"v{i}".encode())
    asyncio.run(asyncio.wait_for(outbox.delivered(), 60))

    # Asked of the broker right away: every record is there, none still on its way.
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"outbox-{uuid.uuid4().hex}"})
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()
    assert sum(ends) == 2000
