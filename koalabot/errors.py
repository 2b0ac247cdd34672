"""The exception tree. Each error is raised near its cause and carries a message fit for a user;
each boundary (CLI, chat adapter) turns it into words in one place."""

from __future__ import annotations


class KoalabotError(Exception):
    """Base of every error koalabot raises on purpose."""

    #: What the person in the chat (or at the terminal) is told.
    user_message: str = "Something went wrong on my side. Please try again."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.user_message)
        if message:
            self.user_message = message


class ConfigError(KoalabotError):
    """A setting has a bad value; the message names the setting."""


# --- storage ---------------------------------------------------------------------------


class StoreError(KoalabotError):
    """The conversation store failed."""

    user_message = "I could not reach my memory (the database). Please try again in a moment."


class StoreRefusedError(StoreError):
    """The database answered but refused the statement (its data or a constraint): unlike an
    unreachable database, trying the same write again will not help, so it is never spooled."""

    user_message = (
        "My memory (the database) refused to store this, so I could not act on it. "
        "Please send it again in other words."
    )


class SchemaBehindError(StoreError):
    """The database schema is older than this koalabot; PostgreSQL is never upgraded implicitly."""


class MigrationError(StoreError):
    """A schema migration cannot run: unknown revision (asked for, or found in the database)."""


class NotConfirmedError(KoalabotError):
    """A command that destroys data was not confirmed (no terminal to ask on, or not "yes")."""


# --- prompt ----------------------------------------------------------------------------


class PromptTooLongError(KoalabotError):
    """A single message is larger than the model's whole input budget."""

    def __init__(self, tokens: int, limit: int) -> None:
        self.tokens = tokens
        self.limit = limit
        super().__init__(
            f"Your message is too long for the model: about {tokens} tokens, "
            f"but it can read at most {limit} here. Please shorten it or split it up."
        )


class InvalidConversationError(KoalabotError):
    """A conversation given as data (a JSON list of turns) has the wrong shape."""


# --- backend ---------------------------------------------------------------------------


class BackendError(KoalabotError):
    """Base of the failures talking to TGI; ``partial`` holds any text already streamed."""

    partial: str = ""
    retryable: bool = False
    #: Seconds the server asked to wait (its Retry-After header), when it said.
    retry_after: float | None = None

    def __init__(self, message: str | None = None, *, partial: str = "") -> None:
        super().__init__(message)
        self.partial = partial


class BackendUnavailableError(BackendError):
    """No endpoint could be reached (refused, DNS, TLS, every endpoint unhealthy)."""

    retryable = True
    user_message = "The model server is not reachable right now. Please try again in a minute."


class BackendOverloadedError(BackendError):
    """TGI answered 429/503 or `overloaded`."""

    retryable = True
    user_message = "The model is busy with other requests right now. Please try again shortly."


class BackendTimeoutError(BackendError):
    """No first token, or no next token, within the configured time."""

    user_message = "The model took too long to answer. Please try again."


class GenerationFailedError(BackendError):
    """The stream broke after it started (an error event, a dropped connection, garbage)."""

    user_message = "The model stopped in the middle of its answer. Please try again."


class AnswerCutOffError(BackendError):
    """The server went past koalabot's own cap on an answer (it ignored ``max_new_tokens``)."""

    user_message = (
        "The model did not stop at its length limit, so I cut its answer off here. "
        "Please try again."
    )


class BackendPromptTooLongError(BackendError):
    """TGI rejected the input as longer than its limit (422 validation)."""

    user_message = "The conversation is too long for the model. Start a new thread to go on."


class BackendRejectedError(BackendError):
    """TGI rejected the request for another reason (bad parameters and the like)."""

    user_message = "The model server rejected the request; the operator should check the logs."


class TokenizerUnavailableError(BackendError):
    """The server cannot count tokens (/tokenize 404 "No fast tokenizer available").

    A TokenCounter raises it so koalabot.prompt.budget falls back to its conservative estimate.
    """

    user_message = "The model server cannot count tokens; estimating instead."


# --- policy ----------------------------------------------------------------------------


class AccessDeniedError(KoalabotError):
    """The access policy does not let this user, channel or workspace use the bot."""

    user_message = "Sorry, I am not available to you here."


class RateLimitedError(KoalabotError):
    """The user sent more messages a minute than the policy allows."""

    def __init__(self, limit: int, retry_after: float) -> None:
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"You are sending messages faster than I can keep up with (limit: {limit} a minute). "
            f"Please wait about {max(1, round(retry_after))} s and try again."
        )
