"""The two wire protocols a model server may speak, behind one small seam.

``TGIWire`` is text-generation-inference's own protocol (``/generate_stream``, ``/info``,
``/tokenize``; reference/tgi-and-koala.md §1). ``OpenAIWire`` is the OpenAI-compatible *text
completions* route, ``POST /v1/completions`` with the raw prompt, which vLLM, SGLang, llama.cpp's
server, llama-cpp-python's server, Ollama's ``/v1`` and TGI itself all serve. Never a chat route:
its server-side chat template would rewrite the exact Koala prompt.

Everything else — pooled sessions, retries, failover, timeouts, stop-sequence hold-back — is the
same code for both (endpoint.py, pool.py, stream.py); a wire only says which path to call, what
body to send, and what one stream event means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from text_generation.types import StreamResponse

from koalabot.backend.error_map import error_from_payload
from koalabot.backend.params import GenerationParams
from koalabot.errors import BackendError, GenerationFailedError

if TYPE_CHECKING:
    from koalabot.backend.endpoint import Endpoint


@dataclass(frozen=True)
class Piece:
    """One stream event, in terms both protocols share."""

    #: Text to append to the answer ("" for a special token or a bookkeeping event).
    text: str
    #: The event that ends the answer (TGI's last token, OpenAI's finish_reason or [DONE]).
    final: bool = False
    finish_reason: str | None = None
    generated_tokens: int | None = None
    prompt_tokens: int | None = None
    #: TGI's full generated_text on its last event (None elsewhere).
    full_text: str | None = None


class Wire(Protocol):
    """What differs between server kinds."""

    kind: str
    stream_path: str
    health_path: str
    #: Finish reasons that mean "a stop sequence ended it" (the stop is cut from the answer).
    stop_reasons: frozenset[str]

    def body(self, prompt: str, params: GenerationParams) -> dict[str, Any]:
        """The JSON body of a streamed generation request."""
        ...

    def decode(self, data: str, partial: str) -> Piece:
        """One event's data; raises a BackendError for an error event."""
        ...

    async def info(self, endpoint: Endpoint) -> dict[str, Any]:
        """TGI-shaped info: ``model_id``, ``max_input_tokens``, ``max_total_tokens``."""
        ...

    async def count(self, endpoint: Endpoint, text: str) -> int:
        """Tokens in ``text`` as the server counts a prompt (BOS included)."""
        ...


class TGIWire:
    """text-generation-inference's own protocol (unchanged from before the OpenAI wire)."""

    kind = "tgi"
    #: /generate_stream: the same route and body in every TGI version, with no `stream` flag and
    #: no `return_full_text` default that depends on the model's pipeline tag (reference §1.2).
    stream_path = "/generate_stream"
    health_path = "/health"
    stop_reasons = frozenset({"stop_sequence"})

    def body(self, prompt: str, params: GenerationParams) -> dict[str, Any]:
        from text_generation.types import Request

        request = Request(inputs=prompt, parameters=params.to_tgi())
        body: dict[str, Any] = request.model_dump(exclude={"stream"})
        return body

    def decode(self, data: str, partial: str) -> Piece:
        try:
            event = StreamResponse.model_validate_json(data)
        except ValueError:
            raise _error_event(data, partial) from None
        details = event.details
        return Piece(
            text="" if event.token.special else event.token.text,
            final=event.generated_text is not None,
            finish_reason=details.finish_reason.value if details else None,
            generated_tokens=details.generated_tokens if details else None,
            prompt_tokens=_input_length(data) if event.generated_text is not None else None,
            full_text=event.generated_text,
        )

    async def info(self, endpoint: Endpoint) -> dict[str, Any]:
        info = await endpoint.get_json("/info")
        if not isinstance(info, dict):
            raise endpoint.not_this_kind("/info")
        return info

    async def count(self, endpoint: Endpoint, text: str) -> int:
        tokens = await endpoint.post_json("/tokenize", {"inputs": text}, no_tokenizer_on_404=True)
        if not isinstance(tokens, list):
            raise endpoint.not_this_kind("/tokenize")
        return len(tokens)


def _error_event(data: str, partial: str) -> BackendError:
    try:
        payload = orjson.loads(data)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "error" in payload:
        # Errors on a stream come as an event on a 200 response: TGI's {"error": str} (reference
        # §1.4), vLLM's and llama.cpp's {"error": {...}} (see openai_wire.py).
        return error_from_payload(200, payload, partial=partial)
    return GenerationFailedError(partial=partial)


def _input_length(data: str) -> int | None:
    try:
        value = orjson.loads(data)["details"]["input_length"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


decode_error_event = _error_event
