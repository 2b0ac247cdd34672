"""The first words come a model's first token after the message, not a few platform round trips
later: the model is asked while the placeholder is still being posted."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from koalabot.engine.engine import Engine
from tests.engine.test_engine import ThreadView, make_settings, said
from tests.fakes.tgi import FakeTGI


@dataclass
class SlowPlatform(ThreadView):
    """A platform whose first post (the placeholder) waits until the test lets it through."""

    let_through: asyncio.Event = field(default_factory=asyncio.Event)

    async def post(self, text: str) -> str:
        if not self.messages:
            await self.let_through.wait()
        return await super().post(text)


async def test_the_model_is_asked_while_the_placeholder_is_posted(
    migrated_database_url: str, fake_tgi: FakeTGI
) -> None:
    asked = asyncio.Event()

    def reply(prompt: str) -> str:  # the fake calls it when the request arrives
        asked.set()
        return " Koalas sleep up to twenty hours a day."

    fake_tgi.reply = reply
    engine = await Engine.open(make_settings(migrated_database_url, fake_tgi))
    view = SlowPlatform()
    try:
        question = said("How long do koalas sleep?")
        answering = asyncio.create_task(engine.handle_message(question, view))
        async with asyncio.timeout(30):  # a safety net, not a timing target
            await asked.wait()
        assert not view.messages  # the placeholder is not even posted yet
        view.let_through.set()
        result = await answering
    finally:
        await engine.close()
    assert result.status == "ok"
    assert view.last == "Koalas sleep up to twenty hours a day.\n\n" + (
        "NOTICE: research model; votes may become training data."
    )
