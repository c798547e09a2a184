"""The doorbell transport against a real Redis: batch encoding matches Dramatiq's, batches
land where Dramatiq's consumer reads them, and the backlog probe ignores dead consumers."""

from __future__ import annotations

import time
from typing import Any

from dramatiq.message import Message

from worker.runtime import broker as broker_mod


def test_encoded_doorbells_are_byte_identical_to_dramatiq_messages() -> None:
    for mid, body in broker_mod.encode_doorbells("feeds.high", [1, 42, 10**12]):
        decoded = Message.decode(body)
        same = Message(
            queue_name="feeds.high",
            actor_name=broker_mod.actor_name("feeds.high"),
            args=decoded.args,
            kwargs={},
            options={"redis_message_id": mid},
            message_id=mid,
            message_timestamp=decoded.message_timestamp,
        )
        assert same.encode() == body
    ids = [mid for mid, _ in broker_mod.encode_doorbells("q", list(range(1000)))]
    assert len(set(ids)) == 1000


def test_ring_then_a_dramatiq_consumer_receives_every_job_id(broker: Any) -> None:
    bell = broker_mod.RedisDoorbell(broker)
    bell.ring([(i, "default") for i in range(1, 251)] + [(999, "other")])
    assert broker.outstanding("default") == 250
    consumer = broker.consume("default", prefetch=300, timeout=100)
    got: list[int] = []
    deadline = time.monotonic() + 10
    while len(got) < 250 and time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            got.append(message.args[0])
            consumer.ack(message)
    consumer.close()
    assert sorted(got) == list(range(1, 251))
    assert broker.outstanding("default") == 0
    assert broker.outstanding("other") == 1


def test_outstanding_counts_live_consumers_only(broker: Any) -> None:
    broker_mod.RedisDoorbell(broker).ring([(i, "default") for i in range(10)])
    consumer = broker.consume("default", prefetch=4, timeout=100)
    first = next(consumer)  # fetches 4: now held by a live consumer
    assert first is not None
    assert broker.outstanding("default") == 10
    # The consumer's worker stops heartbeating (killed): its 4 doorbells no longer count.
    broker.client.zadd(f"{broker.namespace}:__heartbeats__", {broker.broker_id: 0})
    assert broker.outstanding("default") == 6
    consumer.close()
