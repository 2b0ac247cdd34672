"""OpenAI-compatible text completions: ``POST /v1/completions`` with the raw Koala prompt.

What each server does, as relied on here (sources read 2026-12-03):

* Stream framing: ``data: {json}`` events, each ``choices[0].text`` the next piece, the last
  chunk with ``finish_reason`` ``"stop"`` or ``"length"``, then ``data: [DONE]``.
  llama.cpp ``tools/server/server-common.cpp`` ``format_oai_sse`` and
  ``server-context.cpp`` (``"data: [DONE]\\n\\n"``); llama-cpp-python 0.3.36
  ``llama_cpp/server/app.py`` ``get_event_publisher`` (sse-starlette, ``[DONE]`` last); vLLM
  ``entrypoints/openai/completion/serving.py``. Keep-alive comments (llama.cpp ``":\\n\\n"``,
  sse-starlette ``": ping"``) are skipped by sse.py.
* Stop strings are cut from the text by the servers (vLLM unless
  ``include_stop_str_in_output``; llama.cpp and llama-cpp-python always), and ``finish_reason``
  is ``"stop"`` for EOS and stop strings alike; stream.py still holds back a possible stop prefix,
  so a server that leaves it in changes nothing.
* Errors: an HTTP status with ``{"error": {"message", "type", "code", ...}}`` (llama.cpp
  ``format_error_response``; llama-cpp-python ``server/errors.py``; vLLM ≥ 0.10
  ``ErrorResponse(error=ErrorInfo(...))``) or, in older vLLM, the same fields at the top level
  with ``"object": "error"``. In the middle of a stream vLLM and llama.cpp send
  ``data: {"error": {...}}`` on the 200 response (vLLM ``create_streaming_error_response``;
  llama.cpp ``format_error`` in the ``set_next`` loop); llama.cpp answers the *first* error of a
  stream as a plain HTTP error ("to match the OAI API behavior", server-context.cpp).
* Context too long: llama.cpp 400 ``type: "exceed_context_size_error"`` ("request (N tokens)
  exceeds the available context size (M tokens)"); llama-cpp-python 400
  ``code: "context_length_exceeded"``, but on a *stream* its check runs inside the generator
  after the 200 has started, so the stream just ends without ``[DONE]`` (app.py catches only
  cancellation) — the budget's exact server counts keep koalabot from getting there; vLLM 400
  "This model's maximum context length is N tokens..." / "'max_tokens' ... is too large";
  SGLang "... is longer than the model's context length ...".
* Context window: vLLM (and SGLang) put ``max_model_len`` in each ``/v1/models`` entry;
  llama.cpp ``GET /props`` has ``default_generation_settings.n_ctx`` (``get_res_props``);
  llama-cpp-python and Ollama state none (``/v1/models`` lists ids only), hence
  KOALABOT_CONTEXT_TOKENS.
* Token counts: vLLM ``POST /tokenize {"model", "prompt", "add_special_tokens"}`` →
  ``{"count", "tokens", "max_model_len"}``; llama.cpp ``POST /tokenize {"content",
  "add_special"}`` → ``{"tokens"}`` (``add_special`` defaults to false there, so it is sent);
  llama-cpp-python ``POST /extras/tokenize {"input"}`` → ``{"tokens"}`` (``Llama.tokenize``
  adds BOS by default). Ollama has no tokenize route: estimate.
* Ollama serves ``/v1/completions`` (docs.ollama.com/api/openai-compatibility) and needs
  ``model``; vLLM answers 404 for a model it does not serve, so ``model`` is always sent.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import orjson

from koalabot.backend.params import GenerationParams
from koalabot.backend.wire import Piece, decode_error_event
from koalabot.errors import ConfigError, TokenizerUnavailableError

if TYPE_CHECKING:
    from koalabot.backend.endpoint import Endpoint

log = logging.getLogger(__name__)

DONE = "[DONE]"


class OpenAIWire:
    """The OpenAI-compatible completions protocol for one configured model."""

    kind = "openai"
    stream_path = "/v1/completions"
    #: Every server above serves /v1/models; not all of them serve /health.
    health_path = "/v1/models"
    stop_reasons = frozenset({"stop"})

    def __init__(self, model: str | None = None, context_tokens: int | None = None) -> None:
        #: The model id sent with each request (KOALABOT_MODEL, else the first one listed).
        self.model = model
        self._wanted = model
        self._context_tokens = context_tokens
        #: Per endpoint URL: how its tokenizer is reached, once found (None: it has none).
        self._tokenize_route: dict[str, tuple[str, str] | None] = {}

    def body(self, prompt: str, params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model or "",
            "prompt": prompt,
            "stream": True,
            "max_tokens": params.max_new_tokens,
            "stop": list(params.stop),
            # Prompt and completion token counts in a last chunk (vLLM, llama.cpp; others
            # ignore the field).
            "stream_options": {"include_usage": True},
        }
        for key, value in (
            ("temperature", params.temperature),
            ("top_p", params.top_p),
            ("seed", params.seed),
            # Not in OpenAI's schema, but vLLM, SGLang, llama.cpp and llama-cpp-python read them.
            ("top_k", params.top_k),
            ("repetition_penalty", params.repetition_penalty),
        ):
            if value is not None:
                body[key] = value
        return body

    def decode(self, data: str, partial: str) -> Piece:
        if data.strip() == DONE:
            return Piece("", final=True)
        try:
            chunk = orjson.loads(data)
        except ValueError:
            chunk = _lenient_json(data)  # orjson refuses a lone surrogate escape ("\ud800")
            if chunk is None:
                raise decode_error_event(data, partial) from None
        if not isinstance(chunk, dict) or "error" in chunk or chunk.get("object") == "error":
            raise decode_error_event(data, partial)
        usage = chunk.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        choices = chunk.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], dict) else {}
        text = choice.get("text")
        reason = choice.get("finish_reason")
        return Piece(
            text=valid_text(text) if isinstance(text, str) else "",
            # The finish_reason chunk ends the text; a usage chunk and [DONE] may follow and are
            # read by stream.py's drain.
            final=isinstance(reason, str),
            finish_reason=reason if isinstance(reason, str) else None,
            generated_tokens=_int(usage.get("completion_tokens")),
            prompt_tokens=_int(usage.get("prompt_tokens")),
        )

    async def prepare(self, endpoint: Endpoint) -> None:
        """Learn the model id to send (KOALABOT_MODEL checked against what is served)."""
        await self._model_entry(endpoint)

    async def _model_entry(self, endpoint: Endpoint) -> dict[str, Any]:
        listing = await endpoint.get_json("/v1/models")
        entries = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(entries, list):
            raise endpoint.not_this_kind("/v1/models")
        entry = self._pick(endpoint.url, [e for e in entries if isinstance(e, dict)])
        self.model = str(entry.get("id") or self.model or "")
        return entry

    async def info(self, endpoint: Endpoint) -> dict[str, Any]:
        entry = await self._model_entry(endpoint)
        context = _int(entry.get("max_model_len")) or await self._props_context(endpoint)
        if context is None:
            context = self._context_tokens
        if context is None:
            raise ConfigError(
                f"{endpoint.url} does not say how many tokens its model takes: "
                "set KOALABOT_CONTEXT_TOKENS to the server's context size"
            )
        return {"model_id": self.model, "max_input_tokens": context, "max_total_tokens": context}

    def _pick(self, url: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [str(e.get("id")) for e in entries]
        if self._wanted is None:
            return entries[0] if entries else {}
        if self._wanted in ids:
            return entries[ids.index(self._wanted)]
        raise ConfigError(
            f"invalid setting KOALABOT_MODEL: {url} does not serve {self._wanted!r} "
            f"(it serves: {', '.join(ids) or 'nothing'})"
        )

    async def _props_context(self, endpoint: Endpoint) -> int | None:
        props = await endpoint.try_json("GET", "/props", None)
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        return _int(settings.get("n_ctx")) if isinstance(settings, dict) else None

    async def count(self, endpoint: Endpoint, text: str) -> int:
        if endpoint.url not in self._tokenize_route:
            route, tokens = await self._find_route(endpoint, text)
            self._tokenize_route[endpoint.url] = route
            if tokens is not None:
                return tokens
        route = self._tokenize_route[endpoint.url]
        if route is None:
            raise TokenizerUnavailableError()
        answer = await endpoint.try_json("POST", route[0], self._tokenize_body(route[1], text))
        tokens = _token_count(answer)
        if tokens is None:
            del self._tokenize_route[endpoint.url]  # it changed under us: look again next time
            raise TokenizerUnavailableError()
        return tokens

    async def _find_route(
        self, endpoint: Endpoint, text: str
    ) -> tuple[tuple[str, str] | None, int | None]:
        """The route that counts ``text`` and its count, trying each dialect in turn."""
        for path, dialect in (
            ("/tokenize", "vllm"),
            ("/tokenize", "llama.cpp"),
            ("/extras/tokenize", "llama-cpp-python"),
        ):
            answer = await endpoint.try_json("POST", path, self._tokenize_body(dialect, text))
            tokens = _token_count(answer)
            if tokens is not None:
                log.info("%s counts tokens with %s (%s's route)", endpoint.url, path, dialect)
                return (path, dialect), tokens
        log.warning(
            "%s has no tokenize route: token counts are estimates (set KOALABOT_TOKENIZER to "
            "the model's tokenizer.json for exact ones)",
            endpoint.url,
        )
        return None, None

    def _tokenize_body(self, dialect: str, text: str) -> dict[str, Any]:
        if dialect == "vllm":
            return {"model": self.model or "", "prompt": text, "add_special_tokens": True}
        if dialect == "llama.cpp":
            return {"content": text, "add_special": True}
        return {"input": text}


#: UTF-16 surrogates: only a lone one survives JSON decoding (a pair becomes one character).
_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` with lone surrogates as U+FFFD: a random or broken model can send one as a JSON
    escape, and no UTF-8 store or platform API takes it."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _lenient_json(data: str) -> Any:
    try:
        return json.loads(data, strict=False)  # raw control characters too
    except ValueError:
        return None


def _token_count(answer: Any) -> int | None:
    if not isinstance(answer, dict):
        return None
    count = _int(answer.get("count"))
    if count is not None:
        return count
    tokens = answer.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


__all__ = ["OpenAIWire"]
