"""What `koalabot export` is asked to do: the format, the filters, and how ids and text are written.

`ExportOptions` checks its combinations when it is made, so a bad request fails with one clear
line before anything is read; the rest of the export can trust it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from koalabot.errors import KoalabotError

SECRET_HELP = (
    "user ids are pseudonymised with a keyed hash, but no secret is set: set "
    "KOALABOT_PSEUDONYM_SECRET (for example to the output of "
    "`python -c 'import secrets; print(secrets.token_hex(32))'`) and keep it to get the same "
    "pseudonyms in every export, or pass --no-pseudonymize to write raw platform ids"
)


class ExportError(KoalabotError):
    """The export cannot run as asked (bad option combination, no pseudonym secret)."""


class Format(StrEnum):
    """The training-data formats `koalabot export` writes."""

    KOALA = "koala"
    KTO = "kto"
    DPO = "dpo"
    SFT = "sft"
    OPENAI = "openai"
    SHAREGPT = "sharegpt"


#: Formats whose rows can carry the exact prompt string instead of chat messages.
STRING_PROMPT_FORMATS = frozenset({Format.KTO, Format.DPO})


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how; the filters apply to the rated answers, never to their context."""

    format: Format
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    platform: str | None = None
    channel: str | None = None
    model: str | None = None
    min_votes: int = 1
    include_failed: bool = False
    #: The HMAC key for pseudonyms; None writes raw platform ids.
    pseudonym_secret: str | None = None
    string_prompt: bool = False
    #: Add a ``meta`` object to each row; None means the format's default (all but openai).
    meta: bool | None = None
    #: Only answers included or corrected on the review page (`koalabot review`).
    reviewed_only: bool = False
    #: One answer per question: drop answers whose user message repeats an earlier one.
    dedupe: bool = False
    #: Replace e-mail addresses, phone numbers, secret URLs and API keys with placeholders.
    redact: bool = True
    #: Keep role markers and ``<s>``/``</s>`` in message text as written (default: neutralised
    #: as the prompt neutralises them, so no tokenizer sees a literal special token or turn).
    raw_text: bool = False
    #: sft rows as ``{"messages": [...]}`` (disliked answers left out of the thread) instead of
    #: TRL's prompt–completion form, where only the liked answer is trained.
    sft_messages: bool = False

    def __post_init__(self) -> None:
        if self.string_prompt and self.format not in STRING_PROMPT_FORMATS:
            raise ExportError(f"--string-prompt applies to kto and dpo, not {self.format}")
        if self.sft_messages and self.format is not Format.SFT:
            raise ExportError(f"--sft-messages applies to sft, not {self.format}")
        if self.min_votes < 1:
            raise ExportError("--min-votes must be at least 1")
        if self.pseudonym_secret == "":
            raise ExportError(SECRET_HELP)

    @property
    def reviewed_negatives(self) -> bool:
        """Whether answers a reviewer excluded as wrong or low quality become negative examples
        (--reviewed-only in kto and dpo, the formats that train on negatives)."""
        return self.reviewed_only and self.format in (Format.KTO, Format.DPO)

    @property
    def with_meta(self) -> bool:
        """Whether rows carry ``meta`` (OpenAI's validator is strict, so not by default there)."""
        return self.meta if self.meta is not None else self.format is not Format.OPENAI


__all__ = ["SECRET_HELP", "STRING_PROMPT_FORMATS", "ExportError", "ExportOptions", "Format"]
