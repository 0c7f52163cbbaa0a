"""Per-stage records of a request: candidates in and out, latency, notes, removals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from protos import recsys_pb2 as pb


class Trace:
    def __init__(self) -> None:
        self.stages: list[pb.StageTrace] = []
        self.degraded: list[str] = []

    @contextmanager
    def stage(self, name: str, candidates_in: int = 0) -> Iterator[pb.StageTrace]:
        record = pb.StageTrace(stage=name, candidates_in=candidates_in)
        start = time.perf_counter()
        try:
            yield record
        finally:
            record.latency_ms = (time.perf_counter() - start) * 1000
            self.stages.append(record)

    def degrade(self, record: pb.StageTrace, reason: str) -> None:
        record.note = reason
        self.degraded.append(reason)
