"""TGI's answers that are not text, mapped onto koalabot's exceptions in one place.

text-generation's ``parse_error`` names the TGI error; this module decides what it means for
a chat user. It never lets a KeyError (an error body without ``"error"``) or a non-JSON body
(a proxy's HTML page) escape as anything but a BackendError.
"""

from __future__ import annotations

import json
from typing import Any

from text_generation import errors as tgi

from koalabot.errors import (
    BackendError,
    BackendOverloadedError,
    BackendPromptTooLongError,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    GenerationFailedError,
    TokenizerUnavailableError,
)

# The two 422 texts of validate_input (reference §1.6): total too large, then input too large.
_TOO_LONG_MARKERS = ("must have less than", "must be <=")
_GATEWAY_STATUSES = {502, 504}
# Context-length messages of vLLM, SGLang and llama-cpp-python (openai_wire.py cites each).
_OPENAI_TOO_LONG_MARKERS = (
    "maximum context length",
    "context length",
    "context size",
    "max context",
    "is too large",
)


def error_from_body(status: int, body: bytes, *, partial: str = "") -> BackendError:
    """The exception for a non-200 answer, whatever its body (TGI JSON, HTML, nothing)."""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and (
        isinstance(payload.get("error"), str) or _openai_error(payload) is not None
    ):
        return error_from_payload(status, payload, partial=partial)
    return _error_from_status(status, _snippet(body), partial=partial)


def error_from_payload(status: int, payload: dict[str, Any], *, partial: str = "") -> BackendError:
    """The exception for TGI's or an OpenAI-compatible server's error JSON, from a response
    body or from a stream event."""
    info = _openai_error(payload)
    if info is not None:
        return _from_openai(status, info, partial)
    error_type = payload.get("error_type")
    message = str(payload.get("error", ""))
    if isinstance(error_type, str) and error_type.startswith("incomplete_generation"):
        # HEAD's incomplete_generation_stream is an UnknownError to parse_error (reference §2.3).
        return GenerationFailedError(partial=partial)
    if status == 503 and "error_type" not in payload:
        # Hugging Face endpoints and gateways: {"error": "Model ... is currently loading"}.
        return BackendOverloadedError(partial=partial)
    parsed = tgi.parse_error(status, {**payload, "error": message})
    if isinstance(parsed, (tgi.OverloadedError, tgi.RateLimitExceededError)):
        return BackendOverloadedError(partial=partial)
    if isinstance(parsed, tgi.GenerationError):
        return GenerationFailedError(partial=partial)
    if isinstance(parsed, tgi.ValidationError) or status == 422:
        return _validation_error(message, partial)
    if isinstance(parsed, tgi.NotFoundError) and "tokenizer" in message.lower():
        return TokenizerUnavailableError(partial=partial)
    if isinstance(parsed, tgi.BadRequestError):
        return _rejected(message, partial)
    if isinstance(parsed, tgi.ShardTimeoutError):
        return BackendTimeoutError(partial=partial)
    return _error_from_status(status, message, partial=partial)


def _openai_error(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The OpenAI-style error object: ``{"error": {...}}``, or vLLM's older top-level fields
    with ``"object": "error"`` (see openai_wire.py for each server's shape)."""
    nested = payload.get("error")
    if isinstance(nested, dict):
        return nested
    if payload.get("object") == "error" and "message" in payload:
        return payload
    return None


def _from_openai(status: int, info: dict[str, Any], partial: str) -> BackendError:
    message = str(info.get("message", ""))
    kind = f"{info.get('type', '')} {info.get('code', '')}".lower()
    code = info.get("code")
    if "context_length_exceeded" in kind or "exceed_context_size" in kind:
        return BackendPromptTooLongError(partial=partial)
    if any(marker in message.lower() for marker in _OPENAI_TOO_LONG_MARKERS):
        return BackendPromptTooLongError(partial=partial)
    if status in (401, 403):
        return BackendRejectedError(
            f"The model server refused the credentials (HTTP {status}): "
            "check KOALABOT_MODEL_API_KEY",
            partial=partial,
        )
    if status == 200:  # an error event on the stream names its status in "code" (vLLM)
        if code in (429, 503):
            return BackendOverloadedError(partial=partial)
        return GenerationFailedError(partial=partial)
    return _error_from_status(status, message, partial=partial)


def _validation_error(message: str, partial: str) -> BackendError:
    if any(marker in message for marker in _TOO_LONG_MARKERS):
        return BackendPromptTooLongError(partial=partial)
    return _rejected(message, partial)


def _rejected(message: str, partial: str) -> BackendError:
    return BackendRejectedError(
        f"The model server rejected the request: {message}", partial=partial
    )


def _error_from_status(status: int, detail: str, *, partial: str) -> BackendError:
    if status < 400:  # an error event of a kind we do not know, on a 200 stream
        return GenerationFailedError(partial=partial)
    if status in (429, 503):
        return BackendOverloadedError(partial=partial)
    if 400 <= status < 500 and status not in (404, 405):
        return BackendRejectedError(
            f"The model server rejected the request (HTTP {status}): {detail}", partial=partial
        )
    exc = BackendUnavailableError(partial=partial)
    # A gateway's 502/504 may pass; a wrong URL (404) or a broken server (500) will not.
    exc.retryable = status in _GATEWAY_STATUSES
    return exc


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace").strip()
    return " ".join(text.split())[:limit] or "(empty body)"
