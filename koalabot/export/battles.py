"""Battle judgements as `dpo` rows: (chosen answer, rejected answer) pairs with the human choice.

The majority rule lives with the judgements (koalabot/store/battles.py), because the thread's
memory follows the same choice. Here a pair of one thread becomes its two answers, unless the
export's filters leave either out: an answer not shown (failed), outside --model/--since/--until,
excluded on review, or a thread reaching an opted-out person. The row itself is the dpo row of
any pair (`RowBuilder._pair`): the thread up to the question, the chosen and the rejected answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from koalabot.export.view import Selection, ThreadView
from koalabot.store.battles import battle_pairs, preferences
from koalabot.store.models import Decision
from koalabot.store.threads import ThreadMessage

EXCLUDED = str(Decision.EXCLUDE)


def battle_answers(
    view: ThreadView, pairs: Iterable[tuple[int, int]], selection: Selection
) -> Iterator[tuple[ThreadMessage, ThreadMessage]]:
    """(chosen, rejected) answers of this thread's judged battles that the filters let through;
    each pair left out is counted in the summary."""
    pairs = list(pairs)
    if not pairs:
        return
    answers = {m.id: m for m in view.thread.messages if m.role == "assistant"}
    for chosen_id, rejected_id in pairs:
        chosen, rejected = answers.get(chosen_id), answers.get(rejected_id)
        reason = _left_out(view, selection, chosen, rejected)
        if reason:
            selection.summary.skip(reason)
        elif chosen is not None and rejected is not None:
            yield chosen, rejected


def _left_out(
    view: ThreadView,
    selection: Selection,
    chosen: ThreadMessage | None,
    rejected: ThreadMessage | None,
) -> str:
    if chosen is None or rejected is None or chosen.parent_id not in view.position:
        return "battle answer not in the export"
    both = (chosen, rejected)
    if any(m.status != "ok" for m in both):
        return "battle answer not shown (dpo)"
    if selection.scoped and not all(selection._in_scope(m) for m in both):
        return "battle answer outside --model/--since/--until"
    if any(m.review == EXCLUDED for m in both):
        return "battle answer excluded on review"
    if chosen.parent_id is not None and view.reaches_opted_out(chosen.parent_id):
        return "opted-out user in the thread"
    return ""


__all__ = ["battle_answers", "battle_pairs", "preferences"]
