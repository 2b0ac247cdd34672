"""koalabot.store.storable: any text a person can send is made storable (UTF-8 without NUL) and
reads the same to them: only NUL and lone surrogates change, each into one U+FFFD."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from koalabot.store.storable import REPLACEMENT, storable

# Every code point, surrogates included (a JSON payload can carry "\\ud83d" alone).
ANY_TEXT = st.text(st.characters(codec=None, categories=None))


@given(ANY_TEXT)
def test_any_text_becomes_utf8_without_nul(text: str) -> None:
    stored = storable(text)
    stored.encode("utf-8")  # raises on a surrogate left behind
    assert "\x00" not in stored


@given(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")))
def test_text_a_database_takes_is_kept_as_it_is(text: str) -> None:
    assert storable(text) == text


def test_each_refused_code_point_becomes_one_replacement_and_pairs_are_joined() -> None:
    assert storable("a\x00b\ud83dc\udfffd") == f"a{REPLACEMENT}b{REPLACEMENT}c{REPLACEMENT}d"
    assert storable("koala \ud83d\udc28") == "koala 🐨"
