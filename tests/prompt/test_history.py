"""koalabot.prompt.history: the stored thread, read from a real database (SQLite and
PostgreSQL), becomes the prompt for its next answer: in order, with each question's latest good
answer, and with whole old turns dropped when the thread outgrows the model's budget."""

from __future__ import annotations

import re

from koalabot.events import ThreadKey
from koalabot.prompt.budget import CachedCounter, Limits
from koalabot.prompt.history import HISTORY_PAGE, MARGIN, HistoryPrompter
from koalabot.prompt.templates import TEMPLATES
from koalabot.store.database import Database, open_database
from koalabot.store.repository import Repository

THREAD = ThreadKey("slack", "T1", "C1", "1.0")
KOALA = TEMPLATES["koala"]
ROOMY = Limits(max_input_tokens=4000, max_total_tokens=4512)


class WordCounter:
    """A tokenizer that counts words (and one BOS), and how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    async def count(self, text: str) -> int:
        self.asked += 1
        return len(text.split()) + 1


async def ask(repo: Repository, text: str, ts: str) -> int:
    stored = await repo.add_user_message(THREAD, "U1", text, ts, [f"slack:{ts}"])
    assert stored is not None
    return stored[1]


async def answer(repo: Repository, conversation: int, parent: int, text: str, status: str) -> int:
    start = await repo.start_answer(conversation, parent)
    await repo.finish_answer(start.answer_id, text, status, None)
    return start.answer_id


async def conversation_of(repo: Repository) -> int:
    conversation = await repo.conversation_id(THREAD)
    assert conversation is not None
    return conversation


async def test_the_prompt_is_the_thread_in_order_with_each_questions_latest_good_answer(
    db: Database,
) -> None:
    repo = Repository(db)
    first = await ask(repo, "Hi there", "1.1")
    conversation = await conversation_of(repo)
    await answer(repo, conversation, first, "Hello!", "ok")
    await answer(repo, conversation, first, "I was cut o", "failed")
    await answer(repo, conversation, first, "Hey, hello!", "ok")  # a regeneration: the latest
    await ask(repo, "   ", "1.2")  # an image alone: nothing to read
    question = await ask(repo, "How are you?", "1.3")
    await ask(repo, "And later?", "1.4")  # after the one being answered

    history = HistoryPrompter(repo, CachedCounter(WordCounter()), KOALA)
    built = await history.build(conversation, question, ROOMY, 512)

    assert built.prompt == (
        "BEGINNING OF CONVERSATION: USER: Hi there GPT:Hey, hello!</s>USER: How are you? GPT:"
    )
    assert built.dropped == 0
    assert built.tokens == await CachedCounter(WordCounter()).count(built.prompt)


async def long_thread(repo: Repository, turns: int) -> tuple[int, int]:
    """``turns`` answered questions, then an image alone and a question, as stored: the
    conversation's id and the last question's."""
    for n in range(turns):
        question = await ask(repo, f"question {n} is here", f"1.{n}")
        conversation = await conversation_of(repo)
        await answer(repo, conversation, question, f"answer {n} is here", "ok")
    await ask(repo, "   ", "2.0")
    return conversation, await ask(repo, "question last is here", "2.1")


async def test_a_thread_longer_than_the_budget_keeps_its_newest_whole_turns(
    db: Database,
) -> None:
    repo = Repository(db)
    turns = HISTORY_PAGE  # two messages each: more than the first page read
    conversation, question = await long_thread(repo, turns)
    limits = Limits(max_input_tokens=200, max_total_tokens=300)

    history = HistoryPrompter(repo, CachedCounter(WordCounter()), KOALA)
    built = await history.build(conversation, question, limits, 100)

    assert built.prompt.startswith("BEGINNING OF CONVERSATION: USER: question ")
    assert built.prompt.endswith("GPT:answer 127 is here</s>USER: question last is here GPT:")
    assert built.tokens <= limits.prompt_budget(100)
    kept = [int(n) for n in re.findall(r"USER: question (\d+) is here", built.prompt)]
    assert kept == list(range(turns - len(kept), turns))  # the newest, none skipped
    assert len(kept) > 5
    # Every answered question left out is counted with its answer, the ones never read too.
    assert built.dropped == 2 * (turns - len(kept))


async def test_the_count_of_left_out_messages_is_exact_when_a_page_ends_on_an_answer(
    sqlite_url: str,
) -> None:
    db = await open_database(sqlite_url, upgrade=True)
    try:
        repo = Repository(db)
        for n in range(HISTORY_PAGE):
            question = await ask(repo, f"question {n} is here", f"1.{n}")
            conversation = await conversation_of(repo)
            if n < HISTORY_PAGE - 1:  # the first page (from the newest) ends on an answer
                await answer(repo, conversation, question, f"answer {n} is here", "ok")
        limits = Limits(max_input_tokens=200, max_total_tokens=300)
        history = HistoryPrompter(repo, CachedCounter(WordCounter()), KOALA)
        built = await history.build(conversation, question, limits, 100)
    finally:
        await db.close()
    kept = len(re.findall(r"USER: question \d+ is here", built.prompt))
    assert built.dropped == 2 * HISTORY_PAGE - 1 - (2 * kept - 1)


async def test_the_thread_is_read_and_counted_once_not_again_for_every_answer(db: Database) -> None:
    repo = Repository(db)
    for n in range(30):
        question = await ask(repo, f"question {n}", f"1.{n}")
        conversation = await conversation_of(repo)
        await answer(repo, conversation, question, f"answer {n}", "ok")
    tokenizer = WordCounter()
    history = HistoryPrompter(repo, CachedCounter(tokenizer), KOALA)
    assert history.first_page(conversation) == HISTORY_PAGE  # a thread not seen before
    await history.build(conversation, question, ROOMY, 512)
    first_time = tokenizer.asked
    # Next time it reads about as much as this prompt took (all 60), not a default page.
    assert history.first_page(conversation) == 60 + MARGIN

    follow_up = await ask(repo, "one more thing", "2.0")
    tokenizer.asked = 0
    built = await history.build(conversation, follow_up, ROOMY, 512)

    assert first_time >= 60  # every message once
    assert tokenizer.asked <= 3  # the new message, and the prompt's new edges at most
    assert built.prompt.endswith("GPT:answer 29</s>USER: one more thing GPT:")
