"""The prompt for an answer by one of the models: the thread fitted to that model's window, as
that model's own server counts tokens, with the answers that lost their battles left out.

The prompter given counts with the first model's backend; each other named model gets a prompter
of its own at its first answer, kept for the process (its memory of counts is its tokenizer's: a
few megabytes at most per model). Models are not assumed to share a tokenizer, even when they
serve the same model id; the price is that a thread is counted once per model that answers it.
"""

from __future__ import annotations

import functools

from koalabot.backend.models import ModelSet
from koalabot.prompt.budget import CachedCounter, Limits
from koalabot.prompt.history import HistoryPrompter, ThreadPage, ThreadPrompt
from koalabot.prompt.templates import Template
from koalabot.store.battles import judged_out
from koalabot.store.repository import Repository


class ModelPrompts:
    """Prompts for the models of a `ModelSet`, each fitted and counted as its model needs."""

    def __init__(
        self,
        repo: Repository,
        history: HistoryPrompter,
        models: ModelSet,
        template: Template,
        max_new_tokens: int,
    ) -> None:
        self.repo = repo
        #: The prompter of the models served by the default backend (it counts with its
        #: tokenizer).
        self.history = history
        self.models = models
        self.template = template
        self.max_new_tokens = max_new_tokens
        self._limits: dict[str, Limits] = {}
        self._histories: dict[str, HistoryPrompter] = {}  # by model name

    async def build(
        self, conversation_id: int, upto_id: int, tail: ThreadPage | None = None, model: str = ""
    ) -> ThreadPrompt:
        """The prompt for answering message ``upto_id`` by ``model`` (``tail``: the thread's
        newest page, when read already)."""
        limits = await self._get_limits(model)
        lost = functools.partial(judged_out, self.repo.db, conversation_id)  # battles
        return await self._history(model).build(
            conversation_id, upto_id, limits, self.max_new_tokens, tail, lost
        )

    def _history(self, model: str) -> HistoryPrompter:
        """The prompter that counts with ``model``'s tokenizer (made at its first answer)."""
        backend = self.models.backend(model)
        if backend is self.models.default:
            return self.history
        if model not in self._histories:
            counter = CachedCounter(backend)
            self._histories[model] = HistoryPrompter(self.repo, counter, self.template)
        return self._histories[model]

    async def _get_limits(self, model: str) -> Limits:
        """The model's budget, from its server's /info once."""
        if model not in self._limits:
            self._limits[model] = Limits.from_info(await self.models.backend(model).info())
        return self._limits[model]


__all__ = ["ModelPrompts"]
