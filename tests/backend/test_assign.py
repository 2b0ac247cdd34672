"""Blind A/B by thread: sticky, by weight, the same in every process."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from koalabot.backend.assign import (
    WeightedModel,
    battle_sides,
    is_battle,
    model_for_thread,
)
from koalabot.events import ThreadKey

MODELS = [WeightedModel("koala", 0.7), WeightedModel("candidate", 0.2), WeightedModel("tiny", 0.1)]
#: Chi-square with 2 degrees of freedom exceeds this with probability 0.001.
CHI2_2DF_999 = 13.816


def keys(n: int) -> list[ThreadKey]:
    return [ThreadKey("slack", "T1", f"C{i % 37}", f"17000{i:05d}.000100") for i in range(n)]


def test_threads_are_spread_by_weight() -> None:
    n = 20_000
    counts = Counter(model_for_thread(MODELS, key) for key in keys(n))
    total = sum(m.weight for m in MODELS)
    expected = {m.name: n * m.weight / total for m in MODELS}
    chi2 = sum((counts[name] - e) ** 2 / e for name, e in expected.items())
    assert chi2 < CHI2_2DF_999, (counts, expected)


def test_a_thread_keeps_its_model_and_so_does_every_replica() -> None:
    key = ThreadKey("discord", "G1", "C9", "1234")
    here = model_for_thread(MODELS, key)
    assert {model_for_thread(MODELS, key) for _ in range(10)} == {here}
    # Another process (another replica, or after a restart) gives the same answer.
    code = (
        "from koalabot.backend.assign import WeightedModel, model_for_thread\n"
        "from koalabot.events import ThreadKey\n"
        "models = [WeightedModel('koala', 0.7), WeightedModel('candidate', 0.2),"
        " WeightedModel('tiny', 0.1)]\n"
        "print(model_for_thread(models, ThreadKey('discord', 'G1', 'C9', '1234')))\n"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == here


def test_a_model_with_no_weight_gets_no_thread_and_no_weight_at_all_is_an_error() -> None:
    off = [WeightedModel("koala", 1.0), WeightedModel("candidate", 0.0)]
    assert {model_for_thread(off, key) for key in keys(500)} == {"koala"}
    with pytest.raises(ValueError, match="no model"):
        model_for_thread([WeightedModel("koala", 0.0)], keys(1)[0])


def test_battles_take_their_share_of_threads_and_two_different_models() -> None:
    chosen = [key for key in keys(10_000) if is_battle(key, 0.25)]
    assert 0.23 < len(chosen) / 10_000 < 0.27
    assert not any(is_battle(key, 0.0) for key in keys(100))
    sides = [battle_sides(MODELS, key, "m1") for key in chosen]
    assert all(a != b for a, b in sides)
    firsts = Counter(a for a, _ in sides)
    assert 0.45 < (firsts["koala"] / sum(1 for s in sides if "koala" in s)) < 0.55  # fair A/B
    assert battle_sides(MODELS, chosen[0], "m1") == sides[0]  # a regeneration keeps its sides
