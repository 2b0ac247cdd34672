"""Issue 19, items 5 and 6: `koalabot chat` at a real terminal (a pty, as a person types) behaves
like a terminal program, and `--demo` answers with an echoing stand-in that stops with the chat."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import sqlite3
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.first_hour import clean_env, koalabot

LEFT, UP = b"\x1b[D", b"\x1b[A"


def _controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`koalabot chat --demo` on a pty: type keys, read the screen."""

    def __init__(self, cwd: Path) -> None:
        main, child = pty.openpty()
        env = clean_env(TERM="xterm", KOALABOT_DATABASE_URL=f"sqlite:///{cwd / 'tty.db'}")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "koalabot", "chat", "--demo", "--user", "ada"],
            stdin=child,
            stdout=child,
            stderr=child,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_controlling_terminal,  # so ^C on the pty is SIGINT, as in a terminal
        )
        os.close(child)
        self.fd = main
        self.screen = b""

    def read_until(self, marker: bytes, within: float = 30) -> bytes:
        deadline = time.monotonic() + within
        while marker not in self.screen:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"{marker!r} never shown; screen: {self.screen[-2000:]!r}"
            self.screen += os.read(self.fd, 4096)
        return self.screen

    def prompt_after(self, keys: bytes) -> None:
        """Type ``keys``, then wait for the next prompt."""
        mark = len(self.screen)
        os.write(self.fd, keys)
        while b"you> " not in self.screen[mark:]:
            self._more()

    def _more(self) -> None:
        ready, _, _ = select.select([self.fd], [], [], 30)
        assert ready, f"no prompt; screen: {self.screen[-2000:]!r}"
        self.screen += os.read(self.fd, 4096)

    def exit_status(self, within: float = 15) -> int:
        try:
            return self.proc.wait(within)
        finally:
            os.close(self.fd)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path)
    term.read_until(b"you> ")
    yield term
    if term.proc.poll() is None:
        term.proc.kill()


def _stored(cwd: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(cwd / "tty.db") as conn:
        return conn.execute(query).fetchall()


def test_demo_says_the_answers_come_from_an_echoing_stand_in(terminal: Terminal) -> None:
    terminal.prompt_after(b"What do koalas eat?\n")

    assert b"stand-in that echoes your message" in terminal.screen
    assert b"(echo stand-in, not a model) You said: What do koalas eat?" in terminal.screen
    os.write(terminal.fd, b"\x04")  # Ctrl-D
    assert terminal.exit_status() == 0


def test_arrow_keys_edit_the_line_and_recall_history(terminal: Terminal, tmp_path: Path) -> None:
    terminal.prompt_after(b"helo" + LEFT + b"l\n")  # fix the typo before Enter
    terminal.prompt_after(UP + b"\n")  # the same line again, from history

    os.write(terminal.fd, b"\x04")
    assert terminal.exit_status() == 0
    said = [t for (t,) in _stored(tmp_path, "SELECT text FROM messages WHERE role = 'user'")]
    assert said == ["hello", "hello"]


def test_ctrl_c_exits_at_once_with_130(terminal: Terminal) -> None:
    os.write(terminal.fd, b"half a messa")
    terminal.read_until(b"half a messa")  # readline echoed it: it waits for the next key
    time.sleep(0.2)  # as a person's next key comes (readline misses a signal while it works)
    started = time.monotonic()
    os.write(terminal.fd, b"\x03")  # Ctrl-C, as the terminal driver sends it

    assert terminal.exit_status() == 130
    assert time.monotonic() - started < 10


def test_ctrl_c_while_an_answer_streams_exits_with_130(terminal: Terminal) -> None:
    os.write(terminal.fd, b"word " * 400 + b"\n")  # 400 words at 20 ms each: 8 s of answer
    terminal.read_until(b"You said: word word")

    os.write(terminal.fd, b"\x03")

    assert terminal.exit_status(within=5) == 130


def test_history_marks_a_retry_and_optin_undoes_optout(terminal: Terminal, tmp_path: Path) -> None:
    terminal.prompt_after(b"Hello koala\n")
    terminal.prompt_after(b"/retry\n")
    terminal.prompt_after(b"/history\n")
    terminal.prompt_after(b"/optout\n")
    opted_out = _stored(tmp_path, "SELECT user_key FROM optouts")
    terminal.prompt_after(b"/optin\n")

    history = terminal.screen.split(b"you> /history")[1].replace(b"\r", b"")
    assert b"\nkoala: (echo stand-in" in history
    assert b"\nkoala (retry): (echo stand-in" in history
    assert opted_out == [("terminal:ada",)]
    assert b"[opted in again" in terminal.screen
    assert _stored(tmp_path, "SELECT user_key FROM optouts") == []
    os.write(terminal.fd, b"/quit\n")
    assert terminal.exit_status() == 0


def test_the_demo_runs_twice_in_a_row_with_piped_input(tmp_path: Path) -> None:
    first = koalabot(tmp_path, "chat", "--demo", stdin="first\n")
    second = koalabot(tmp_path, "chat", "--demo", stdin="second\n")

    assert (first.returncode, first.stderr) == (0, "")
    assert (second.returncode, second.stderr) == (0, "")
    assert "You said: first" in first.stdout and "You said: second" in second.stdout
