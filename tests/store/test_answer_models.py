"""The `model` column of answers: filled from the generation record for answers made before it."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from koalabot.store.database import async_url, upgrade

OLD_THREAD = [
    "INSERT INTO conversations (id, platform, workspace, channel, thread, created_at) "
    "VALUES (1, 'slack', 'T', 'C', '1.0', '2026-01-01')",
    "INSERT INTO messages (id, conversation_id, role, text, status, created_at) "
    "VALUES (1, 1, 'user', 'hi', 'ok', '2026-01-01')",
    "INSERT INTO messages (id, conversation_id, role, text, status, parent_id, created_at) "
    "VALUES (2, 1, 'assistant', 'hello', 'ok', 1, '2026-01-01')",
    "INSERT INTO generations (id, message_id, prompt, template, parameters, model_id, "
    "dropped_turns, created_at) VALUES (1, 2, 'p', 'koala', '{}', 'young-geng/koala', 0, "
    "'2026-01-01')",
]


async def _run(url: str, *statements: str) -> list[tuple[object, ...]]:
    engine = create_async_engine(async_url(url), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                result = await conn.execute(text(statement))
                rows = [tuple(r) for r in result] if result.returns_rows else []
            return rows
    finally:
        await engine.dispose()


async def test_answers_made_before_the_column_name_the_model_of_their_record(
    database_url: str,
) -> None:
    await upgrade(database_url, "0003")
    await _run(database_url, *OLD_THREAD)

    await upgrade(database_url)

    rows = await _run(database_url, "SELECT id, model FROM messages ORDER BY id")
    assert rows == [(1, None), (2, "young-geng/koala")]
