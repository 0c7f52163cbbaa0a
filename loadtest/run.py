"""`make loadtest`: a bounded, headless Locust run against the running stack.

    .venv/bin/python -m loadtest.run [--users 20] [--spawn-rate 10] [--run-time 30s] [--addr HOST:PORT]

Defaults come from RECSYS_LOADTEST_USERS / _SPAWN_RATE / _RUN_TIME and
RECSYS_ORCHESTRATOR_ADDR. Locust runs in its own process (it must never share one
with feast, and it monkey-patches the process for gevent); this module only starts
it, so it imports neither. Prints Locust's summary table and writes its CSV stats
to reports/loadtest-latest_*.csv. Exits 2 when no stack answers, Locust's own exit
code when Locust could not run, 0 otherwise (failed requests are results, not errors).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from core.config import ROOT, Settings
from loadtest.stack import require_serving

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CSV_PREFIX = ROOT / "reports" / "loadtest-latest"
STOP_TIMEOUT_S = 5  # lets in-flight calls finish when the run time is up
_SPAN = re.compile(r"(\d+)\s*([hms])")


def run_time_seconds(span: str) -> int:
    """Locust's time span ("30s", "1m30s", "2h", or plain seconds) in seconds."""
    span = span.strip().lower()
    if span.isdigit():
        return int(span)
    parts = _SPAN.findall(span)
    if not parts or _SPAN.sub("", span).strip():
        raise ValueError(f"run time {span!r}: use e.g. 30s, 2m, 1m30s")
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[unit] for n, unit in parts)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=int(env("RECSYS_LOADTEST_USERS", "20")), help="concurrent users")
    p.add_argument("--spawn-rate", type=float, default=float(env("RECSYS_LOADTEST_SPAWN_RATE", "10")),
                   help="users started per second")
    p.add_argument("--run-time", default=env("RECSYS_LOADTEST_RUN_TIME", "30s"), help="e.g. 30s, 2m")
    p.add_argument("--addr", default=Settings.from_env().orchestrator_addr, help="the Recommender's host:port")
    p.add_argument("--csv", default=str(CSV_PREFIX), help="prefix of Locust's CSV stats files")
    args = p.parse_args(argv)
    try:
        run_time_seconds(args.run_time)  # fail on a bad span here, not inside Locust
    except ValueError as exc:
        p.error(str(exc))
    return args


def locust_command(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", args.addr, "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
        "--run-time", args.run_time, "--stop-timeout", str(STOP_TIMEOUT_S),
        "--csv", args.csv, "--exit-code-on-error", "0",
    ]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    require_serving(args.addr)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    print(f"locust: {args.users} users (spawn {args.spawn_rate}/s) for {args.run_time} against {args.addr}",
          file=sys.stderr, flush=True)
    # The locustfile reads the address from the environment too; keep both in agreement.
    env = {**os.environ, "RECSYS_ORCHESTRATOR_ADDR": args.addr}
    limit_s = run_time_seconds(args.run_time) + STOP_TIMEOUT_S + 60  # a hung Locust must not hang `make`
    try:
        done = subprocess.run(locust_command(args), cwd=ROOT, env=env, timeout=limit_s, check=False)
    except subprocess.TimeoutExpired:
        print(f"locust did not finish within {limit_s} s", file=sys.stderr)
        return 1
    if done.returncode != 0:
        print(f"locust could not run (exit {done.returncode}); see its output above", file=sys.stderr)
    else:
        print(f"CSV stats: {args.csv}_stats.csv", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
