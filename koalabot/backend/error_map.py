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


def error_from_body(status: int, body: bytes, *, partial: str = "") -> BackendError:
    """The exception for a non-200 answer, whatever its body (TGI JSON, HTML, nothing)."""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return error_from_payload(status, payload, partial=partial)
    return _error_from_status(status, _snippet(body), partial=partial)


def error_from_payload(status: int, payload: dict[str, Any], *, partial: str = "") -> BackendError:
    """The exception for TGI's error JSON, from a response body or from a stream event."""
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
