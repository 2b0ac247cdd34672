"""The small pure pieces of the Discord adapter: thread titles and thread keys."""

from __future__ import annotations

import pytest

from koalabot.events import ThreadKey
from koalabot_adapters.discord.events import THREAD_NAME_CHARS, thread_key, thread_name


@pytest.mark.parametrize(
    ("question", "title"),
    [
        ("What do koalas eat?", "What do koalas eat?"),
        ("  Two   spaces\nand a second line", "Two spaces"),
        ("", "Koala"),
        ("\n\nstarts with blank lines", "starts with blank lines"),
    ],
)
def test_thread_titles_come_from_the_first_line(question: str, title: str) -> None:
    assert thread_name(question) == title


def test_long_thread_titles_are_cut_with_an_ellipsis() -> None:
    title = thread_name("koala " * 40)
    assert len(title) == THREAD_NAME_CHARS and title.endswith("…")


def test_dm_conversations_have_no_workspace() -> None:
    assert thread_key(None, 5, "9") == ThreadKey("discord", "", "5", "9")
    assert thread_key(1, 5, 5) == ThreadKey("discord", "1", "5", "5")
