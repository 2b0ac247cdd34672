"""Several named models side by side: one Backend per KOALABOT_MODELS entry, and which of them
answers a thread.

Each named model is a full Backend of its own (its servers, its kind — TGI or OpenAI-compatible —
its health and retries), built from the shared limits in Settings; only its URLs, kind and
served model id differ. Without KOALABOT_MODELS the set holds the one configured backend under
no name, and an answer is labelled with the model id the server reports instead.

The choice itself lives in `assign` (a keyed hash of the thread: sticky, the same on every
replica); this module only maps its names to backends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from koalabot.backend.assign import (
    WeightedModel,
    battle_sides,
    is_battle,
    model_for_thread,
    pick,
    thread_parts,
    unit,
)
from koalabot.backend.client import Backend
from koalabot.errors import ConfigError
from koalabot.events import ThreadKey

if TYPE_CHECKING:
    from koalabot.config import Settings


def model_settings(settings: Settings, name: str) -> Settings:
    """The settings of the one server ``name`` names in KOALABOT_MODELS (ConfigError if none)."""
    entry = settings.models.get(name)
    if entry is None:
        known = ", ".join(settings.models) or "none set"
        raise ConfigError(f"--model: no model {name!r} in KOALABOT_MODELS ({known})")
    return settings.model_copy(
        update={"model_url": entry.url, "model_api": entry.api, "model": entry.model}
    )


class ModelSet:
    """The backends the engine may ask, by model name ("" for the one unnamed backend)."""

    def __init__(self, backends: Mapping[str, Backend], weights: list[WeightedModel]) -> None:
        self.backends = dict(backends)
        self.weights = weights

    @classmethod
    def single(cls, backend: Backend) -> ModelSet:
        """One backend, no names: answers are labelled with the server's model id."""
        return cls({"": backend}, [WeightedModel("", 1.0)])

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelSet:
        """KOALABOT_MODELS' backends, or the single configured backend when it is empty."""
        if not settings.models:
            return cls.single(Backend.from_settings(settings))
        backends = {
            name: Backend.from_settings(model_settings(settings, name)) for name in settings.models
        }
        return cls(backends, [WeightedModel(n, w) for n, w in settings.weighted_models])

    @property
    def named(self) -> bool:
        """Whether the models have names (KOALABOT_MODELS is set)."""
        return "" not in self.backends

    @property
    def default(self) -> Backend:
        """The first model's backend, also asked for a name not in the set. It counts tokens
        only for the prompts of its own model: each model's prompt is fitted with its own
        backend's counts (engine/answer.py)."""
        return next(iter(self.backends.values()))

    def backend(self, name: str) -> Backend:
        return self.backends.get(name, self.default)

    def for_thread(self, where: ThreadKey) -> str:
        """The model that answers every message of this thread."""
        return model_for_thread(self.weights, where)

    def for_retry(self, where: ThreadKey, answered_by: str | None, key: str, cross: bool) -> str:
        """The model for 🔄 of an answer ``answered_by`` made: the same one, or with ``cross`` a
        different one drawn by weight (fixed by ``key``, the answer's id)."""
        if answered_by not in self.backends:
            return self.for_thread(where)
        others = [m for m in self.weights if m.name != answered_by and m.weight > 0]
        if not cross or not others:
            return answered_by
        return pick(others, unit("retry", *thread_parts(where), key))

    def battle(
        self, where: ThreadKey, message_key: str, channels: list[str], share: float
    ) -> tuple[str, str] | None:
        """The (A, B) models when this thread's answers are battles (a battle channel, or
        drawn with ``share``), fixed by the message's key; None otherwise or with one model."""
        if len([m for m in self.weights if m.weight > 0]) < 2:
            return None
        if not where.within(channels) and not is_battle(where, share):
            return None
        return battle_sides(self.weights, where, message_key)

    async def check(self) -> None:
        for backend in self.backends.values():
            await backend.check()

    async def health(self) -> dict[str, bool]:
        """Every endpoint of every model: {url: healthy}."""
        states: dict[str, bool] = {}
        for backend in self.backends.values():
            states.update(await backend.health())
        return states

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()
