"""How the bot is used and liked: counts by platform, channel, model and day, approval rates,
and a chart of approval and volume over time per model."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from koalabot.errors import KoalabotError
from koalabot.store.database import Database
from koalabot.store.stats import StatsCell, UserMessageCell, answer_stats, user_message_stats

NO_MODEL = "(unknown model)"


class PlotUnavailableError(KoalabotError):
    """`--plot` was asked for but matplotlib (the `plot` extra) is not installed."""


@dataclass
class Tally:
    """Counts for one group; votes are every vote cast, an answer is liked when its net is > 0."""

    user_messages: int = 0
    answers: int = 0
    votes: int = 0
    voted: int = 0
    liked: int = 0
    disliked: int = 0

    @property
    def approval(self) -> float | None:
        """Liked answers / voted answers (None when nothing was voted on)."""
        return self.liked / self.voted if self.voted else None

    def add_answers(self, cell: StatsCell) -> None:
        """Add one group of answers."""
        self.answers += cell.answers
        self.votes += cell.votes
        self.voted += cell.voted
        self.liked += cell.liked
        self.disliked += cell.disliked


@dataclass
class Report:
    """Every breakdown `koalabot stats` shows."""

    total: Tally = field(default_factory=Tally)
    platforms: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    channels: dict[tuple[str, str], Tally] = field(default_factory=lambda: defaultdict(Tally))
    models: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    days: dict[date, Tally] = field(default_factory=lambda: defaultdict(Tally))
    model_days: dict[tuple[str, date], Tally] = field(default_factory=lambda: defaultdict(Tally))


def build_report(answers: Iterable[StatsCell], questions: Iterable[UserMessageCell]) -> Report:
    """Fold the store's grouped counts into every breakdown."""
    report = Report()
    for cell in answers:
        model = cell.model or NO_MODEL
        for tally in (
            report.total,
            report.platforms[cell.platform],
            report.channels[(cell.platform, cell.channel)],
            report.models[model],
            report.days[cell.day],
            report.model_days[(model, cell.day)],
        ):
            tally.add_answers(cell)
    for q in questions:
        for tally in (
            report.total,
            report.platforms[q.platform],
            report.channels[(q.platform, q.channel)],
            report.days[q.day],
        ):
            tally.user_messages += q.user_messages
    return report


async def gather(
    db: Database,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
) -> Report:
    """Read the counts from the store (answers by their creation time, UTC days; only
    ``model``'s answers when given)."""
    return build_report(
        await answer_stats(db, since, until, model), await user_message_stats(db, since, until)
    )


# --- text ------------------------------------------------------------------------------------

_COLUMNS = ("user msgs", "answers", "votes", "voted", "liked", "disliked", "approval")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _cells(t: Tally, with_users: bool = True) -> list[str]:
    users = f"{t.user_messages:,}" if with_users else "-"
    counts = (t.answers, t.votes, t.voted, t.liked, t.disliked)
    return [users, *(f"{n:,}" for n in counts), _percent(t.approval)]


def _table(title: str, rows: list[tuple[str, list[str]]]) -> list[str]:
    width = max([len(title), *(len(label) for label, _ in rows)])
    widths = [max(len(c), *(len(r[1][i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    header = title.ljust(width) + "".join(
        f"  {c:>{w}}" for c, w in zip(_COLUMNS, widths, strict=True)
    )
    lines = [header]
    for label, cells in rows:
        lines.append(
            label.ljust(width) + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )
    return lines


K = TypeVar("K", bound=Hashable)


def _sorted(groups: dict[K, Tally], key: Callable[[K], Any]) -> list[tuple[K, Tally]]:
    return sorted(groups.items(), key=lambda item: key(item[0]))


def format_report(report: Report) -> str:
    """The report as plain-text tables (approval = liked answers / voted answers)."""
    if not report.total.answers and not report.total.user_messages:
        return "no messages stored yet\n"
    sections = [
        _table("total", [("all", _cells(report.total))]),
        _table("platform", [(p, _cells(t)) for p, t in _sorted(report.platforms, str)]),
        _table(
            "platform / channel",
            [(f"{p} / {c}", _cells(t)) for (p, c), t in _sorted(report.channels, tuple)],
        ),
        _table("model", [(m, _cells(t, False)) for m, t in _sorted(report.models, str)]),
        _table("day (UTC)", [(d.isoformat(), _cells(t)) for d, t in _sorted(report.days, str)]),
    ]
    footer = "approval = liked answers / voted answers; an answer is liked when its net vote is > 0"
    return "\n\n".join("\n".join(s) for s in sections) + f"\n\n{footer}\n"


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data (for scripts and notebooks)."""

    def tally(t: Tally) -> dict[str, Any]:
        return {**asdict(t), "approval": t.approval}

    return {
        "total": tally(report.total),
        "platforms": {p: tally(t) for p, t in sorted(report.platforms.items())},
        "channels": [
            {"platform": p, "channel": c, **tally(t)}
            for (p, c), t in sorted(report.channels.items())
        ],
        "models": {m: tally(t) for m, t in sorted(report.models.items())},
        "days": {d.isoformat(): tally(t) for d, t in sorted(report.days.items())},
        "model_days": [
            {"model": m, "day": d.isoformat(), **tally(t)}
            for (m, d), t in sorted(report.model_days.items())
        ],
    }


# --- chart -----------------------------------------------------------------------------------


#: Days in the rolling window the approval line averages over (daily votes are few and noisy).
WINDOW = 7


def rolling_approval(days: list[date], tallies: list[Tally], window: int = WINDOW) -> list[float]:
    """Per day: liked / voted over that day and the ``window - 1`` days before (NaN: no votes)."""
    rates = []
    for day in days:
        start = day - timedelta(days=window - 1)
        in_window = [t for d, t in zip(days, tallies, strict=True) if start <= d <= day]
        voted = sum(t.voted for t in in_window)
        liked = sum(t.liked for t in in_window)
        rates.append(100 * liked / voted if voted else float("nan"))
    return rates


def plot(report: Report, path: str | Path) -> None:
    """Draw the chart (`draw`) into a PNG file."""
    figure = draw(report)
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)


def pyplot() -> Any:
    """matplotlib's pyplot drawing to files, or a one-line error saying how to get it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailableError(
            "--plot needs matplotlib: pip install 'koalabot[plot]'"
        ) from None
    return plt


def draw(report: Report) -> Any:
    """Approval (top: a rolling line, daily dots) and answers per day (bottom) per model, on
    daily ticks; a matplotlib Figure (Any: matplotlib is an optional dependency)."""
    plt = pyplot()
    import matplotlib.dates as mdates

    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(11, 7), height_ratios=(3, 2), layout="constrained"
    )
    for model in sorted(report.models):
        days = sorted(d for m, d in report.model_days if m == model)
        tallies = [report.model_days[(model, d)] for d in days]
        daily = [100 * t.approval if t.approval is not None else float("nan") for t in tallies]
        rolling = rolling_approval(days, tallies)
        (line,) = top.plot(days, rolling, linewidth=2.2, marker="o", markersize=5, label=model)
        top.scatter(days, daily, s=14, color=line.get_color(), alpha=0.35, linewidths=0)
        answers = [t.answers for t in tallies]
        bottom.plot(days, answers, color=line.get_color(), linewidth=1.8, marker="o", markersize=5)
    first, last = (min(report.days), max(report.days)) if report.days else (date.today(),) * 2
    # A margin of a day on each side, so a short period (one day) is not lost at an edge.
    bottom.set_xlim(first - timedelta(days=1), last + timedelta(days=1))
    top.set_ylim(-3, 103)
    top.set_ylabel(f"approval, % liked of voted\n(line: {WINDOW}-day rolling; dots: daily)")
    bottom.set_ylabel("answers per day")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("day (UTC)")
    for axis in (top, bottom):
        axis.grid(True, alpha=0.3)
    locator = _day_ticks(mdates, (last - first).days + 3)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    top.set_title("Approval and volume per model", loc="left")
    if report.models:
        fig.legend(loc="outside right upper", title="model")
    else:
        top.text(0.5, 0.5, "no answers in this period", ha="center", transform=top.transAxes)
    return fig


#: At most this many date ticks: a label per day up to two weeks, then every few days, then
#: months (matplotlib's own choice over a few days is every six hours, which reads as noise).
MAX_TICKS = 15


def _day_ticks(mdates: Any, span_days: int) -> Any:
    """Ticks on whole days (or months, for long periods), never within a day."""
    if span_days <= 2 * 31:
        return mdates.DayLocator(interval=-(-span_days // MAX_TICKS))
    return mdates.MonthLocator(interval=-(-span_days // (31 * MAX_TICKS)))


__all__ = [
    "NO_MODEL",
    "PlotUnavailableError",
    "Report",
    "Tally",
    "build_report",
    "draw",
    "format_report",
    "gather",
    "plot",
    "report_json",
    "rolling_approval",
]
