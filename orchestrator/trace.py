"""Per-stage records of a request: candidates in and out, start and latency, notes, removals.

Stages are listed in the order they started, so concurrent stages (the candidate sources)
sit under the stage that launched them, and their start_ms/latency_ms show the overlap.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from protos import recsys_pb2 as pb


class Trace:
    def __init__(self) -> None:
        self.stages: list[pb.StageTrace] = []
        self.degraded: list[str] = []
        self._t0 = time.perf_counter()

    @contextmanager
    def stage(self, name: str, candidates_in: int = 0) -> Iterator[pb.StageTrace]:
        start = time.perf_counter()
        record = pb.StageTrace(stage=name, candidates_in=candidates_in, start_ms=(start - self._t0) * 1000)
        self.stages.append(record)
        try:
            yield record
        finally:
            record.latency_ms = (time.perf_counter() - start) * 1000

    def note(self, name: str, note: str) -> pb.StageTrace:
        """A stage that did not run (a gated-off source): listed with its reason, no latency."""
        record = pb.StageTrace(stage=name, note=note, start_ms=(time.perf_counter() - self._t0) * 1000)
        self.stages.append(record)
        return record

    def degrade(self, record: pb.StageTrace, reason: str) -> None:
        record.note = reason
        self.degraded.append(reason)
