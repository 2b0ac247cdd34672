"""Redaction catches what operators paste (hex secrets, key-<hex>, UUID keys, cards, IP
addresses, IBANs, passwords) and keeps prose, code and git ids readable."""

from __future__ import annotations

import secrets

import pytest

from koalabot.export.redact import Kind, find, redact

pytestmark = pytest.mark.compiled_build

TOKEN_HEX = "4f1c9e0b7a2d8c35e6f10b9a7d3c2e8f5a4b6c7d8e9f0a1b2c3d4e5f6a7b8c9d"  # token_hex(32)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"SECRET_KEY={TOKEN_HEX}", "[API_KEY]"),  # a long random word: name and all
        (f"here it is: {TOKEN_HEX}", "here it is: [API_KEY]"),
        ("token 9F86D081884C7D659A2FEAA0C55AD015 ok", "token [API_KEY] ok"),
        ("mailgun key-3ax6xnjp29jd6fds4gc373sgvjxteol0", "mailgun [API_KEY]"),
        ("api key-0123456789abcdef0123456789abcdef.", "api [API_KEY]."),
        ("HEROKU_API_KEY: 01234567-89ab-cdef-0123-456789abcdef", "HEROKU_API_KEY: [API_KEY]"),
        ("card 4111 1111 1111 1111, exp 12/27", "card [CARD], exp 12/27"),
        ("pay with 5500-0000-0000-0004 now", "pay with [CARD] now"),
        ("amex 378282246310005.", "amex [CARD]."),
        ("ssh to 203.0.113.77 then 10.0.0.12.", "ssh to [IP] then [IP]."),
        ("v6 at 2001:db8:85a3::8a2e:370:7334, ok", "v6 at [IP], ok"),
        ("gateway fe80::1ff:fe23:4567:890a", "gateway [IP]"),
        ("IBAN DE89 3704 0044 0532 0130 00 THANKS", "IBAN [IBAN] THANKS"),
        ("send to GB82WEST12345698765432.", "send to [IBAN]."),
        ("password: hunter2", "password: [PASSWORD]"),
        ("Password = 'correct horse'", "Password = [PASSWORD]"),
        ("mysql -u root passwd=s3cr3t! -h db", "mysql -u root passwd=[PASSWORD] -h db"),
        ("ip 2001:db8::1 and fe80::1.", "ip [IP] and [IP]."),
        ("the PWD: Tr0ub4dor&3.", "the PWD: [PASSWORD]."),
    ],
)
def test_pasted_secrets_and_numbers_become_placeholders(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_what_secrets_token_hex_prints_is_redacted() -> None:
    for size in (16, 20, 32, 64):
        token = secrets.token_hex(size)
        assert redact(f"use {token} as the key") == "use [API_KEY] as the key"


@pytest.mark.parametrize(
    "text",
    [
        "Fixed in commit 3f786850e387550fdab836ed7e6dc881de23001b, see the changelog.",
        "```\n$ git log --oneline\n3f786850e387550fdab836ed7e6dc881de23001b Fix the build\n```",
        "Run `git show 3f786850e387550fdab836ed7e6dc881de23001b` to see it.",
        "The image digest is sha256:"
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "Version 1.2.3.4567 of the tool runs on 127.0.0.1 and ::1 (0.0.0.0 binds all).",
        "Meet at 10:30:45, room 4.12; C++ uses std::vector and a::b.",
        "The order 4111 1111 1111 1112 is not a card (Luhn fails).",
        "Call it with pass: through the gate, then passes and bypass=false.",
        "DE12 is a postcode prefix and GB00 NOPE is not an IBAN.",
        "def checksum(data: bytes) -> str:\n    return hashlib.md5(data).hexdigest()",
    ],
)
def test_prose_code_and_git_ids_stay_readable(text: str) -> None:
    assert redact(text) == text, find(text)


def test_a_git_sized_secret_is_still_a_secret_when_its_line_says_so() -> None:
    text = "```\nAPI_TOKEN=3f786850e387550fdab836ed7e6dc881de23001b\n```"
    assert "3f786850" not in redact(text)


def test_kinds_are_named() -> None:
    text = "pw=1 card 4111111111111111 ip 8.8.8.8 iban GB82WEST12345698765432 password: x"
    assert [s.kind for s in find(text)] == [Kind.CARD, Kind.IP, Kind.IBAN, Kind.PASSWORD]
