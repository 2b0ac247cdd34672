"""`koalabot stats --models`: which model people like more, and how sure that is.

Per model: answers, votes and approval with a 95% Wilson interval. Per pair of models: battles,
win / tie / both-bad shares and the win rate with its interval, and a Bradley–Terry rating per
model with bootstrap intervals. Each pair gets a one-line verdict — from battles when the pair
has met, and from thumbs (Newcombe's interval of the difference in approval) — that says "not
enough data" until its interval excludes a tie. The numbers come from `compare`; this module
only gathers, lays out and draws them.

The plot shows cumulative approval per model over time (the number a comparison run converges
to, with its Wilson band narrowing as votes come) rather than a daily rate, whose bands would be
too wide to read; and the pairwise win matrix beside it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from koalabot.stats.compare import (
    Approval,
    Battle,
    Interval,
    Outcome,
    PairRecord,
    all_pairs,
    approval_verdict,
    battle_verdict,
    bootstrap_intervals,
    bradley_terry,
    pair_records,
    wilson,
)
from koalabot.stats.usage import NO_MODEL, pyplot
from koalabot.store.comparisons import JudgedPair, ModelDay, judged_pairs, model_days
from koalabot.store.database import Database


@dataclass(frozen=True)
class ModelsReport:
    """Everything `stats --models` prints or draws."""

    approvals: list[Approval]
    #: Per model: (day, 👍, 👎) in day order, for the plot.
    days: dict[str, list[tuple[date, int, int]]]
    pairs: list[PairRecord]
    ratings: dict[str, float] = field(default_factory=dict)
    rating_intervals: dict[str, Interval] = field(default_factory=dict)
    verdicts: list[str] = field(default_factory=list)


async def gather_models(
    db: Database, since: datetime | None, until: datetime | None, model: str | None = None
) -> ModelsReport:
    """Read the store and build the report."""
    days = await model_days(db, since, until, model)
    judged = await judged_pairs(db, since, until, model)
    return build_models_report(days, judged)


def _battles(judged: list[JudgedPair]) -> list[Battle]:
    return [
        Battle(j.a_model, j.b_model, Outcome(j.choice))
        for j in judged
        if j.a_model and j.b_model and j.a_model != j.b_model
    ]


def build_models_report(days: list[ModelDay], judged: list[JudgedPair]) -> ModelsReport:
    """The per-model, per-pair and rating tables from the store's cells."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    series: dict[str, list[tuple[date, int, int]]] = defaultdict(list)
    for cell in sorted(days, key=lambda c: (c.model or NO_MODEL, c.day)):
        name = cell.model or NO_MODEL
        for i, n in enumerate((cell.answers, cell.up, cell.down)):
            totals[name][i] += n
        series[name].append((cell.day, cell.up, cell.down))
    approvals = [Approval(name, *counts) for name, counts in sorted(totals.items())]
    battles = _battles(judged)
    pairs = pair_records(battles)
    report = ModelsReport(approvals, dict(series), pairs)
    if battles:
        report.ratings.update(bradley_terry(battles))
        report.rating_intervals.update(bootstrap_intervals(battles))
    report.verdicts.extend(_verdicts(approvals, pairs))
    return report


def _verdicts(approvals: list[Approval], pairs: list[PairRecord]) -> list[str]:
    """Per pair of models: a line from their battles when they met, and one from thumbs when
    both have votes (the two measure different things: a choice, and approval alone)."""
    met = {(p.a, p.b): p for p in pairs}
    by_name = {a.model: a for a in approvals}
    models = sorted({*by_name, *(m for p in pairs for m in (p.a, p.b))})
    lines = []
    for a, b in all_pairs(models):
        if (a, b) in met:
            lines.append(battle_verdict(met[(a, b)]))
        if a in by_name and b in by_name and by_name[a].votes and by_name[b].votes:
            lines.append(approval_verdict(by_name[a], by_name[b]))
    return lines


def _pct(interval: Interval) -> str:
    return f"{interval.low:.0%}–{interval.high:.0%}"


def format_models(report: ModelsReport) -> str:
    """The report as plain-text tables."""
    out = ["Models", f"  {'model':<24}{'answers':>9}{'votes':>7}{'approval':>10}  95% interval"]
    for a in report.approvals:
        rate = f"{a.rate:.0%}" if a.votes else "-"
        out.append(f"  {a.model:<24}{a.answers:>9}{a.votes:>7}{rate:>10}  {_pct(a.interval)}")
    if report.pairs:
        out += ["", "Battles", f"  {'pair':<34}{'battles':>8}  win/tie/both bad  win rate (95%)"]
        for p in report.pairs:
            shares = "/".join(f"{p.share(n):.0%}" for n in (p.wins, p.ties, p.both_bad))
            pair = f"{p.a} vs {p.b}"
            out.append(
                f"  {pair:<34}{p.battles:>8}  {shares:<16}  {p.win_rate:.0%} ({_pct(p.interval)})"
            )
    if report.ratings:
        out += ["", "Bradley–Terry rating (Elo scale, 95% bootstrap interval)"]
        for model, rating in sorted(report.ratings.items(), key=lambda kv: -kv[1]):
            ci = report.rating_intervals[model]
            out.append(f"  {model:<24}{rating:>7.0f}  ({ci.low:.0f}–{ci.high:.0f})")
    out += ["", "Verdict", *(f"  {line}" for line in report.verdicts or ["only one model"])]
    return "\n".join(out) + "\n"


def _interval(i: Interval) -> dict[str, float]:
    return {"low": round(i.low, 4), "high": round(i.high, 4)}


def models_json(report: ModelsReport) -> dict[str, Any]:
    """The same numbers for scripts."""
    return {
        "models": [
            {
                "model": a.model,
                "answers": a.answers,
                "up": a.up,
                "down": a.down,
                "approval": round(a.rate, 4) if a.votes else None,
                "interval": _interval(a.interval),
                "rating": round(report.ratings[a.model], 1) if a.model in report.ratings else None,
            }
            for a in report.approvals
        ],
        "pairs": [
            {
                "a": p.a,
                "b": p.b,
                "battles": p.battles,
                "wins": p.wins,
                "losses": p.losses,
                "ties": p.ties,
                "both_bad": p.both_bad,
                "win_rate": round(p.win_rate, 4),
                "interval": _interval(p.interval),
            }
            for p in report.pairs
        ],
        "ratings": {
            m: {"rating": round(r, 1), "interval": _interval(report.rating_intervals[m])}
            for m, r in sorted(report.ratings.items())
        },
        "verdicts": report.verdicts,
    }


def cumulative_approval(days: list[tuple[date, int, int]]) -> list[tuple[float, Interval]]:
    """Per day: approval of every vote so far, with its Wilson interval (NaN before a vote)."""
    up = down = 0
    points = []
    for _, day_up, day_down in days:
        up, down = up + day_up, down + day_down
        rate = up / (up + down) if up + down else float("nan")
        points.append((rate, wilson(up, up + down)))
    return points


def plot_models(report: ModelsReport, path: str | Path) -> None:
    """Approval per model over time with 95% bands (left), pairwise win matrix (right)."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, 5.5), width_ratios=(3, 2), layout="constrained"
    )
    for model, days in sorted(report.days.items()):
        points = cumulative_approval(days)
        x = [d for d, _, _ in days]
        (line,) = left.plot(x, [100 * r for r, _ in points], marker="o", markersize=3, label=model)
        low, high = [100 * i.low for _, i in points], [100 * i.high for _, i in points]
        left.fill_between(x, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
    left.set_ylim(0, 100)
    left.set_ylabel("approval so far, % liked of votes (band: 95% Wilson)")
    left.set_xlabel("day (UTC)")
    left.grid(True, alpha=0.3)
    left.legend(title="model", loc="lower left")
    left.set_title("Approval per model", loc="left")
    _win_matrix(right, report.pairs)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _win_matrix(axis: Any, pairs: list[PairRecord]) -> None:
    """Row model's share of decided battles won against the column model."""
    models = sorted({m for p in pairs for m in (p.a, p.b)})
    axis.set_title("Battles: row's win rate vs column", loc="left")
    if not models:
        axis.text(0.5, 0.5, "no battles yet", ha="center", va="center")
        axis.set_axis_off()
        return
    index = {m: i for i, m in enumerate(models)}
    grid = [[float("nan")] * len(models) for _ in models]
    labels: dict[tuple[int, int], str] = {}
    for p in pairs:
        i, j = index[p.a], index[p.b]
        grid[i][j], grid[j][i] = p.win_rate, 1 - p.win_rate
        labels[(i, j)] = f"{p.win_rate:.0%}\nn={p.decided}"
        labels[(j, i)] = f"{1 - p.win_rate:.0%}\nn={p.decided}"
    axis.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1)
    for (i, j), text in labels.items():
        axis.text(j, i, text, ha="center", va="center", fontsize=9)
    axis.set_xticks(range(len(models)), models, rotation=30, ha="right")
    axis.set_yticks(range(len(models)), models)


__all__ = [
    "ModelsReport",
    "build_models_report",
    "cumulative_approval",
    "format_models",
    "gather_models",
    "models_json",
    "plot_models",
]
