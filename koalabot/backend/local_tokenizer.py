"""Token counts from a local ``tokenizer.json`` (KOALABOT_TOKENIZER), for servers that cannot
count (Ollama, some gateways) or to spare the round trips.

Uses Hugging Face's ``tokenizers`` (Rust, no torch): it reads the same file the model was
trained with, so counts are exact where the server's own tokenizer is the same file. The
package is optional (``pip install 'koalabot[tokenizer]'``); asking for a file without it is a
one-line ConfigError at start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from koalabot.errors import ConfigError


class LocalTokenizer:
    """Counts tokens the way the model's own tokenizer does, special tokens (BOS) included."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, path: str) -> LocalTokenizer:
        """The tokenizer in ``path``; ConfigError when it cannot be used."""
        try:
            from tokenizers import Tokenizer  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError(
                "invalid setting KOALABOT_TOKENIZER: the tokenizers package is not installed "
                "(pip install tokenizers)"
            ) from None
        if not Path(path).is_file():
            raise ConfigError(f"invalid setting KOALABOT_TOKENIZER: {path} is not a file")
        try:
            return cls(Tokenizer.from_file(path))
        except Exception as exc:  # the Rust side raises plain Exception for a bad file
            raise ConfigError(
                f"invalid setting KOALABOT_TOKENIZER: {path} is not a tokenizer.json ({exc})"
            ) from None

    def count(self, text: str) -> int:
        """Tokens in ``text`` as a prompt, the special tokens the tokenizer adds included."""
        return len(self._tokenizer.encode(text, add_special_tokens=True).ids)
