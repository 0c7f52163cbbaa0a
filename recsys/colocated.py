"""The co-located deployment: one process serves the Recommender with retrieval and ranking inside it.

`RECSYS_DEPLOYMENT=colocated`: `recsys serve orchestrator` loads the retrieval and ranking servicers
(their model watchers and live sync included) and hands the orchestrator stubs that call them in
process (core/in_process.py). Requests skip two internal gRPC hops: their serialization, sockets,
servers and the two other processes' share of the CPU (docs/benchmarks.md). The orchestrator's code
is the same in both deployments; only what its stubs reach differs. Composed here, above the
orchestrator, so that the orchestrator package never imports retrieval or ranking.
"""

from __future__ import annotations

from core.config import Settings
from core.in_process import InProcessStub
from orchestrator import service as orchestrator
from ranking import service as ranking
from retrieval import service as retrieval


async def run(settings: Settings) -> None:
    found = await retrieval.load(settings, export_metrics=False)  # the orchestrator's own says the same
    scored = await ranking.load(settings)

    async def close() -> None:
        found.close()
        scored.close()

    downstream = orchestrator.Downstream(
        InProcessStub(found.servicer, ["Retrieve"]), InProcessStub(scored.servicer, ["Rank"]),
        # ready once a model is loaded, as the retrieval service is
        healthy=found.healthy, close=close,
    )
    await orchestrator.run(settings, downstream)
