"""`recsys evaluate`: run a protocol over named models, print the table, write the reports."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from evaluation import registry, report
from evaluation.harness import HarnessConfig, run
from training.dataset import Dataset, load_files
from training.splits import COLD_USERS, PROTOCOLS

DEFAULT_OUT = Path("reports/quality")


def load_dataset(name: str) -> Dataset:
    """"movielens" (MovieLens-100K, fetched into the data folder when missing) or a folder in the file format."""
    if name == "movielens":
        from core.config import Settings
        from training import movielens

        return movielens.load(movielens.fetch(Settings.from_env().data_dir))
    return load_files(Path(name))


def main(protocol: str, models: list[str] | None, out_dir: Path, dataset: str = "movielens") -> int:
    """Evaluate `models` (all when None) under `protocol`; writes <out_dir>/<protocol>.{json,md,png}."""
    if protocol not in PROTOCOLS:
        print(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}", file=sys.stderr)
        return 2
    try:
        families = registry.select(models)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("faiss.loader", "retrieval.retriever"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    data = load_dataset(dataset)
    command = (f"recsys evaluate --protocol {protocol} --models {','.join(f.name for f in families)} "
               f"--dataset {dataset}")
    # The model to beat: recency-weighted EASE; for newcomers, who have no history, popular in their segments.
    reference = "segment-popular" if protocol == COLD_USERS else HarnessConfig.reference
    evaluation = run(data, families, HarnessConfig(protocol=protocol, reference=reference))
    print(report.table(evaluation))
    for c in evaluation.comparisons:
        print(f"{c.model} - {c.baseline} {c.metric}: {c.diff:+.4f} [{c.low:+.4f}, {c.high:+.4f}]")
    for path in report.write(evaluation, out_dir, command).values():
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--protocol", default="per-user", choices=PROTOCOLS)
    parser.add_argument("--models", default="", help="comma-separated; default: all")
    parser.add_argument("--dataset", default="movielens")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    sys.exit(main(args.protocol, [m for m in args.models.split(",") if m] or None, args.out, args.dataset))
