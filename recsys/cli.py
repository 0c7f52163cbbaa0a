"""The one command line: data, train, features, serve, demo, and a client for the API.

With no DATABASE_URL / REDIS_URL set, commands that need the servers start embedded
PostgreSQL and Redis under var/ (and reuse them on later runs); `recsys stop`
stops the services and those servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from core.config import Settings

if TYPE_CHECKING:
    import psycopg

    from orchestrator.config import OrchestratorConfig
    from orchestrator.rate_limits import Limits
    from storage.api_keys import ApiKey

app = typer.Typer(help="A gRPC recommendation serving system.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Fetch datasets and load them into PostgreSQL.", no_args_is_help=True)
features_app = typer.Typer(help="The Feast feature store: register definitions, materialize.", no_args_is_help=True)
app.add_typer(data_app, name="data")
experiments_app = typer.Typer(help="A/B experiments: definitions and results.", no_args_is_help=True)
app.add_typer(features_app, name="features")
batch_app = typer.Typer(help="Batch jobs over all users.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
app.add_typer(batch_app, name="batch")
keys_app = typer.Typer(help="API keys of the public API (docs/security.md).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
tls_app = typer.Typer(help="TLS certificates (docs/security.md).", no_args_is_help=True)
app.add_typer(tls_app, name="tls")
config_app = typer.Typer(help="The orchestrator's configuration file (RECSYS_CONFIG).", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _from_env() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:  # a setting's value (named in the message) is not one it takes
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _settings(start_servers: bool = True) -> Settings:
    settings = _from_env()
    if start_servers and (not settings.database_url or not settings.redis_url):
        from recsys.embedded import ensure_servers

        settings = ensure_servers(settings)
    if start_servers:
        from storage.db import migrate

        migrate(settings.database_url)
    return settings


def _say(msg: str) -> None:
    typer.secho(msg, fg=typer.colors.CYAN, err=True)


# ---------------------------------------------------------------------------- data


@data_app.command("fetch")
def data_fetch() -> None:
    """Download MovieLens-100K (it ships inside the recbole wheel on PyPI) into the data folder."""
    from training import movielens

    folder = movielens.fetch(Settings.from_env().data_dir)
    _say(f"MovieLens-100K in {folder}")


@data_app.command("load")
def data_load(
    path: Annotated[Path | None, typer.Option(help="A folder in the CSV/parquet format (docs/data-format.md); "
                                              "default: MovieLens-100K")] = None,
    replace: Annotated[bool, typer.Option(help="Empty the tables first (--mode replace)")] = False,
    mode: Annotated[str, typer.Option(help="insert: new ids only (an id already there fails the load); upsert: "
                                      "add new, update changed, keep history; replace: empty the tables first")
                    ] = "insert",
) -> None:
    """Load users, items and interactions into PostgreSQL (COPY)."""
    from storage.bulk import MODES

    if mode not in MODES:
        raise _fail(f"error: --mode {mode!r}: use one of {', '.join(MODES)}")
    settings = _settings()
    counts = _load(settings, path, "replace" if replace else mode)
    _say(f"loaded {counts}")


@data_app.command("synthetic")
def data_synthetic(
    users: Annotated[int, typer.Option(help="Users")] = 100_000,
    items: Annotated[int, typer.Option(help="Items")] = 100_000,
    interactions: Annotated[int, typer.Option(help="Interactions")] = 1_000_000,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write parquet here instead of PostgreSQL")] = None,
    replace: Annotated[bool, typer.Option(help="Empty the tables first")] = False,
) -> None:
    """A synthetic shop: Zipf popularity, categories, prices, stock, sessions (streamed, not held in memory)."""
    from training import synthetic

    counts = (synthetic.generate(out, users, items, interactions, seed) if out else
              synthetic.load_into_postgres(_settings().database_url, users, items, interactions, seed,
                                           replace=replace))
    _say(f"synthetic: {counts}")


def _load(settings: Settings, path: Path | None, mode: str) -> dict[str, int]:
    import psycopg

    from storage.bulk import load_frames
    from training import movielens
    from training.dataset import load_files

    dataset = load_files(path) if path else movielens.load(movielens.fetch(settings.data_dir))
    try:
        return load_frames(settings.database_url, dataset.users, dataset.items, dataset.interactions, mode=mode)
    except psycopg.errors.UniqueViolation as exc:  # mode insert over rows already loaded
        held = (exc.diag.message_detail or "").removeprefix("Key ").rstrip(".")
        raise _fail(f"error: the database already holds {exc.diag.table_name or 'these'} rows ({held}): "
                    "--mode upsert adds new rows and updates changed ones, --replace starts over") from None


# ---------------------------------------------------------------------------- train


@app.command()
def train(
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: the TrainConfig's)")] = None,
) -> None:
    """Train the two-tower model on PostgreSQL's interactions; export a new artifact version (FAISS index too)."""
    _train(_settings(), epochs)


def _train(settings: Settings, epochs: int | None = None) -> Path:
    from dataclasses import replace

    from training.dataset import load_postgres
    from training.pipeline import train_and_export
    from training.train import TrainConfig

    config = TrainConfig() if epochs is None else replace(TrainConfig(), epochs=epochs)
    dataset = load_postgres(settings.database_url)
    _say(f"training on {dataset.summary()}")
    version_dir = train_and_export(dataset, settings.artifacts_dir, config)
    metrics = json.loads((version_dir / "manifest.json").read_text()).get("metrics", {})
    for model in ("two_tower", "popularity"):
        if model in metrics:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics[model].items())
            _say(f"held-out last item per user, {model}: {shown}")
    _say(f"artifacts: {version_dir}")
    return version_dir


# ---------------------------------------------------------------------------- evaluate


@app.command()
def evaluate(
    protocol: Annotated[str, typer.Option(help="per-user, global-time or cold-users")] = "per-user",
    models: Annotated[str, typer.Option(help="Comma-separated model names; default: all")] = "",
    dataset: Annotated[str, typer.Option(help="movielens, or a CSV/parquet folder")] = "movielens",
    out: Annotated[Path, typer.Option(help="Folder for the JSON, markdown and PNG")] = Path("reports/quality"),
) -> None:
    """Offline quality: run a protocol over named models, print the table, write reports."""
    from evaluation.cli import main as evaluate_main

    raise typer.Exit(evaluate_main(protocol, [m for m in models.split(",") if m] or None, out, dataset))


# ---------------------------------------------------------------------------- features


@features_app.command("apply")
def features_apply() -> None:
    """Register the Feast entities, feature views and push sources."""
    from feature_store import store

    store.apply(_settings())
    _say("feast definitions applied")


@features_app.command("materialize")
def features_materialize() -> None:
    """Rebuild the feature tables from PostgreSQL and materialize them into the Redis online store."""
    from feature_store import store

    settings = _settings()
    store.apply(settings)
    n = store.materialize(settings)
    _say(f"materialized ({n})")


# ---------------------------------------------------------------------------- experiments


@experiments_app.command("list")
def experiments_list() -> None:
    """The experiments in the config file (RECSYS_CONFIG), with their variants and shares."""
    from orchestrator import config

    settings = Settings.from_env()
    exps = config.load(settings.config_path).experiments.experiments
    if not exps:
        _say(f"no experiments configured in {settings.config_path}")
    for exp in exps:
        typer.echo(f"{exp.name} (salt {exp.salt!r}, surfaces: {', '.join(exp.surfaces) or 'all'})")
        for v in exp.variants:
            typer.echo(f"  {v.name:<20} {v.share:>6.1%}  {v.params}")


@experiments_app.command("report")
def experiments_report(
    experiment: Annotated[str | None, typer.Option(help="Only this experiment's variants")] = None,
) -> None:
    """Per variant: exposures, CTR and conversion with 95% intervals, and a significance test."""
    from orchestrator.experiment_report import collect, render

    typer.echo(render(collect(_settings().database_url, experiment)))


@batch_app.command("precompute")
def batch_precompute(
    surface: Annotated[str, typer.Option(help="The surface to compute for")] = "home",
    k: Annotated[int, typer.Option(help="Items per user")] = 50,
    inactive_days: Annotated[int | None, typer.Option(help="Only users inactive this many days")] = None,
) -> None:
    """Recommendations for every user through the running Recommender, stored for the degraded path."""
    import grpc

    from orchestrator.batch import precompute
    from recsys.client import credentials

    settings = _settings()
    try:  # with the key in RECSYS_API_KEY, as every client command sends it
        n = precompute(settings.database_url, settings.orchestrator_addr, surface, k, inactive_days,
                       settings=settings, metadata=credentials())
    except grpc.RpcError as exc:
        hint = {grpc.StatusCode.UNAVAILABLE: " (is the stack running? `make demo` or `recsys serve all`)",
                grpc.StatusCode.UNAUTHENTICATED: " (set RECSYS_API_KEY to a key of scope read or above)"}
        raise _fail(f"{exc.code().name}: {exc.details()}{hint.get(exc.code(), '')}") from None
    _say(f"precomputed {n} users for surface {surface!r} (and warmed their cache entries)")


@app.command()
def stats() -> None:
    """Serving counters summed over all orchestrator replicas: cache hit rate, degraded answers, and
    each pipeline component's runs by outcome and mean latency."""
    import redis

    from orchestrator.stats import KEY, hit_rate, stage_table

    client = redis.Redis.from_url(_settings().redis_url, decode_responses=True)
    counts = {k: float(v) for k, v in client.hgetall(KEY).items()}
    for name, n in sorted(counts.items()):
        if not name.startswith("stage:"):
            typer.echo(f"{name:<12} {int(n):>10}")
    rate = hit_rate(counts)
    typer.echo(f"{'hit rate':<12} {'-' if rate is None else f'{rate:.1%}':>10}")
    table = stage_table(counts)
    if table:
        typer.echo("")
        typer.echo(table)


@app.command()
def status() -> None:
    """The running stack on one screen: each service's health (ready, not ready, down), model version,
    request rate and p99 over the last second, the degraded share, dependencies down, worker lag."""
    from recsys.status import status as show

    typer.echo(show(_settings(start_servers=False)))


# ---------------------------------------------------------------------------- keys


def _fail(msg: str) -> typer.Exit:
    """A user's mistake: one line on stderr, exit status 2, no traceback."""
    typer.secho(msg, fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def _keys_db() -> psycopg.Connection:
    import psycopg

    from storage.db import connect

    try:
        return connect(_settings().database_url, autocommit=True)  # _settings() migrates: api_keys exists
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(f"cannot reach PostgreSQL: {first}") from None


_LIMIT_FLAGS = {"rate_per_s": "--rate", "burst": "--burst", "interactions_per_s": "--interactions-rate"}
RateOption = Annotated[str | None, typer.Option(
    "--rate", help="Calls per second (0 = unlimited; `default` = the scope's, RECSYS_RATE_<SCOPE>_PER_S)")]
BurstOption = Annotated[str | None, typer.Option(
    "--burst", help="Calls at once, on top of the rate (`default` = the scope's, RECSYS_RATE_<SCOPE>_BURST)")]
InteractionsOption = Annotated[str | None, typer.Option(
    "--interactions-rate", help="LogInteractions entries per second (0 = unlimited; `default` = "
                                "RECSYS_RATE_INTERACTIONS_PER_S)")]


def _limit_options(rate: str | None, burst: str | None, interactions: str | None) -> dict[str, float | None]:
    """The limits given on the command line: column -> value (None: back to the scope's default)."""
    from storage.api_keys import LIMIT_MAX, LIMIT_MIN

    limits: dict[str, float | None] = {}
    for column, text in (("rate_per_s", rate), ("burst", burst), ("interactions_per_s", interactions)):
        if text is None:
            continue
        flag, low = _LIMIT_FLAGS[column], LIMIT_MIN[column]
        if text.strip().lower() == "default":
            limits[column] = None
            continue
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if column == "burst" and value == value and value != int(value):
            raise _fail(f"{flag} {text!r}: a whole number of calls, or default")
        if not low <= value <= LIMIT_MAX:  # NaN too
            raise _fail(f"{flag} {text!r}: a number from {low} to {LIMIT_MAX}{' (0 = unlimited)' if low == 0 else ''}"
                        ", or default")
        limits[column] = int(value) if column == "burst" else value
    return limits


def _rate_defaults() -> dict[str, Limits]:
    from orchestrator.rate_limits import scope_defaults

    try:
        return scope_defaults(Settings.from_env())
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _limit_cells(key: ApiKey, defaults: dict[str, Limits]) -> tuple[str, str, str]:
    """A key's limits as `keys list` shows them: its own, or its scope's default marked with *."""
    from orchestrator.rate_limits import limits_for

    effective = limits_for(key, defaults)

    def cell(column: str, unlimited_at_zero: bool = True) -> str:
        value = getattr(effective, column)
        text = "unlimited" if unlimited_at_zero and value == 0 else f"{value:g}"
        return text + ("*" if getattr(key, column) is None else "")

    interactions = cell("interactions_per_s") if key.scope != "read" else "n/a"  # read keys cannot log them
    return cell("rate_per_s"), cell("burst", unlimited_at_zero=False), interactions


def _say_limits(key: ApiKey, defaults: dict[str, Limits]) -> None:
    rate, burst, interactions = _limit_cells(key, defaults)
    parts = [f"requests {rate}" if rate.startswith("unlimited") else f"{rate} requests/s (burst {burst})"]
    if interactions != "n/a":
        parts.append(f"interactions {interactions}" if interactions.startswith("unlimited")
                     else f"{interactions} interactions/s")
    marked = any("*" in part for part in parts)
    _say(f"limits: {', '.join(parts)}" + (" (* the scope's default, RECSYS_RATE_...)" if marked else ""))


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="read (recommendations, users, items), write (and interactions, "
                                            "upserts) or admin (everything)")],
    name: Annotated[str, typer.Option(help="What the key is for (shown by `keys list`)")] = "",
    rate: RateOption = None,
    burst: BurstOption = None,
    interactions_rate: InteractionsOption = None,
) -> None:
    """Create an API key and print it, once: only its hash is stored. Limits not given: the scope's defaults."""
    from storage.api_keys import SCOPES, create_key

    if scope not in SCOPES:
        raise _fail(f"--scope {scope!r}: use one of {', '.join(SCOPES)}")
    if len(name) > 200:
        raise _fail("--name: at most 200 characters")
    limits = _limit_options(rate, burst, interactions_rate)
    defaults = _rate_defaults()
    with _keys_db() as conn:
        record, key = create_key(conn, scope, name, limits)
    _say(f"API key {record.id} ({scope}{', ' + name if name else ''}); it is shown only now, keep it:")
    typer.echo(key)
    _say_limits(record, defaults)


@keys_app.command("limit")
def keys_limit(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (`recsys keys list`)")],
    rate: RateOption = None,
    burst: BurstOption = None,
    interactions_rate: InteractionsOption = None,
) -> None:
    """Change an API key's rate limits (those not given stay); the orchestrators apply it within a second."""
    from storage.api_keys import set_limits

    if not key_id.isdigit():
        raise _fail(f"ID {key_id!r}: a key's number, as `recsys keys list` shows it")
    limits = _limit_options(rate, burst, interactions_rate)
    if not limits:
        raise _fail("nothing to change: give --rate, --burst or --interactions-rate (a number, or default)")
    defaults = _rate_defaults()
    with _keys_db() as conn:
        record = set_limits(conn, int(key_id), limits)
    if record is None:
        raise _fail(f"no API key {key_id} (see `recsys keys list`)")
    _say(f"API key {record.id} ({record.scope}{', ' + record.name if record.name else ''}) changed")
    _say_limits(record, defaults)


@keys_app.command("list")
def keys_list() -> None:
    """The API keys: id, name, scope, rate limits, created, last used, revoked (never the keys themselves)."""
    from storage.api_keys import list_keys

    defaults = _rate_defaults()
    with _keys_db() as conn:
        keys = list_keys(conn)
    if not keys:
        _say("no API keys; create one with `recsys keys create --scope read`")
        return

    def when(t: datetime | None) -> str:
        return t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"

    typer.echo(f"{'id':>5}  {'name':<24} {'scope':<6} {'rate/s':>10} {'burst':>8} {'inter/s':>10}  "
               f"{'created':<19}  {'last used':<19}  revoked")
    marked = False
    for k in keys:
        rate, burst, interactions = _limit_cells(k, defaults)
        marked = marked or "*" in rate + burst + interactions
        typer.echo(f"{k.id:>5}  {k.name[:24]:<24} {k.scope:<6} {rate:>10} {burst:>8} {interactions:>10}  "
                   f"{when(k.created_at):<19}  {when(k.last_used_at):<19}  {when(k.revoked_at)}")
    if marked:
        _say("* the scope's default (RECSYS_RATE_... as this environment sets them; each orchestrator reads its "
             "own); change a key's with `recsys keys limit ID`")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (`recsys keys list`)")]) -> None:
    """Revoke an API key: the orchestrators refuse it within about a second."""
    from storage.api_keys import revoke_key

    if not key_id.isdigit():
        raise _fail(f"ID {key_id!r}: a key's number, as `recsys keys list` shows it")
    with _keys_db() as conn:
        record = revoke_key(conn, int(key_id))
    if record is None:
        raise _fail(f"no API key {key_id} (see `recsys keys list`)")
    _say(f"API key {record.id} ({record.scope}{', ' + record.name if record.name else ''}) revoked")


# ---------------------------------------------------------------------------- serve


@config_app.command("check")
def config_check(
    path: Annotated[Path | None, typer.Argument(help="The file; default RECSYS_CONFIG or config/recsys.toml")] = None,
) -> None:
    """Load the configuration as the orchestrator does: the surfaces and experiments it holds, or what is wrong."""
    path = path or _from_env().config_path
    checked = _checked_config(path)
    surfaces = ", ".join(sorted(checked.surfaces)) or "default (built in)"
    n = len(checked.experiments.experiments)
    typer.echo(f"ok: {path}: surfaces {surfaces}; {n} experiment{'s' * (n != 1)}")


def _checked_config(path: Path) -> OrchestratorConfig:
    """orchestrator.config.load(path), or one line saying what is wrong and exit status 2."""
    from orchestrator import config

    try:
        return config.load(path)
    except ValueError as exc:
        raise _fail(f"error: {exc}") from None


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="retrieval, ranking, orchestrator, worker, or all")],
) -> None:
    """Run a service in the foreground, or `all` four as background processes."""
    from recsys import workers

    if service == "orchestrator":  # several processes: their shared metrics directory, before core.metrics loads
        workers.prepare(_from_env())
    from core.tls import AddressInUse, server_tls
    from recsys import processes

    server_tls(_from_env())  # TLS settings that cannot work: one line, before anything starts
    if service in ("all", "orchestrator"):
        _checked_config(_from_env().config_path)  # a configuration mistake: one line, before anything starts
    settings = _settings()
    if service == "all":
        processes.start_all(settings)
        _print_reach(settings)
        return
    if service not in processes.SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; use one of {', '.join(processes.SERVICES)} or all")
    if service == "orchestrator" and workers.process_index() > 0:  # the first process serves the summed metrics
        settings = dataclasses.replace(settings, orchestrator_metrics_addr="")
    from core.logs import configure

    configure(service)  # text, or JSON lines with RECSYS_LOG_FORMAT=json
    from core import tracing

    tracing.configure(service)  # off unless OTEL_TRACES_EXPORTER says otherwise
    # Loading makes hundreds of thousands of objects that live as long as the process; collecting while
    # it runs only walks them again and again. The server collects once and freezes them before serving.
    gc.disable()
    from core.threads import limit_threads

    limit_threads()
    if service == "retrieval":
        from retrieval.service import run
    elif service == "ranking":
        from ranking.service import run
    elif service == "worker":
        from feature_store.worker_service import run
    elif settings.deployment == "colocated":
        from recsys.colocated import run  # the orchestrator with retrieval and ranking in its process
    else:
        from orchestrator.service import run
    try:
        with workers.helpers(settings) if service == "orchestrator" else contextlib.nullcontext():
            asyncio.run(run(settings))
    except AddressInUse as exc:  # one line, not a traceback
        raise _fail(str(exc)) from None


@app.command()
def stop(
    servers: Annotated[bool, typer.Option(help="Also stop the embedded PostgreSQL and Redis")] = True,
) -> None:
    """Stop the background services (and the embedded servers)."""
    from recsys import processes

    settings = Settings.from_env()
    _say(f"stopped services: {processes.stop_all(settings) or 'none running'}")
    if servers:
        from recsys.embedded import stop_servers

        _say(f"stopped embedded servers: {stop_servers(settings) or 'none running'}")


def _print_reach(settings: Settings) -> None:
    if settings.deployment == "colocated":
        internal = "  Retrieval, ranking        inside the orchestrator (RECSYS_DEPLOYMENT=colocated)"
    else:
        internal = (f"  Retrieval (internal)      {settings.retrieval_addr}\n"
                    f"  Ranking (internal)        {settings.ranking_addr}")
    _say(f"""
The stack is running:
  Recommender API (public)  {settings.orchestrator_addr}   e.g. `recsys recommend 1`
{internal}
  Real-time worker (health) {settings.worker_addr}
  PostgreSQL                {settings.database_url}
  Redis                     {settings.redis_url}
  logs                      {settings.var_dir / 'log'}
Try: grpcurl {_grpcurl_tls(settings)} {settings.orchestrator_addr} list   (server reflection is on)
API keys: {"required (`recsys keys create`, docs/security.md)" if _public_auth(settings) else "off (loopback)"}
Stop everything with: make stop   (or `.venv/bin/recsys stop`)""")


# ---------------------------------------------------------------------------- client


@app.command()
def recommend(
    user_id: str,
    k: Annotated[int, typer.Option(help="How many items")] = 10,
    surface: Annotated[str, typer.Option(help="Where they are shown")] = "home",
    debug: Annotated[bool, typer.Option(help="Print the pipeline trace")] = False,
) -> None:
    """Ask the running Recommender for a user's recommendations and print them."""
    import grpc

    from recsys.client import print_recommendations
    from recsys.client import recommend as call

    settings = Settings.from_env()
    try:
        response = call(settings, user_id, k, surface, debug)
    except grpc.RpcError as exc:  # the server's answer in one line: a user's mistake is not a traceback
        hint = " (is the stack running? `make demo` or `recsys serve all`)" \
            if exc.code() == grpc.StatusCode.UNAVAILABLE else ""
        raise _fail(f"{exc.code().name}: {exc.details()}{hint}") from None
    print_recommendations(user_id, response)


@app.command()
def demo(
    users: Annotated[list[str] | None, typer.Option("--user", help="Users to show (repeatable)")] = None,
) -> None:
    """Everything end to end: servers, MovieLens-100K, training, features, services, recommendations."""
    from recsys import processes
    from recsys.client import print_recommendations
    from recsys.client import recommend as call
    from storage.bulk import is_empty

    started = time.monotonic()
    settings = _settings()
    _say(f"PostgreSQL: {settings.database_url}\nRedis:      {settings.redis_url}")
    processes.stop_all(settings)  # a re-run replaces services started by an earlier demo
    if is_empty(settings.database_url):
        _say("loading MovieLens-100K into PostgreSQL ...")
        _say(f"loaded {_load(settings, None, 'insert')}")
    else:
        _say("PostgreSQL already holds data: not reloading (`recsys data load --mode upsert` merges a dataset in)")
    _say("training the two-tower model and building the FAISS index ...")
    _train(settings)
    _say("materializing features into the Redis online store (Feast) ...")
    from feature_store import store

    store.apply(settings)
    store.materialize(settings)
    _say(f"starting the services ({settings.deployment} deployment: {', '.join(processes.services(settings))}) ...")
    processes.start_all(settings)
    _demo_key(settings)
    for user_id in users or ["1", "42", "196", "new-user-without-history"]:
        print_recommendations(user_id, call(settings, user_id, 5, "home", False))
    _say(f"demo ready in {time.monotonic() - started:.0f} s")
    _print_reach(settings)


def _grpcurl_tls(settings: Settings) -> str:
    if not settings.tls_cert_file:
        return "-plaintext"
    flags = f"-cacert {settings.tls_ca_file}" if settings.tls_ca_file else ""
    if settings.tls_client_auth == "require":
        flags += f" -cert {settings.tls_client_cert_file} -key {settings.tls_client_key_file}"
    return flags.strip()


def _public_auth(settings: Settings) -> bool:
    """Whether the orchestrator asks for API keys (core/service_auth.py: on unless loopback)."""
    from core.service_auth import is_loopback

    return settings.auth == "on" or (settings.auth == "auto" and not is_loopback(settings.orchestrator_addr))


def _demo_key(settings: Settings) -> None:
    """With auth on (a non-loopback address), the demo's own calls need an API key: a new read key."""
    import os

    from storage.api_keys import create_key
    from storage.db import connect

    if not _public_auth(settings) or os.environ.get("RECSYS_API_KEY"):
        return
    with connect(settings.database_url, autocommit=True) as conn:
        record, key = create_key(conn, "read", "demo")
    os.environ["RECSYS_API_KEY"] = key  # recsys.client sends it
    _say(f"auth is on: the demo calls with a new read key (id {record.id}, shown once): {key}")


# ---------------------------------------------------------------------------- tls


@tls_app.command("init")
def tls_init(
    out: Annotated[Path | None, typer.Option("--dir", help="Where the PEM files go (default: var/tls)")] = None,
    hosts: Annotated[list[str] | None, typer.Option(
        "--host", help="Another host name or IP address the services are reached at, besides localhost and "
                       "127.0.0.1 (repeatable)")] = None,
    days: Annotated[int, typer.Option(help="Validity of the certificates")] = 825,
    force: Annotated[bool, typer.Option(help="Replace the files already there")] = False,
) -> None:
    """A development CA, one server certificate for the stack and a client certificate (for mutual TLS);
    prints the settings that use them."""
    from core.dev_certs import DEFAULT_HOSTS, make_dev_certs

    names = [*DEFAULT_HOSTS, *(hosts or [])]
    try:
        certs = make_dev_certs((out or Settings.from_env().var_dir / "tls").absolute(), names, days, overwrite=force)
    except (ValueError, FileExistsError) as exc:
        raise _fail(str(exc)) from None
    _say(f"a development CA and certificates for {', '.join(dict.fromkeys(names))} in {certs.dir} "
         "(the CA's key is not kept); to use them:")
    for name, value in certs.env().items():
        typer.echo(f"export {name}={value}")
    _say("RECSYS_TLS_CLIENT_AUTH=require also asks every client for a certificate signed by this CA (mutual TLS)")


def main() -> None:
    from core.tls import TlsConfigError

    try:
        app()
    except TlsConfigError as exc:  # a TLS setting that cannot work: the setting and the file, in one line
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
