"""The Dramatiq transport: a Redis broker built with an explicit (empty) middleware list, a
batch doorbell, and a consumer that wakes on a pub/sub notification instead of polling.

Dramatiq's Retries, TimeLimit, AgeLimit, Callbacks and Pipelines are deliberately absent:
attempts, backoff and deadlines belong to the ledger (docs/design.md, "The one idea").
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from core.domain import errors

# The consumer's pause when its prefetch window is full (workers busy): short, because the
# window frees as soon as a worker acks and no notification is sent for that.
_FULL_WINDOW_PAUSE_S = 0.002


def actor_name(queue: str) -> str:
    return f"orch.doorbell.{queue}"


class OrchRedisBroker(RedisBroker):
    """RedisBroker plus batch enqueue, wake-up notifications and a backlog probe.

    The batch path writes exactly what RedisBroker.enqueue's Lua script writes (message
    body into `<ns>:<queue>.msgs`, id onto the `<ns>:<queue>` list), in one pipeline.
    """

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _NotifyingConsumer

    def notify_channel(self, queue: str) -> str:
        return f"{self.namespace}:{queue}.notify"

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        sent = super().enqueue(message, delay=delay)
        if delay is None:
            self.client.publish(self.notify_channel(message.queue_name), b"1")
        return sent

    def enqueue_encoded(self, by_queue: Mapping[str, Sequence[tuple[str, bytes]]], *, chunk: int = 5000) -> None:
        """Enqueue (redis message id, encoded message) pairs per queue in one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        for queue, batch in by_queue.items():
            key = f"{self.namespace}:{queue}"
            for start in range(0, len(batch), chunk):
                part = batch[start : start + chunk]
                pipe.hset(key + ".msgs", mapping=dict(part))
                pipe.rpush(key, *(mid for mid, _ in part))
            pipe.publish(self.notify_channel(queue), b"1")
        pipe.execute()

    def outstanding(self, queue: str, *, live_within_s: float = 5.0) -> int:
        """Doorbells of `queue` that will still reach a claim: those waiting in Redis, plus
        those delivered to consumers that are alive (heartbeat within `live_within_s`).

        A killed worker's unacknowledged messages are not counted: Dramatiq hands them back
        only after its heartbeat timeout (60 s) and a random maintenance pass, and the
        scheduler must not wait for that. A consumer busy on long jobs for longer than the
        window is counted as gone too; at worst its jobs get a second doorbell, which is
        harmless (ADR 0001)."""
        ns = self.namespace
        now_ms = int(time.time() * 1000)
        live = self.client.zrangebyscore(f"{ns}:__heartbeats__", now_ms - int(live_within_s * 1000), "+inf")
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(f"{ns}:{queue}")
        for worker_id in live:
            wid = worker_id.decode() if isinstance(worker_id, bytes) else str(worker_id)
            pipe.scard(f"{ns}:__acks__.{wid}.{queue}")
        return int(sum(pipe.execute()))


class _NotifyingConsumer(_RedisConsumer):
    """Fetches like RedisBroker's consumer, but an idle one blocks on the queue's pub/sub
    channel (up to the worker timeout) instead of sleeping, so a doorbell on an idle system
    is picked up within a millisecond or two."""

    def __init__(self, broker: OrchRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._pubsub: Any = None

    def _wait_for_notify(self, timeout_s: float) -> None:
        if self._pubsub is None:
            # Subscribe first, then return so the caller fetches again: a doorbell enqueued
            # between the empty fetch and the subscription is not missed.
            self._pubsub = self.broker.client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(self.broker.notify_channel(self.queue_name))
            return
        if self._pubsub.get_message(timeout=timeout_s) is not None:
            while self._pubsub.get_message(timeout=0.0) is not None:
                pass

    def __next__(self) -> dramatiq.MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return dramatiq.MessageProxy(message)
                room = self.prefetch - self.outstanding_message_count
                if room <= 0:
                    time.sleep(_FULL_WINDOW_PAUSE_S)
                    return None
                self.message_cache = self.broker.do_fetch(self.queue_name, room) or []
                if not self.message_cache:
                    self._wait_for_notify(self.timeout / 1000)
                    return None
        except redis.ConnectionError as e:
            self._close_pubsub()
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def _close_pubsub(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                self._pubsub.close()
            self._pubsub = None

    def close(self) -> None:
        self._close_pubsub()
        super().close()


def build_broker(redis_url: str, *, namespace: str = "orch") -> OrchRedisBroker:
    """A broker with no default middleware. Nothing connects until first use."""
    return OrchRedisBroker(url=redis_url, namespace=namespace, middleware=[])  # type: ignore[no-untyped-call]


def encode_doorbells(queue: str, job_ids: Sequence[int]) -> list[tuple[str, bytes]]:
    """(redis message id, encoded message) for each job: byte for byte what
    a Dramatiq `Message(...).encode()` of the doorbell actor gives with these ids, built without a dataclass and a
    JSON encoder per message (ringing 20,000 doorbells is on the batch-submit path). Ids are
    a random per-batch prefix plus a counter: unique, and one urandom call per batch."""
    prefix = uuid.uuid4().hex
    now = int(time.time() * 1000)
    head = json.dumps(queue) + ',"actor_name":' + json.dumps(actor_name(queue))
    out = []
    for n, job_id in enumerate(job_ids):
        mid = f"{prefix}-{n}"
        body = (
            '{"queue_name":' + head + ',"args":[' + str(int(job_id)) + '],"kwargs":{},'
            '"options":{"redis_message_id":"' + mid + '"},"message_id":"' + mid + '",'
            '"message_timestamp":' + str(now) + "}"
        )
        out.append((mid, body.encode()))
    return out


class RedisDoorbell:
    """core.control.Doorbell over the broker: one message per ready job, carrying its id."""

    def __init__(self, broker: OrchRedisBroker) -> None:
        self.broker = broker

    def ring(self, jobs: Sequence[tuple[int, str]]) -> None:
        if not jobs:
            return
        by_queue: dict[str, list[int]] = defaultdict(list)
        for job_id, queue in jobs:
            by_queue[queue].append(job_id)
        try:
            self.broker.enqueue_encoded({q: encode_doorbells(q, ids) for q, ids in by_queue.items()})
        except redis.RedisError as exc:
            raise errors.Unavailable(f"cannot reach Redis: {exc}") from None


def check_redis(broker: OrchRedisBroker) -> None:
    """Raise Unavailable with a fixable message if Redis does not answer."""
    try:
        broker.client.ping()
    except redis.RedisError as exc:
        raise errors.Unavailable(
            f"cannot reach Redis: {exc} (check ORCH_REDIS_URL, or run `orch up` for the embedded server)"
        ) from None
