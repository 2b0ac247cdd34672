"""Which model is better, and how sure that is: the statistics behind `koalabot stats --models`.

Plain functions of counts, in pure Python (a chat bot's comparison has a handful of models and
at most a few hundred thousand judgements, well within reach without NumPy):

- approval of one model's answers (👍 out of 👍+👎) with a 95% **Wilson score interval**, which
  stays inside [0, 1] and behaves at small counts where the normal approximation does not;
- the difference in approval between two models with **Newcombe's hybrid score interval** (built
  from the two Wilson intervals), so A/B traffic without battles still gets a verdict;
- per pair of models in side-by-side battles: win / tie / loss shares and the win rate (wins over
  decided battles) with a Wilson interval;
- a **Bradley–Terry** rating per model on the Elo scale (400 points: 10 to 1 odds), fitted by
  Hunter's MM algorithm with ties as half a win each way, as public chatbot arenas report it,
  with percentile **bootstrap** intervals from battles resampled with replacement (seeded, so a
  report is the same every time it is printed).

A verdict says "not enough data" until its interval excludes a tie.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import combinations

Z95 = 1.959963984540054
ELO_SCALE = 400.0 / math.log(10)  # rating points per unit of log-strength
ELO_CENTRE = 1000.0
#: Pseudo-wins added to each side of every pair that met: keeps the fit finite when a model won
#: every battle, and moves ratings from real counts by far less than their intervals.
PRIOR = 1e-3

#: How many times each pair of models met (ties included).
Meetings = dict[frozenset[str], float]


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high


def wilson(successes: int, trials: int, z: float = Z95) -> Interval:
    """The Wilson score interval for a proportion; (0, 1) when there are no trials."""
    if trials <= 0:
        return Interval(0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Approval:
    """How people liked one model's answers."""

    model: str
    answers: int
    up: int
    down: int

    @property
    def votes(self) -> int:
        return self.up + self.down

    @property
    def rate(self) -> float:
        return self.up / self.votes if self.votes else 0.0

    @property
    def interval(self) -> Interval:
        return wilson(self.up, self.votes)


def approval_difference(a: Approval, b: Approval) -> Interval:
    """95% interval of ``a.rate - b.rate`` (Newcombe 1998, method 10)."""
    la, lb = a.interval, b.interval
    d = a.rate - b.rate
    low = d - math.sqrt((a.rate - la.low) ** 2 + (lb.high - b.rate) ** 2)
    high = d + math.sqrt((la.high - a.rate) ** 2 + (b.rate - lb.low) ** 2)
    return Interval(low, high)


class Outcome(StrEnum):
    """A person's choice in a side-by-side battle."""

    A = "a"
    B = "b"
    TIE = "tie"
    BOTH_BAD = "both_bad"


@dataclass(frozen=True)
class Battle:
    """One person's latest choice between two models' answers to one message."""

    a: str
    b: str
    outcome: Outcome


@dataclass(frozen=True)
class PairRecord:
    """Battles between two models, from ``a``'s side (``a`` sorts before ``b``)."""

    a: str
    b: str
    wins: int
    losses: int
    ties: int
    both_bad: int

    @property
    def battles(self) -> int:
        return self.wins + self.losses + self.ties + self.both_bad

    @property
    def decided(self) -> int:
        return self.wins + self.losses

    @property
    def win_rate(self) -> float:
        """``a``'s wins over the battles someone won."""
        return self.wins / self.decided if self.decided else 0.5

    @property
    def interval(self) -> Interval:
        return wilson(self.wins, self.decided)

    def share(self, count: int) -> float:
        return count / self.battles if self.battles else 0.0


def pair_records(battles: Iterable[Battle]) -> list[PairRecord]:
    """Win / loss / tie / both-bad counts per pair of models, pairs in name order."""
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for battle in battles:
        a, b, outcome = _oriented(battle)
        counts[(a, b)][outcome] += 1
    return [
        PairRecord(a, b, c[Outcome.A], c[Outcome.B], c[Outcome.TIE], c[Outcome.BOTH_BAD])
        for (a, b), c in sorted(counts.items())
    ]


def _oriented(battle: Battle) -> tuple[str, str, Outcome]:
    if battle.a <= battle.b:
        return battle.a, battle.b, battle.outcome
    flipped = {Outcome.A: Outcome.B, Outcome.B: Outcome.A}.get(battle.outcome, battle.outcome)
    return battle.b, battle.a, flipped


def bradley_terry(battles: Sequence[Battle], iterations: int = 2000) -> dict[str, float]:
    """Bradley–Terry ratings on the Elo scale, their geometric mean at 1000.

    A tie or a "both bad" counts as half a win for each side. Fitted with Hunter's (2004) MM
    updates, which converge for any connected set of pairs.
    """
    wins, meetings = _tally(battles)
    models = sorted({m for pair in meetings for m in pair})
    strength = dict.fromkeys(models, 1.0)
    for _ in range(iterations):
        updated = {m: wins[m] / _expected(m, strength, meetings) for m in models}
        scale = math.exp(sum(math.log(v) for v in updated.values()) / len(models))
        updated = {m: v / scale for m, v in updated.items()}
        converged = all(abs(updated[m] - strength[m]) < 1e-12 for m in models)
        strength = updated
        if converged:
            break
    return {m: ELO_CENTRE + ELO_SCALE * math.log(s) for m, s in strength.items()}


def _tally(battles: Sequence[Battle]) -> tuple[dict[str, float], Meetings]:
    wins: dict[str, float] = defaultdict(float)
    meetings: Meetings = defaultdict(float)
    for battle in battles:
        pair = frozenset((battle.a, battle.b))
        if pair not in meetings:
            wins[battle.a] += PRIOR
            wins[battle.b] += PRIOR
            meetings[pair] += 2 * PRIOR
        meetings[pair] += 1
        if battle.outcome == Outcome.A:
            wins[battle.a] += 1
        elif battle.outcome == Outcome.B:
            wins[battle.b] += 1
        else:
            wins[battle.a] += 0.5
            wins[battle.b] += 0.5
    return wins, meetings


def _expected(
    model: str, strength: dict[str, float], meetings: dict[frozenset[str], float]
) -> float:
    total = 0.0
    for pair, n in meetings.items():
        if model in pair:
            (other,) = pair - {model}
            total += n / (strength[model] + strength[other])
    return total


def bootstrap_intervals(
    battles: Sequence[Battle], rounds: int = 200, seed: int = 0
) -> dict[str, Interval]:
    """2.5th and 97.5th percentiles of each model's rating over battles resampled with
    replacement (the same seed gives the same intervals)."""
    rng = random.Random(seed)
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        resampled = rng.choices(battles, k=len(battles))
        for model, rating in bradley_terry(resampled, iterations=300).items():
            samples[model].append(rating)
    return {m: Interval(_percentile(v, 0.025), _percentile(v, 0.975)) for m, v in samples.items()}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def battle_verdict(pair: PairRecord) -> str:
    """One line: which model wins more of their battles, or that it cannot be told yet."""
    interval = pair.interval
    span = f"{pair.a} wins {pair.win_rate:.0%} of {pair.decided} decided battles with {pair.b} "
    span += f"(95% interval {interval.low:.0%}–{interval.high:.0%})"
    if not interval.excludes(0.5):
        return f"not enough data: {span}, which includes an even split"
    better, worse = (pair.a, pair.b) if pair.win_rate > 0.5 else (pair.b, pair.a)
    return f"{better} is better than {worse}: {span}"


def approval_verdict(a: Approval, b: Approval) -> str:
    """One line from thumbs alone (A/B traffic): is one model liked more than the other?"""
    diff = approval_difference(a, b)
    span = (
        f"{a.model} {a.rate:.0%} of {a.votes} votes vs {b.model} {b.rate:.0%} of {b.votes} "
        f"(difference 95% interval {diff.low:+.0%} to {diff.high:+.0%})"
    )
    if not diff.excludes(0.0):
        return f"not enough data: {span}, which includes no difference"
    better, worse = (a.model, b.model) if diff.low > 0 else (b.model, a.model)
    return f"{better} is liked more than {worse}: {span}"


def all_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    return list(combinations(sorted(models), 2))
