"""The interactions stream in Redis: LogInteractions publishes each stored interaction,
the real-time worker consumes it through a consumer group (at-least-once)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

STREAM = "recsys:interactions"
GROUP = "feature-push"
MAXLEN = 1_000_000  # approximate cap: the stream is a buffer, PostgreSQL is the record


@dataclass(frozen=True)
class Event:
    interaction_id: str
    user_id: str
    item_id: str
    type: str
    value: float

    def fields(self) -> dict[str, str]:
        return {"id": self.interaction_id, "user": self.user_id, "item": self.item_id, "type": self.type,
                "value": repr(self.value)}

    @classmethod
    def from_fields(cls, f: dict[bytes, bytes]) -> Event:
        return cls(f[b"id"].decode(), f[b"user"].decode(), f[b"item"].decode(), f[b"type"].decode(),
                   float(f[b"value"]))


async def publish(redis: Redis, events: list[Event]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for e in events:
            pipe.xadd(STREAM, e.fields(), maxlen=MAXLEN, approximate=True)
        await pipe.execute()
