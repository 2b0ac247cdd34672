"""A failed answer in `koalabot chat` is retried in place: by /retry, or by sending the same
words again, and never stored as a second user turn (issue 19, item 1)."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_chat import run_chat
from tests.fakes.tgi import FakeTGI, Fault

ONCE = "BEGINNING OF CONVERSATION: USER: hello? GPT:"


async def asked_while_down(tmp_path: Path, fake_tgi: FakeTGI) -> str:
    """Say "hello?" in a chat while the model server is down, then bring it back up; what the
    chat printed."""
    await fake_tgi.stop()
    code, out, _ = await run_chat(tmp_path, fake_tgi.url, "hello?\n")
    assert code == 0
    await fake_tgi.start()
    return out


async def test_sending_the_same_words_after_a_failure_retries_it(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    fake_tgi.fault = Fault("error", times=1)
    fake_tgi.replies.extend([" Hel", " Hello! I am here."])  # the first goes to the failure
    code, out, err = await run_chat(tmp_path, fake_tgi.url, "hello?\nhello?\n/history\n")
    assert code == 0, err
    assert "/retry" in out  # the failure notice says how to retry
    assert "Hello! I am here." in out
    assert fake_tgi.prompts == [ONCE, ONCE]  # the retry's prompt holds the question once
    history = out[out.rindex("you: hello?") :].splitlines()
    assert history == ["you: hello?", "koala (retry): Hello! I am here."]


async def test_retry_after_the_server_came_back_answers_the_failed_message(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    assert "/retry" in await asked_while_down(tmp_path, fake_tgi)
    fake_tgi.replies.append(" Back again.")
    code, out, err = await run_chat(tmp_path, fake_tgi.url, "/retry\n/history\n")
    assert code == 0, err
    assert "nothing to retry" not in out
    assert fake_tgi.prompts == [ONCE]
    assert out.splitlines()[-2:] == ["you: hello?", "koala (retry): Back again."]


async def test_resend_after_a_restart_is_a_retry_not_a_second_turn(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    await asked_while_down(tmp_path, fake_tgi)
    fake_tgi.replies.extend([" Here.", " Blue."])
    code, _out, _ = await run_chat(tmp_path, fake_tgi.url, "hello?\nWhat colour is the sky?\n")
    assert code == 0
    assert fake_tgi.prompts == [
        ONCE,
        "BEGINNING OF CONVERSATION: USER: hello? GPT:Here.</s>USER: What colour is the sky? GPT:",
    ]


async def test_the_same_words_after_an_answer_are_a_new_turn(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    fake_tgi.replies.extend([" Yes.", " Still yes."])
    code, out, _ = await run_chat(tmp_path, fake_tgi.url, "hello?\nhello?\n/history\n")
    assert code == 0
    assert fake_tgi.prompts[-1] == f"{ONCE}Yes.</s>USER: hello? GPT:"
    assert "(retry)" not in out
