"""The statistics behind `koalabot stats --models`, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from koalabot.stats.compare import (
    Approval,
    Battle,
    Outcome,
    approval_difference,
    approval_verdict,
    battle_verdict,
    bootstrap_intervals,
    bradley_terry,
    pair_records,
    wilson,
)


def battles(a: str, b: str, a_wins: int, b_wins: int, ties: int = 0) -> list[Battle]:
    return (
        [Battle(a, b, Outcome.A)] * a_wins
        + [Battle(a, b, Outcome.B)] * b_wins
        + [Battle(a, b, Outcome.TIE)] * ties
    )


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),  # p = .8, z = 1.96: centre .7167, half-width .2266
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (60, 100, 0.5020, 0.6906),
    ],
)
def test_wilson_intervals_match_the_hand_computed_bounds(
    successes: int, trials: int, low: float, high: float
) -> None:
    interval = wilson(successes, trials)
    assert interval.low == pytest.approx(low, abs=1e-4)
    assert interval.high == pytest.approx(high, abs=1e-4)


def test_no_votes_means_nothing_is_known() -> None:
    assert (wilson(0, 0).low, wilson(0, 0).high) == (0.0, 1.0)


def test_newcombes_worked_example_for_a_difference_in_approval() -> None:
    # Newcombe (1998), method 10: 56/70 vs 48/80, difference 0.2, interval 0.0524 to 0.3339.
    diff = approval_difference(Approval("a", 70, 56, 14), Approval("b", 80, 48, 32))
    assert diff.low == pytest.approx(0.0524, abs=1e-4)
    assert diff.high == pytest.approx(0.3339, abs=1e-4)


def test_bradley_terry_recovers_known_strengths_of_three_models() -> None:
    # Strengths 4 : 2 : 1 and battles won exactly in proportion (A beats B 2/3, A beats C 4/5,
    # B beats C 2/3): the likelihood's maximum is those strengths. Elo scale, geometric mean 2
    # at 1000: A = 1000 + 400·log10(2), C = 1000 − 400·log10(2).
    table = battles("A", "B", 40, 20) + battles("A", "C", 40, 10) + battles("B", "C", 40, 20)
    ratings = bradley_terry(table)
    step = 400 * math.log10(2)
    assert ratings["A"] == pytest.approx(1000 + step, abs=0.05)
    assert ratings["B"] == pytest.approx(1000, abs=0.05)
    assert ratings["C"] == pytest.approx(1000 - step, abs=0.05)


def test_ties_count_half_a_win_each_way() -> None:
    ratings = bradley_terry(battles("A", "B", 10, 10, ties=30))
    assert ratings["A"] == pytest.approx(ratings["B"], abs=1e-6)
    lopsided = bradley_terry(battles("A", "B", 10, 0, ties=10))  # A scores 15 of 20: odds 3:1
    assert lopsided["A"] - lopsided["B"] == pytest.approx(400 * math.log10(3), abs=0.1)


def test_a_model_that_won_every_battle_still_gets_a_finite_rating() -> None:
    ratings = bradley_terry(battles("A", "B", 5, 0))
    assert all(math.isfinite(r) for r in ratings.values())
    assert ratings["A"] > ratings["B"]


def test_bootstrap_intervals_hold_the_estimate_and_repeat_with_the_seed() -> None:
    table = battles("A", "B", 40, 20) + battles("A", "C", 40, 10) + battles("B", "C", 40, 20)
    ratings = bradley_terry(table)
    first = bootstrap_intervals(table, rounds=100, seed=7)
    assert first == bootstrap_intervals(table, rounds=100, seed=7)
    for model, rating in ratings.items():
        assert first[model].low < rating < first[model].high
    assert first["A"].low > first["C"].high  # 150 battles tell the best from the worst


def test_pair_records_are_counted_from_the_first_name_s_side() -> None:
    table = [
        Battle("koala", "candidate", Outcome.A),
        Battle("candidate", "koala", Outcome.A),
        Battle("candidate", "koala", Outcome.A),
        Battle("koala", "candidate", Outcome.TIE),
        Battle("koala", "candidate", Outcome.BOTH_BAD),
    ]
    (pair,) = pair_records(table)
    assert (pair.a, pair.b) == ("candidate", "koala")
    assert (pair.wins, pair.losses, pair.ties, pair.both_bad, pair.battles) == (2, 1, 1, 1, 5)
    assert pair.win_rate == pytest.approx(2 / 3)
    assert pair.share(pair.ties) == pytest.approx(0.2)


def test_a_battle_verdict_waits_until_the_interval_excludes_an_even_split() -> None:
    (close,) = pair_records(battles("koala", "tuned", 45, 55))
    assert battle_verdict(close).startswith("not enough data")
    (clear,) = pair_records(battles("koala", "tuned", 40, 60))
    assert battle_verdict(clear).startswith("tuned is better than koala")


def test_an_approval_verdict_waits_until_the_difference_excludes_zero() -> None:
    few = approval_verdict(Approval("tuned", 12, 8, 2), Approval("koala", 12, 6, 4))
    assert few.startswith("not enough data")
    many = approval_verdict(Approval("tuned", 300, 220, 60), Approval("koala", 300, 170, 110))
    assert many.startswith("tuned is liked more than koala")
