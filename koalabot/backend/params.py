"""Generation parameters: what koalabot asks TGI for, and what it records next to each answer."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from text_generation.errors import ValidationError as TGIValidationError
from text_generation.types import Parameters

from koalabot.errors import BackendRejectedError

if TYPE_CHECKING:
    from koalabot.config import Settings


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one answer; frozen so a stored record matches what was sent."""

    max_new_tokens: int = 512
    temperature: float | None = 0.7
    top_p: float | None = 0.95
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, stop: Sequence[str]) -> GenerationParams:
        """The configured sampling settings with the template's stop sequences."""
        return cls(
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            repetition_penalty=settings.repetition_penalty,
            seed=settings.seed,
            stop=tuple(stop),
        )

    @property
    def do_sample(self) -> bool:
        """TGI samples only when asked to; any sampling knob set means sampling is wanted."""
        return any(v is not None for v in (self.temperature, self.top_p, self.top_k))

    def as_dict(self) -> dict[str, Any]:
        """What is stored in the generation record (JSON-ready)."""
        data = asdict(self)
        data["stop"] = list(self.stop)
        data["do_sample"] = self.do_sample
        return data

    def to_tgi(self) -> Parameters:
        """text-generation's request model; its validators run here, before anything is sent.

        ``details`` is on so the last stream event carries the finish reason and token count.
        """
        return _to_tgi(self)


#: Stream events an answer may take beyond ``max_new_tokens``: an OpenAI-compatible server sends
#: a few without new tokens (role, finish reason, usage).
CAP_SPARE_EVENTS = 16
#: Characters an answer may take per token asked for: far above any vocabulary's average (about
#: four) and its longest tokens (runs of spaces or `=`), so only a server that does not stop
#: reaches it, or one that sends text in huge pieces.
CAP_CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class AnswerCap:
    """koalabot's own limit on one streamed answer, so a server that ignores ``max_new_tokens``
    (or never sends its last event) is cut off instead of streaming forever."""

    #: Stream events (a token each on TGI).
    tokens: int
    chars: int

    @classmethod
    def of(cls, params: GenerationParams) -> AnswerCap:
        """The cap for answers asked with ``params`` (from the same max_new_tokens setting)."""
        return cls(
            tokens=params.max_new_tokens + CAP_SPARE_EVENTS,
            chars=params.max_new_tokens * CAP_CHARS_PER_TOKEN,
        )


@functools.lru_cache(maxsize=64)
def _to_tgi(params: GenerationParams) -> Parameters:
    # The same settings serve every answer: validated once, not per request.
    try:
        return Parameters(
            do_sample=params.do_sample,
            max_new_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            repetition_penalty=params.repetition_penalty,
            seed=params.seed,
            stop=list(params.stop),
            return_full_text=False,
            details=True,
        )
    except TGIValidationError as exc:
        raise BackendRejectedError(f"Invalid generation settings: {exc}") from exc
