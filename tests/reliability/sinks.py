"""A reply sink that keeps what a thread shows, for engine-level tests without a platform."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Recorder:
    """What a person in one thread sees: messages by id (last text), buttons, notices."""

    max_chars: int = 3000
    edit_interval: float = 0.01
    shown: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, int] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition, repr=False)

    async def post(self, text: str) -> str:
        message_id = f"m{len(self.shown)}"
        await self._set(message_id, text)
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        await self._set(message_id, text)

    async def finish(self, message_id: str, text: str, answer_id: int) -> None:
        self.buttons[message_id] = answer_id
        await self._set(message_id, text)

    async def notice(self, text: str) -> None:
        self.notices.append(text)
        await self._set(None, text)

    async def thinking(self, on: bool) -> None:
        return None

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (re-checked after every call the engine makes)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    async def _set(self, message_id: str | None, text: str) -> None:
        if message_id is not None:
            self.shown[message_id] = text
        async with self._changed:
            self._changed.notify_all()
