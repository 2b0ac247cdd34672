"""The token budget: limits from /info, cached and estimated counts, and fitting a thread."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from koalabot.backend import Backend, GenerationParams
from koalabot.errors import BackendError, PromptTooLongError, TokenizerUnavailableError
from koalabot.prompt.budget import CachedCounter, Limits, estimate_tokens, exchanges, fit
from koalabot.prompt.templates import TEMPLATES, Turn, render, render_turn
from tests.fakes.tgi import FakeTGI, count_input_tokens

KOALA = TEMPLATES["koala"]

# /info of TGI ≥ 2.1 and of v1.4.5/v2.0.4 (reference/tgi-and-koala.md §1.7).
INFO_HEAD = {
    "model_id": "/data/koala-13b",
    "model_sha": None,
    "model_pipeline_tag": "text-generation",
    "max_concurrent_requests": 128,
    "max_best_of": 2,
    "max_stop_sequences": 4,
    "max_input_tokens": 2047,
    "max_total_tokens": 2048,
    "validation_workers": 2,
    "max_client_batch_size": 4,
    "router": "text-generation-router",
    "version": "3.3.7",
    "sha": None,
    "docker_label": None,
}
INFO_V2_0 = {
    "model_id": "/data/koala-13b",
    "model_dtype": "torch.float16",
    "model_device_type": "cuda",
    "max_concurrent_requests": 128,
    "max_best_of": 2,
    "max_stop_sequences": 4,
    "max_input_length": 1024,
    "max_total_tokens": 2048,
    "waiting_served_ratio": 1.2,
    "max_batch_total_tokens": 16000,
    "max_waiting_tokens": 20,
    "max_batch_size": None,
    "validation_workers": 2,
    "version": "2.0.4",
}


class WordTokenizer:
    """A stand-in tokenizer: BOS + one token per word or punctuation mark; logs what it counts."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def count(self, text: str) -> int:
        self.seen.append(text)
        return 1 + len(re.findall(r"\w+|[^\w\s]", text))


class NoTokenizer:
    """A server without a fast tokenizer (TGI's /tokenize answers 404)."""

    def __init__(self) -> None:
        self.asked = 0

    async def count(self, text: str) -> int:
        self.asked += 1
        raise TokenizerUnavailableError("No fast tokenizer available")


def thread(exchanges: int, words: int = 10) -> list[Turn]:
    """A thread of ``exchanges`` question/answer pairs and one last question."""
    turns: list[Turn] = []
    for i in range(exchanges):
        turns.append(Turn("user", f"question {i} " + "word " * words))
        turns.append(Turn("assistant", f"answer {i} " + "word " * words))
    return [*turns, Turn("user", "the newest question?")]


# --- limits ----------------------------------------------------------------------------------


def test_limits_from_current_info() -> None:
    limits = Limits.from_info(INFO_HEAD)
    assert limits == Limits(max_input_tokens=2047, max_total_tokens=2048)
    assert limits.prompt_budget(512) == 1536


def test_limits_from_old_info_with_max_input_length() -> None:
    limits = Limits.from_info(INFO_V2_0)
    assert limits == Limits(max_input_tokens=1024, max_total_tokens=2048)
    assert limits.prompt_budget(512) == 1024


@pytest.mark.parametrize(
    "info",
    [
        {"max_total_tokens": 2048},
        {"max_input_tokens": 2047},
        {"max_input_tokens": "2047", "max_total_tokens": 2048},
        {"max_input_tokens": 0, "max_total_tokens": 2048},
    ],
)
def test_limits_from_info_without_limits_is_a_clear_error(info: dict[str, object]) -> None:
    with pytest.raises(BackendError, match="does not state its token limits"):
        Limits.from_info(info)


# --- estimate --------------------------------------------------------------------------------

# Token counts (BOS included) that LLaMA's own tokenizer gives these texts.
LLAMA_COUNTS = [
    ("Hello world", 3),
    ("What is the largest animal on earth?", 9),
    (
        "The blue whale is the largest animal known to have ever existed, reaching lengths "
        "of up to 30 meters and weights of around 200 tonnes.",
        35,
    ),
    (
        "def fib(n: int) -> int:\n    if n < 2:\n        return n\n"
        "    return fib(n - 1) + fib(n - 2)\n",
        42,
    ),
    ("for (int i = 0; i < n; i++) {\n\tsum += a[i] * 2;\n}", 30),
    ('{"id": 12345, "name": "koala", "tags": ["a", "b"]}', 28),
    ('THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND', 28),
    ("Call me at 555-0123 or 555-0199 before 10:30.", 31),
    ("BEGINNING OF CONVERSATION: USER: Hello! GPT:", 18),
    ("这是一个测试句子。", 13),
    ("Thanks!! 😀👍🎉", 16),
    ("Je voudrais réserver une table pour deux personnes.", 13),
    ("12345", 7),
]


@pytest.mark.parametrize(("text", "llama"), LLAMA_COUNTS)
def test_estimate_never_undercounts_english_code_numbers_or_unicode(text: str, llama: int) -> None:
    assert llama <= estimate_tokens(text) <= 3 * llama


def test_estimate_grows_with_the_text() -> None:
    assert estimate_tokens("") >= 1
    assert estimate_tokens("word " * 1000) > estimate_tokens("word " * 100) >= 100


# --- cached counter ------------------------------------------------------------------------


async def test_each_distinct_text_is_tokenized_once() -> None:
    tokenizer = WordTokenizer()
    counter = CachedCounter(tokenizer)
    assert await counter.count("Hello world") == 3
    assert await counter.count("Hello world") == 3
    assert await counter.count("Goodbye") == 2
    assert await counter.count("Hello world") == 3
    assert tokenizer.seen == ["Hello world", "Goodbye"]


async def test_cache_forgets_the_least_recently_used_text() -> None:
    tokenizer = WordTokenizer()
    counter = CachedCounter(tokenizer, maxsize=2)
    for text in ["a", "b", "a", "c", "a", "b"]:
        await counter.count(text)
    assert tokenizer.seen == ["a", "b", "c", "b"]


async def test_without_a_tokenizer_the_estimate_is_used_and_the_server_not_asked_again() -> None:
    server = NoTokenizer()
    counter = CachedCounter(server)
    text = "What is the largest animal on earth?"
    assert await counter.count(text) == estimate_tokens(text)
    assert await counter.count("Hello") == estimate_tokens("Hello")
    assert server.asked == 1
    assert counter.estimating


async def test_the_server_is_asked_again_after_retry_after() -> None:
    server = NoTokenizer()
    counter = CachedCounter(server, retry_after=0.0)
    await counter.count("Hello")
    await counter.count("Hello")
    assert server.asked == 2


async def test_other_counting_errors_are_not_hidden() -> None:
    class Down:
        async def count(self, text: str) -> int:
            raise BackendError("The model server is not reachable right now.")

    with pytest.raises(BackendError, match="not reachable"):
        await CachedCounter(Down()).count("Hello")


# --- fit -------------------------------------------------------------------------------------


async def test_a_thread_that_fits_is_sent_whole() -> None:
    turns = thread(3)
    tokenizer = WordTokenizer()
    fitted = await fit(turns, KOALA, Limits(2047, 2048), 512, tokenizer)
    assert fitted.prompt == render(turns, KOALA)
    assert fitted.turns == turns
    assert fitted.dropped_turns == 0
    assert fitted.prompt_tokens == await tokenizer.count(fitted.prompt)


async def test_oldest_exchanges_are_dropped_whole_and_the_newest_question_kept() -> None:
    turns = thread(100)  # ~2,400 words: twice what fits into 2048 - 1024 tokens
    fitted = await fit(turns, KOALA, Limits(2047, 2048), 1024, WordTokenizer())
    assert 0 < fitted.dropped_turns < len(turns)
    assert fitted.dropped_turns % 2 == 0  # question and answer go together
    assert fitted.turns == turns[fitted.dropped_turns :]
    assert fitted.turns[-1] == Turn("user", "the newest question?")
    assert fitted.prompt.startswith("BEGINNING OF CONVERSATION: USER: question ")
    assert fitted.prompt.endswith("USER: the newest question? GPT:")
    assert fitted.prompt_tokens <= 1024


async def test_only_the_turns_that_may_be_sent_are_counted() -> None:
    turns = thread(1000, words=3)  # a 2,001-message thread
    tokenizer = WordTokenizer()
    fitted = await fit(turns, KOALA, Limits(2047, 2048), 1800, tokenizer)
    assert fitted.dropped_turns > 1900
    assert len(tokenizer.seen) < 2 * len(fitted.turns) + 10


async def test_a_message_too_long_for_the_model_names_its_size_and_the_limit() -> None:
    turns = [*thread(2), Turn("user", "word " * 3000)]
    with pytest.raises(PromptTooLongError) as caught:
        await fit(turns, KOALA, Limits(2047, 2048), 512, WordTokenizer())
    assert caught.value.limit == 1536
    assert caught.value.tokens > 3000
    assert str(caught.value.tokens) in str(caught.value)
    assert "1536" in str(caught.value)


async def test_a_newest_message_that_just_fits_is_sent_alone() -> None:
    tokenizer = WordTokenizer()
    question = Turn("user", "word " * 1000)
    alone = await tokenizer.count(render([question], KOALA))
    fitted = await fit([*thread(5)[:-1], question], KOALA, Limits(alone, 4096), 512, tokenizer)
    assert fitted.turns == [question]
    assert fitted.prompt_tokens == alone
    assert fitted.dropped_turns == 10


class MergingTokenizer(WordTokenizer):
    """A tokenizer whose whole prompt costs more than its turns counted one by one."""

    async def count(self, text: str) -> int:
        return await super().count(text) + 20 * text.count("</s>USER")


async def test_the_rendered_prompt_is_checked_against_the_budget() -> None:
    turns = thread(30, words=5)
    fitted = await fit(turns, KOALA, Limits(400, 2048), 100, MergingTokenizer())
    assert fitted.prompt_tokens <= 400
    assert fitted.prompt_tokens == await MergingTokenizer().count(fitted.prompt)
    assert fitted.turns[0].role == "user"


def test_exchanges_start_at_each_question() -> None:
    turns = [
        Turn("assistant", "Welcome!"),
        Turn("user", "a"),
        Turn("assistant", "b"),
        Turn("user", "c"),
        Turn("user", "d"),
    ]
    assert exchanges(turns) == [0, 1, 3, 4]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["user", "assistant"]), st.integers(0, 60)),
        max_size=40,
    ),
    st.integers(1, 60),
    st.integers(30, 900),
    st.sampled_from(sorted(TEMPLATES)),
)
def test_fit_keeps_the_longest_tail_of_whole_exchanges_within_the_budget(
    shape: list[tuple[str, int]], last: int, budget: int, name: str
) -> None:
    turns = [Turn(role, "w " * n) for role, n in shape] + [Turn("user", "q " * last)]  # type: ignore[arg-type]
    template = TEMPLATES[name]
    tokenizer = WordTokenizer()
    limits = Limits(budget, 4096)
    alone = asyncio.run(tokenizer.count(render(turns[-1:], template)))
    if alone > budget:
        with pytest.raises(PromptTooLongError):
            asyncio.run(fit(turns, template, limits, 100, tokenizer))
        return
    fitted = asyncio.run(fit(turns, template, limits, 100, tokenizer))
    # what the engine passes from its memory of each stored turn gives the same prompt
    pieces = [render_turn(turn, template) for turn in turns]
    costs = [asyncio.run(tokenizer.count(piece)) for piece in pieces]
    known = asyncio.run(fit(turns, template, limits, 100, tokenizer, costs, pieces))
    assert known == fitted
    dropped = fitted.dropped_turns
    assert fitted.turns == turns[dropped:]
    assert fitted.prompt == render(fitted.turns, template)
    assert fitted.prompt_tokens == asyncio.run(tokenizer.count(fitted.prompt)) <= budget
    if dropped:
        assert dropped in exchanges(turns)
        # The exchange before would not fit, even granting the one-BOS-per-turn overcount.
        previous = max(s for s in exchanges(turns) if s < dropped)
        longer = asyncio.run(tokenizer.count(render(turns[previous:], template)))
        assert longer + len(turns) - previous > budget


# --- against a TGI server (the fake, over a real socket) ---------------------------------------


def tokenize_requests(fake: FakeTGI) -> list[str]:
    return [r.body["inputs"] for r in fake.requests if r.path == "/tokenize"]


async def test_counts_come_from_tokenize_once_per_text(fake_tgi: FakeTGI, backend: Backend) -> None:
    counter = CachedCounter(backend)
    text = "What is the largest animal on earth?"
    assert await counter.count(text) == count_input_tokens(text)
    assert await counter.count(text) == count_input_tokens(text)
    assert tokenize_requests(fake_tgi) == [text]


async def test_a_server_without_tokenizer_gets_the_estimate(
    fake_tgi: FakeTGI, backend: Backend
) -> None:
    fake_tgi.tokenizer = False
    counter = CachedCounter(backend)
    for text in ["Hello!", "What is the largest animal on earth?", "Hello!"]:
        assert await counter.count(text) == estimate_tokens(text)
    assert len(tokenize_requests(fake_tgi)) == 1
    assert counter.estimating


@pytest.mark.parametrize("info_style", ["v2", "v1"])
async def test_a_long_thread_fitted_to_the_servers_info_is_accepted(
    fake_tgi: FakeTGI, backend: Backend, info_style: str
) -> None:
    fake_tgi.info_style = info_style  # type: ignore[assignment]
    fake_tgi.max_input_tokens, fake_tgi.max_total_tokens = 300, 400
    fake_tgi.replies.append("The blue whale.")
    turns = thread(40)
    params = GenerationParams(max_new_tokens=150, stop=KOALA.stop)
    limits = Limits.from_info(await backend.info())
    assert limits == Limits(300, 400)
    fitted = await fit(turns, KOALA, limits, params.max_new_tokens, CachedCounter(backend))
    assert fitted.dropped_turns > 0
    assert fitted.prompt_tokens == count_input_tokens(fitted.prompt) <= 250
    completion = await backend.generate(fitted.prompt, params)  # TGI would 422 a longer one
    assert completion.text == "The blue whale."
    assert fake_tgi.prompts == [fitted.prompt]
