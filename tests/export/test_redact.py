"""Redaction: what an export replaces, and what it must leave alone."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from koalabot.export.redact import Kind, find, redact

pytestmark = pytest.mark.compiled_build


def pseudonym(user: str) -> str:
    return f"u_{user.lower()}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Write to Bob.Smith+tag@mail.example.co.uk, thanks.", "Write to [EMAIL], thanks."),
        # Slack's own markup for a mailto link
        ("<mailto:alice@example.com|alice@example.com>", "<mailto:[EMAIL]|[EMAIL]>"),
        ("Call +1 415-555-0132 today", "Call [PHONE] today"),
        ("UK office: +44 20 7946 0958.", "UK office: [PHONE]."),
        ("London 020 7946 0958 or (415) 555-0199", "London [PHONE] or [PHONE]"),
        ("text me on 415.555.0132", "text me on [PHONE]"),
        (
            "reset at https://example.com/reset?user=7&token=abc123 now",
            "reset at [URL] now",
        ),
        (
            "<https://files.example.com/a.pdf?X-Amz-Signature=0f9e|the report>",
            "<[URL]|the report>",
        ),
        ("db at postgres://admin:hunter2@db.internal/app.", "db at [URL]."),
        ("AWS AKIAIOSFODNN7EXAMPLE leaked", "AWS [API_KEY] leaked"),
        ("use sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t please", "use [API_KEY] please"),
        ("token xoxb-1234567890-0987654321-AbCdEfGh", "token [API_KEY]"),
        ("gh: ghp_0123456789abcdefghijABCDEFGHIJ0123456789", "gh: [API_KEY]"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0",
            "jwt [API_KEY]",
        ),
        ("random Zx8kQ2mP9vL4nR7tY1wB6cD3fG5hJ0sA here", "random [API_KEY] here"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----!",
            "[API_KEY]!",
        ),
    ],
)
def test_personal_data_and_secrets_become_placeholders(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "What is the difference between a koala and a wombat?",
        "See https://docs.python.org/3/library/re.html?highlight=split#re.split for more.",
        "Released 2024-05-01 12:00:00 as version 1.2.3.4567; pi is 3.14159265.",
        "The server at 127.0.0.1 costs $12,345,678.90 a year.",  # loopback is no one's
        "Order #12345678 shipped; slack ts 1700000000.000100.",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b, sha256 "
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "class ThisIsAVeryLongCamelCaseIdentifierName: pass",
        "python lives in /usr/bin/python3.11 and @decorators are fine",
        "a role <@&123456> and a channel <#C024BE7LR> are not people",
        "\u2009" * 5,  # white space alone, in characters that take several bytes each
        "\u3000\u00a0" * 12,
    ],
)
def test_ordinary_text_stays_as_written(text: str) -> None:
    assert redact(text, pseudonym) == text
    assert find(text) == []


def test_mentions_become_the_pseudonym_the_author_field_uses() -> None:
    text = "ask <@U024BE7LH> or <@W123|bob>; on Discord <@80351110224678912> and <@!42>"

    assert redact(text, pseudonym) == (
        "ask <@u_u024be7lh> or <@u_w123>; on Discord <@u_80351110224678912> and <@u_42>"
    )


def test_without_a_pseudonym_function_mentions_are_kept() -> None:
    assert redact("thanks <@U024BE7LH>!") == "thanks <@U024BE7LH>!"


def test_findings_name_their_kind_and_exact_place() -> None:
    text = "mail a@b.io, key AKIAIOSFODNN7EXAMPLE, hi <@U1>"

    spans = find(text)

    assert [(text[s.start : s.end], s.kind) for s in spans] == [
        ("a@b.io", Kind.EMAIL),
        ("AKIAIOSFODNN7EXAMPLE", Kind.API_KEY),
        ("<@U1>", Kind.MENTION),
    ]
    assert spans[2].user == "U1"


def test_a_secret_url_swallows_what_is_inside_it() -> None:
    text = "https://x.example/cb?email=a@b.io&access_token=Zx8kQ2mP9vL4nR7tY1wB6cD3fG5hJ0sA"

    assert redact(text) == "[URL]"


def test_phone_regions_decide_which_national_formats_count() -> None:
    text = "Berlin office 030 901820"

    assert redact(text) == text  # not a US or UK number
    assert redact(text, phone_regions=("DE",)) == "Berlin office [PHONE]"
    assert redact("Berlin office +49 30 901820") == "Berlin office [PHONE]"


@given(st.text(max_size=300))
def test_redacting_twice_changes_nothing_more(text: str) -> None:
    """Placeholders and pseudonymised mentions are not findings themselves."""
    once = redact(text, pseudonym)

    assert redact(once, pseudonym) == once


@given(st.text(alphabet=st.characters(blacklist_characters="@:/<"), max_size=200))
def test_findings_never_overlap_and_stay_inside_the_text(text: str) -> None:
    spans = find(text)

    for left, right in itertools.pairwise(spans):
        assert left.end <= right.start
    assert all(0 <= s.start < s.end <= len(text) for s in spans)


@pytest.mark.parametrize("space", [" ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\x1c"])
def test_keys_are_found_whatever_white_space_surrounds_them(space: str) -> None:
    key = "ghp_0123456789abcdefghijABCDEFGHIJ0123456789"

    assert redact(f"old{space}{key}{space}new") == f"old{space}[API_KEY]{space}new"


@given(st.text(alphabet="ab1 \u00a0\u3000\x1cé", max_size=60))
def test_the_long_word_test_agrees_with_splitting_into_words(text: str) -> None:
    # find() bounds word lengths on a byte map of the text before it looks for keys: whatever
    # white space (ASCII or not) or digits surround a key, it finds what it finds in the same
    # words set apart by plain spaces.
    key = "Zq7Xw2Rt9Ly4Kp8Mv3Bn6Hc1Jd5Gf0Ss"
    joined = text + key + text

    found = [s.kind for s in find(joined)]
    expected = Kind.API_KEY in [s.kind for s in find(" ".join(joined.split()))]

    assert (Kind.API_KEY in found) == expected


_PHONE_PIECES = st.sampled_from(
    [
        *"0123456789",
        *" ()+-./#:=&?_xY@\t\n",
        *"\u00a0\u2009\u0663é中",  # Unicode spaces, an Arabic-Indic digit, letters
        *("+1 415 555 0100", "(020) 7946 0958", "415.555.0132", "#1234567", "v1.2.3456789"),
    ]
)


@given(st.lists(_PHONE_PIECES, max_size=30).map("".join))
def test_the_quick_digit_check_never_hides_a_phone_number(text: str) -> None:
    # `find` looks for phone numbers only where a byte-level check allows one. Every number the
    # full detector finds when run on the whole text without that check is still redacted.
    from koalabot.export.redact import PHONE_REGIONS, _phones

    found = find(text)
    for phone in _phones(text, PHONE_REGIONS):
        assert any(s.start < phone.end and phone.start < s.end for s in found), (phone, found)
