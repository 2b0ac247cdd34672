"""Battle judgements as `dpo` preference pairs: (chosen answer, rejected answer) ids.

Each person's latest choice counts once; a pair of answers becomes one preference when more
people chose one side than the other. Ties and "both bad" say nothing about which answer is
better and are skipped, as is a pair whose people are split evenly.

Hook for the dpo rows (koalabot/export/rows.py, `RowBuilder._pairs`): for a thread's answers,
``battle_pairs(judgements_on(db, answer_ids))`` gives the ids to pass to ``_pair(view, chosen,
rejected)`` beside the sibling pairs with opposite votes (store/threads.py would load the
judgements with the thread).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from koalabot.store.judgements import JudgementRecord


def battle_pairs(judgements: Iterable[JudgementRecord]) -> list[tuple[int, int]]:
    """(chosen id, rejected id) per battle with a majority, in the order battles were judged."""
    sides: dict[tuple[int, int], Counter[str]] = {}
    for j in judgements:
        sides.setdefault((j.a_id, j.b_id), Counter())[j.choice] += 1
    pairs = []
    for (a, b), count in sides.items():
        if count["a"] > count["b"]:
            pairs.append((a, b))
        elif count["b"] > count["a"]:
            pairs.append((b, a))
    return pairs


__all__ = ["battle_pairs"]
