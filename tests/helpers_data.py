"""Test data straight into the store: threads of user messages, answers (and regenerations),
generation records and votes, with a clock that ticks one minute per message."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select

from koalabot.prompt.templates import TEMPLATES, Turn, render
from koalabot.store.database import Database
from koalabot.store.models import Conversation, Feedback, Generation, Message, MessageRef, OptOut

MODEL = "koala-13b"
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
_threads = itertools.count(1)


@dataclass
class Seed:
    """Makes threads in one database; every message is one minute after the previous one."""

    db: Database
    now: datetime = START

    def tick(self, at: datetime | None = None) -> datetime:
        self.now = at if at is not None else self.now + timedelta(minutes=1)
        return self.now

    async def insert(self, model: Any, **values: Any) -> int:
        async with self.db.engine.begin() as conn:
            new_id = await conn.scalar(insert(model).values(**values).returning(model.id))
        assert new_id is not None
        return int(new_id)

    async def thread(
        self,
        platform: str = "slack",
        channel: str = "C1",
        workspace: str = "T1",
        at: datetime | None = None,
        parent: str | None = None,
    ) -> ThreadBuilder:
        conv = await self.insert(
            Conversation,
            platform=platform,
            workspace=workspace,
            channel=channel,
            thread=f"{1700000000 + next(_threads)}.000100",
            created_at=self.tick(at),
            parent=parent,
        )
        return ThreadBuilder(self, conv, platform)

    async def opt_out(self, user_key: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(OptOut).values(user_key=user_key, created_at=self.tick()))


@dataclass
class ThreadBuilder:
    """One conversation: ``ask`` adds a user message, ``answer`` an answer to the latest (or a
    given) one, ``vote`` a thumbs vote."""

    seed: Seed
    id: int
    platform: str
    questions: list[tuple[int, str]] = field(default_factory=list)
    shown: dict[int, str] = field(default_factory=dict)

    async def ask(self, text: str, author: str = "U1", at: datetime | None = None) -> int:
        msg = await self.seed.insert(
            Message,
            conversation_id=self.id,
            role="user",
            author=author,
            text=text,
            platform_message_id=f"p{len(self.questions)}",
            status="ok",
            created_at=self.seed.tick(at),
        )
        self.questions.append((msg, text))
        return msg

    def prompt_for(self, parent: int, template: str = "koala") -> str:
        turns: list[Turn] = []
        for qid, text in self.questions:
            turns.append(Turn("user", text))
            if qid == parent:
                break
            if qid in self.shown:
                turns.append(Turn("assistant", self.shown[qid]))
        return render(turns, TEMPLATES[template])

    async def answer(
        self,
        text: str,
        parent: int | None = None,
        status: str = "ok",
        model: str | None = MODEL,
        template: str = "koala",
        at: datetime | None = None,
        generation: bool = True,
    ) -> int:
        parent = parent if parent is not None else self.questions[-1][0]
        prompt = self.prompt_for(parent, template)
        msg = await self.seed.insert(
            Message,
            conversation_id=self.id,
            role="assistant",
            author=None,
            text=text,
            platform_message_id=f"a{parent}-{text[:8]}",
            status=status,
            parent_id=parent,
            created_at=self.seed.tick(at),
        )
        if generation:
            await self.seed.insert(
                Generation,
                message_id=msg,
                prompt=prompt,
                template=template,
                parameters={"temperature": 0.7},
                model_id=model,
                finish_reason="eos_token",
                created_at=self.seed.now,
            )
        await self.seed.insert(
            MessageRef,
            message_id=msg,
            platform=self.platform,
            channel="C1",
            platform_message_id=f"ref{msg}",
        )
        if status == "ok":
            self.shown[parent] = text
        return msg

    async def vote(self, answer: int, user: str, rating: int) -> None:
        now = self.seed.tick()
        await self.seed.insert(
            Feedback, message_id=answer, user=user, rating=rating, created_at=now, updated_at=now
        )

    async def votes(self, answer: int, ratings: dict[str, int]) -> None:
        for user, rating in ratings.items():
            await self.vote(answer, user, rating)


async def table_rows(db: Database, model: Any) -> list[dict[str, Any]]:
    """Every row of a table, as dicts (to look for leftovers after `forget`)."""
    table = getattr(model, "__table__", model)
    async with db.engine.connect() as conn:
        result = await conn.execute(select(table).order_by(*table.primary_key))
        return [dict(row._mapping) for row in result]
