"""A small synchronous client of the public API, for the CLI and the demo."""

from __future__ import annotations

import os

import typer

from core import tls
from core.config import Settings
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc


def credentials() -> list[tuple[str, str]]:
    """The API key in RECSYS_API_KEY as call metadata (none when it is unset: a loopback stack with auth off)."""
    key = os.environ.get("RECSYS_API_KEY", "").strip()
    return [("authorization", f"Bearer {key}")] if key else []


def recommend(
    settings: Settings, user_id: str, k: int, surface: str, debug: bool, timeout_s: float = 5.0
) -> pb.RecommendResponse:
    """One Recommend call to settings.orchestrator_addr, over TLS when the settings configure it."""
    with tls.channel(settings.orchestrator_addr, settings) as channel:
        return pb_grpc.RecommenderStub(channel).Recommend(
            pb.RecommendRequest(user_id=user_id, k=k, context=pb.Context(surface=surface), debug=debug),
            timeout=timeout_s, metadata=credentials(),
        )


def print_recommendations(user_id: str, response: pb.RecommendResponse) -> None:
    header = f"\nRecommendations for user {user_id} (model {response.model_version or '-'})"
    if response.degraded:
        header += f"  [degraded: {'; '.join(response.degraded_reasons)}]"
    typer.secho(header, bold=True)
    for rank, it in enumerate(response.items, 1):
        title = it.item.title or it.item_id
        typer.echo(f"  {rank:>2}. {title[:48]:<48} score {it.score:6.3f}  {it.reason}")
    for st in response.debug.stages:
        removed = f" removed {dict(st.removed)}" if st.removed else ""
        typer.echo(f"     {st.stage:<30} {st.outcome:<10} {st.candidates_in:>4} -> {st.candidates_out:<4} "
                   f"{st.latency_ms:7.2f} ms {st.note}{removed}")
