"""Which named model answers a thread: blind A/B by thread, and which threads are battles.

A thread's model is a function of the thread's key alone — a keyed hash mapped onto the
models' traffic weights — so it is sticky for the thread's life, the same on every replica and
after a restart, and needs no stored state (nothing to migrate, nothing to lose). The trade-off:
changing the weights moves some running threads to another model, so a comparison should keep
its weights for its whole run (`koalabot stats --since` can start a fresh one).

Battles are picked the same way with a different salt, and a battle's two models and their
A/B order come from the key of the message being answered, so a regenerated battle keeps its
sides.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from koalabot.events import ThreadKey


@dataclass(frozen=True)
class WeightedModel:
    """A named model and its share of new threads (weights need not sum to 1)."""

    name: str
    weight: float


def unit(*parts: str) -> float:
    """A number in [0, 1) spread evenly by ``parts``, the same in every process."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def thread_parts(where: ThreadKey) -> tuple[str, str, str, str]:
    return (where.platform, where.workspace, where.channel, where.thread)


def pick(models: Sequence[WeightedModel], u: float) -> str:
    """The model whose slice of the cumulative weights holds ``u``."""
    live = [m for m in models if m.weight > 0]
    if not live:
        raise ValueError("no model has a traffic weight above 0")
    total = sum(m.weight for m in live)
    edge = 0.0
    for model in live:
        edge += model.weight / total
        if u < edge:
            return model.name
    return live[-1].name


def model_for_thread(models: Sequence[WeightedModel], where: ThreadKey) -> str:
    """The model that answers every message of this thread."""
    return pick(models, unit("model", *thread_parts(where)))


def is_battle(where: ThreadKey, fraction: float) -> bool:
    """Whether this thread's answers are side-by-side battles (a ``fraction`` of threads)."""
    return fraction > 0 and unit("battle", *thread_parts(where)) < fraction


def battle_sides(
    models: Sequence[WeightedModel], where: ThreadKey, message_key: str
) -> tuple[str, str]:
    """Two different models for one battle, as (A, B): drawn by weight without replacement,
    their order by a fair coin, both fixed by the message's key."""
    first = pick(models, unit("battle-a", *thread_parts(where), message_key))
    rest = [m for m in models if m.name != first]
    second = pick(rest, unit("battle-b", *thread_parts(where), message_key))
    if unit("battle-order", *thread_parts(where), message_key) < 0.5:
        return first, second
    return second, first
