"""`koalabot export`'s options: a bad combination is one clear error before anything is read."""

from __future__ import annotations

import pytest

from koalabot.export.options import SECRET_HELP, ExportError, ExportOptions, Format

pytestmark = pytest.mark.compiled_build


def test_string_prompt_only_applies_to_kto_and_dpo() -> None:
    with pytest.raises(ExportError, match="--string-prompt applies to kto and dpo"):
        ExportOptions(Format.SFT, string_prompt=True)
    assert ExportOptions(Format.DPO, string_prompt=True).string_prompt


def test_min_votes_below_one_is_refused() -> None:
    with pytest.raises(ExportError, match="--min-votes must be at least 1"):
        ExportOptions(Format.KTO, min_votes=0)


def test_an_empty_pseudonym_secret_says_how_to_set_one() -> None:
    with pytest.raises(ExportError) as raised:
        ExportOptions(Format.KTO, pseudonym_secret="")
    assert str(raised.value) == SECRET_HELP
    assert "KOALABOT_PSEUDONYM_SECRET" in SECRET_HELP and "--no-pseudonymize" in SECRET_HELP


@pytest.mark.parametrize("fmt", list(Format))
def test_rows_carry_meta_by_default_except_openai(fmt: Format) -> None:
    assert ExportOptions(fmt).with_meta is (fmt is not Format.OPENAI)
    assert ExportOptions(fmt, meta=False).with_meta is False
    assert ExportOptions(fmt, meta=True).with_meta is True
