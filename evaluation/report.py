"""The evaluation's outputs: a table for the terminal, JSON, a markdown report and a PNG chart."""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from evaluation import metrics as M
from evaluation.harness import SELECT_BY, Evaluation, ModelResult

COLUMNS = [f"{m}@{k}" for m in ("ndcg", "recall", "hitrate") for k in M.KS] + ["coverage@10"]
HEADERS = {"ndcg": "NDCG", "recall": "Recall", "hitrate": "HR", "coverage": "Cov"}
CHART_METRICS = ("ndcg@10", "recall@20")

PROTOCOL_TEXT = {
    "per-user": "per-user temporal split: each user's last 20% of interactions by time are test; validation is "
                "carved the same way from the remaining 80% (each user's last 20% of it)",
    "global-time": "global-time split: one cut-off time for everyone; the last 20% of all interactions by time "
                   "are test, and validation is the last 20% (by time) of what is before the cut-off",
    "cold-users": "cold-users split: 20% of the users, drawn at random (seed 0), hold out every interaction they "
                  "have, so a model knows only their demographics; validation users are 20% of the rest (seed 1). "
                  "The bootstrap reference is segment-popular, the classic cold-start answer",
}


def header(metric: str) -> str:
    name, _, k = metric.partition("@")
    return f"{HEADERS.get(name, name)}@{k}"


def cell(r: ModelResult, metric: str, std: bool = True) -> str:
    value = f"{r.mean[metric]:.4f}"
    return f"{value} ± {r.std[metric]:.4f}" if std and r.stochastic else value


def table(ev: Evaluation) -> str:
    """Means, and the spread over seeds of NDCG@10 (the markdown report has every spread)."""
    rows = [["model", *map(header, COLUMNS), "± NDCG@10", "fit s"]]
    rows += [[r.name, *(cell(r, m, std=False) for m in COLUMNS),
              f"{r.std['ndcg@10']:.4f}" if r.stochastic else "", f"{r.fit_s:.1f}"] for r in ev.results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def to_json(ev: Evaluation, command: str) -> dict[str, Any]:
    return {
        "command": command,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "protocol": {**ev.splits, "description": PROTOCOL_TEXT.get(ev.config.protocol, ""),
                     "selection": f"hyper-parameters by validation {SELECT_BY}", "seeds": list(ev.config.seeds),
                     "ks": list(ev.config.ks), "users": ev.users},
        "models": [
            {"name": r.name, "description": r.description, "stochastic": r.stochastic, "params": _plain(r.params),
             "seeds": r.seeds, "fit_seconds": r.fit_s, "mean": r.mean, "std": r.std,
             "validation_trials": [{"params": _plain(t.params), SELECT_BY: t.validation, "fit_seconds": t.fit_s}
                                   for t in r.trials]}
            for r in ev.results
        ],
        "bootstrap": {"reference": ev.config.reference, "resamples": ev.config.bootstrap_resamples,
                      "comparisons": [c.to_dict() for c in ev.comparisons]},
        "environment": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                        "threads": 1, "seconds": ev.seconds, "load_average_start_end": list(ev.load_average)},
    }


def markdown(ev: Evaluation, command: str, chart_name: str) -> str:
    d = ev.splits
    tune, final = d["tune"], d["final"]  # type: ignore[index]
    u = ev.users
    lines = [
        f"# Recommendation quality: {ev.config.protocol} protocol",
        "",
        f"Reproduce: `{command}`. This run took {ev.seconds / 60:.1f} min with one thread on a "
        f"{os.cpu_count()}-CPU machine, 1-minute load average {ev.load_average[0]:.1f} at the start and "
        f"{ev.load_average[1]:.1f} at the end (fit times below grow with the load).",
        "",
        "## Protocol",
        "",
        f"- Data: {d['interactions']} interactions, every one implicit feedback (a rating of any value is a "
        "positive).",
        f"- Split: {PROTOCOL_TEXT.get(ev.config.protocol, ev.config.protocol)}.",
        f"- Sizes: train {final['train']}, test {final['held_out']} interactions"  # type: ignore[index]
        f"{_cutoff(final)}; for tuning, inner train {tune['train']}, validation {tune['held_out']}"  # type: ignore[index]
        f"{_cutoff(tune)}.",
        f"- Evaluated users: {u['test']} on test, {u['validation']} on validation; skipped on test: "
        f"{u['test_skipped_cold']} users with no training interaction, {u['test_skipped_nothing_new']} whose "
        "held-out items were all training items.",
        "- Ranking: the full catalogue, no sampled negatives; each user's training items are excluded; the relevant "
        "items are the user's held-out items. Ties in score are broken by one fixed random order of the catalogue.",
        "- Metrics: Recall@K = hits / relevant items, NDCG@K (binary gains, ideal = min(K, relevant) hits on top), "
        "HitRate@K, for K in 10, 20, 50; Coverage@10 = share of the catalogue in anyone's top 10.",
        f"- Hyper-parameters: chosen by validation {SELECT_BY} over each family's grid (below); then the chosen "
        "model is fitted on the whole training split and scored on test once. Seeds fixed "
        f"({', '.join(map(str, ev.config.seeds))}); stochastic models are mean ± std over those seeds, the others "
        "one run.",
        "",
        "## Results (test)",
        "",
        "| model | " + " | ".join(header(m) for m in COLUMNS) + " | fit s |",
        "| --- | " + " | ".join("---:" for _ in COLUMNS) + " | ---: |",
    ]
    best = {m: max(r.mean[m] for r in ev.results) for m in COLUMNS}
    for r in ev.results:
        cells = [f"**{cell(r, m)}**" if r.mean[m] == best[m] else cell(r, m) for m in COLUMNS]
        lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {r.fit_s:.1f} |")
    lines += ["", f"![{', '.join(CHART_METRICS)} per model]({chart_name})", ""]
    if ev.comparisons:
        lines += [
            f"## Paired bootstrap against {ev.config.reference}",
            "",
            f"Per-user differences resampled over users ({ev.config.bootstrap_resamples} resamples); "
            "95% percentile interval of the mean difference. An interval above 0 means the model is better "
            "on this test set beyond what the choice of users explains.",
            "",
            "| model | metric | model | reference | difference | 95% interval | P(diff <= 0) |",
            "| --- | --- | ---: | ---: | ---: | --- | ---: |",
        ]
        for c in ev.comparisons:
            lines.append(f"| {c.model} | {c.metric} | {c.mean_model:.4f} | {c.mean_baseline:.4f} | "
                         f"{c.diff:+.4f} | [{c.low:+.4f}, {c.high:+.4f}] | {c.share_not_better:.3f} |")
        lines.append("")
    lines += ["## Models and the hyper-parameters chosen", "",
              f"| model | what | chosen | validation {SELECT_BY} (chosen / grid size) |", "| --- | --- | --- | --- |"]
    for r in ev.results:
        chosen = max(t.validation for t in r.trials)
        lines.append(f"| {r.name} | {r.description} | {_params(r.params)} | {chosen:.4f} / {len(r.trials)} |")
    lines += ["", "The JSON beside this file holds every validation trial, per-seed spread and the bootstrap."]
    return "\n".join(lines) + "\n"


def chart(ev: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    names = [r.name for r in ev.results]
    y = np.arange(len(names))
    fig, axes = plt.subplots(1, len(CHART_METRICS), figsize=(5 * len(CHART_METRICS), 0.45 * len(names) + 1.5),
                             sharey=True)
    for ax, metric in zip(np.atleast_1d(axes), CHART_METRICS, strict=True):
        means = [r.mean[metric] for r in ev.results]
        stds = [r.std[metric] for r in ev.results]
        colors = ["#d62728" if n == ev.config.reference else "#1f77b4" for n in names]
        ax.barh(y, means, xerr=[s if s > 0 else np.nan for s in stds], color=colors, capsize=3)
        for yi, m in zip(y, means, strict=True):
            ax.text(m, yi, f" {m:.3f}", va="center", fontsize=8)
        ax.set_title(header(metric))
        ax.set_xlim(0, max(means) * 1.2 if means and max(means) > 0 else 1)
        ax.grid(axis="x", alpha=0.3)
    ax0 = np.atleast_1d(axes)[0]
    ax0.set_yticks(y, names)
    ax0.invert_yaxis()
    fig.suptitle(f"{ev.config.protocol} protocol, test ({ev.users['test']} users); red: {ev.config.reference}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(ev: Evaluation, out_dir: Path, command: str) -> dict[str, Path]:
    """<out_dir>/<protocol>.json, .md and .png; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = ev.config.protocol
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "png": out_dir / f"{stem}.png"}
    paths["json"].write_text(json.dumps(to_json(ev, command), indent=2, allow_nan=False, default=_plain) + "\n")
    chart(ev, paths["png"])
    paths["md"].write_text(markdown(ev, command, paths["png"].name))
    return paths


def _cutoff(split: Any) -> str:
    return f" (cut-off {split['cutoff']})" if "cutoff" in split else ""


def _params(params: dict[str, object]) -> str:
    return ", ".join(f"{k}={_plain(v)}" for k, v in params.items()) or "none"


def _plain(value: Any) -> Any:
    """JSON-ready: infinite floats become "inf", numpy scalars Python ones."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else "nan"
    if isinstance(value, float):
        return round(value, 6)
    return value
