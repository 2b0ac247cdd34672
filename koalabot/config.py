"""Settings: one object built at start-up from command line > environment > TOML file > defaults."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from koalabot.errors import ConfigError

DEFAULT_NOTICE = (
    "Heads up: I am Koala, a research model. I can be wrong or biased, so check what matters. "
    "This conversation and your 👍/👎 votes are stored and may become training data; "
    "{how_to_opt_out}"
)

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _env(name: str) -> AliasChoices:
    """Accept both the KOALABOT_-prefixed name and the platform's usual bare name."""
    return AliasChoices(name.lower(), f"KOALABOT_{name}", name)


class ModelEntry(BaseModel):
    """One named model of KOALABOT_MODELS: its server(s), any kind the bot speaks, and its
    share of new threads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: CommaList
    weight: float = Field(1.0, ge=0)
    api: Literal["auto", "tgi", "openai"] = "auto"
    #: The model id to ask an OpenAI-compatible server for (default: the first it lists).
    model: str | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _urls(cls, value: Any) -> Any:
        urls = _split_commas(value)
        for url in urls:
            if not str(url).startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return urls


def _parse_models(value: Any) -> Any:
    """KOALABOT_MODELS in its environment form: "name=url,name=url" (each ``url`` may be
    ``url|url`` for several servers of one model), or JSON like the TOML table."""
    if not isinstance(value, str):
        return value
    if value.lstrip().startswith("{"):
        return json.loads(value)
    models: dict[str, Any] = {}
    for part in _split_commas(value):
        name, sep, url = part.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ValueError(f"{part!r} is not name=url")
        models[name.strip()] = {"url": url.strip().replace("|", ",")}
    return models


class Settings(BaseSettings):
    """Everything koalabot can be told, with defaults that work on a laptop."""

    model_config = SettingsConfigDict(
        env_prefix="KOALABOT_",
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
    )

    # --- backend -----------------------------------------------------------------------
    tgi_url: str | None = None
    tgi_urls: CommaList = Field(default_factory=list)
    #: The model server(s), any kind (one URL or a comma list); wins over KOALABOT_TGI_URL(S).
    model_url: CommaList = Field(default_factory=list)
    #: Which protocol the server speaks: found by probing (auto), TGI's, or OpenAI-compatible.
    model_api: Literal["auto", "tgi", "openai"] = "auto"
    #: Sent as `Authorization: Bearer …` to every model server call (never logged).
    model_api_key: SecretStr | None = None
    #: The model id to ask an OpenAI-compatible server for (default: the first it lists).
    model: str | None = None
    #: The context window when the server does not state it (llama-cpp-python, Ollama).
    context_tokens: int | None = Field(None, gt=0)
    #: A local tokenizer.json that counts tokens instead of the server.
    tokenizer: str | None = None
    template: str = "koala"
    max_new_tokens: int = Field(512, gt=0)
    temperature: float | None = Field(0.7, gt=0)
    top_p: float | None = Field(0.95, gt=0, lt=1)
    top_k: int | None = Field(None, gt=0)
    repetition_penalty: float | None = Field(None, gt=0)
    seed: int | None = Field(None, ge=0)
    connect_timeout: float = Field(5.0, gt=0)
    first_token_timeout: float = Field(60.0, gt=0)
    idle_timeout: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0)
    retry_base_delay: float = Field(0.25, ge=0)
    health_check_interval: float = Field(5.0, gt=0)

    # --- comparing models (issue 20) -----------------------------------------------------
    #: Named models, each a backend of its own, sharing new threads by weight (empty: the one
    #: backend above). Environment: "koala=http://a:8080,candidate=http://b:8000", weights by
    #: KOALABOT_MODEL_WEIGHTS; TOML: a [models.NAME] table with url, weight, api, model.
    models: Annotated[dict[str, ModelEntry], NoDecode] = Field(default_factory=dict)
    #: Traffic weights for the environment form of KOALABOT_MODELS: "koala=3,candidate=1".
    model_weights: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    #: 🔄 asks another model than the one that answered (default: the same model).
    cross_model_retry: bool = False
    #: Name the model under each answer (default: blind, no model name reaches the platform).
    show_model: bool = False
    #: Channels whose threads are side-by-side battles (two models' answers, A/B).
    battle_channels: CommaList = Field(default_factory=list)
    #: The share of other threads that are battles (0: none).
    battle_share: float = Field(0.0, ge=0, le=1)

    # --- storage -----------------------------------------------------------------------
    database_url: str = "sqlite:///koalabot.db"
    #: Seconds a SQLite write waits for another process's write lock before it fails (read by
    #: koalabot/store/database.py from KOALABOT_SQLITE_BUSY_TIMEOUT, or passed to open_database).
    sqlite_busy_timeout: float = Field(5.0, ge=0)

    # --- access policy -----------------------------------------------------------------
    allowed_workspaces: CommaList = Field(default_factory=list)
    allowed_channels: CommaList = Field(default_factory=list)
    allowed_users: CommaList = Field(default_factory=list)
    blocked_users: CommaList = Field(default_factory=list)
    rate_limit_per_minute: int = Field(20, ge=0)

    # --- notice and consent ------------------------------------------------------------
    notice: str = DEFAULT_NOTICE
    optout_users: CommaList = Field(default_factory=list)

    # --- platforms ---------------------------------------------------------------------
    slack_bot_token: str | None = Field(None, validation_alias=_env("SLACK_BOT_TOKEN"))
    slack_app_token: str | None = Field(None, validation_alias=_env("SLACK_APP_TOKEN"))
    slack_signing_secret: str | None = Field(None, validation_alias=_env("SLACK_SIGNING_SECRET"))
    slack_api_url: str = "https://slack.com/api/"
    #: Slack answers through chat.startStream/appendStream/stopStream where Slack lets them
    #: ("auto"), always try it first ("on"), or edit with chat.update ("off").
    slack_streaming: Literal["auto", "on", "off"] = "auto"
    discord_token: str | None = Field(None, validation_alias=_env("DISCORD_TOKEN"))
    discord_api_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    edit_interval: float = Field(1.0, gt=0)

    # --- serving -----------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(3000, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    shutdown_grace: float = Field(20.0, ge=0)
    #: Where messages wait while the database is unreachable ("" keeps none: the user is asked
    #: to send the message again); created on first use.
    spool_path: str = "koalabot-spool.db"
    spool_limit: int = Field(10_000, ge=1)
    #: Seconds between attempts to reach the database while messages wait in the spool.
    spool_retry_interval: float = Field(5.0, gt=0)
    #: /healthz reports unhealthy once the oldest kept message or vote has waited this many
    #: seconds (the database has been away that long, or something in the spool is stuck).
    spool_max_age: float = Field(300.0, gt=0)

    # --- export and review -------------------------------------------------------------
    pseudonym_secret: str | None = None
    review_token: str | None = None

    @field_validator(
        "tgi_urls",
        "model_url",
        "battle_channels",
        "allowed_workspaces",
        "allowed_channels",
        "allowed_users",
        "blocked_users",
        "optout_users",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("tgi_url", "tgi_urls", "model_url")
    @classmethod
    def _http_urls(cls, value: Any) -> Any:
        urls = value if isinstance(value, list) else [value] if value else []
        for url in urls:
            if not str(url).startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        return _parse_models(value)

    @field_validator("model_weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs = [part.partition("=") for part in _split_commas(value)]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError(f"{value!r} is not name=weight,name=weight")
        return {name.strip(): weight.strip() for name, _, weight in pairs}

    @model_validator(mode="after")
    def _weighted_models(self) -> Settings:
        unknown = set(self.model_weights) - set(self.models)
        if unknown:
            raise ValueError(f"KOALABOT_MODEL_WEIGHTS names no model: {', '.join(sorted(unknown))}")
        if self.models and not any(w > 0 for _, w in self.weighted_models):
            raise ValueError("KOALABOT_MODELS: no model has a weight above 0")
        return self

    @property
    def weighted_models(self) -> list[tuple[str, float]]:
        """Each named model with its traffic weight (KOALABOT_MODEL_WEIGHTS wins)."""
        return [(n, self.model_weights.get(n, m.weight)) for n, m in self.models.items()]

    @field_validator("database_url")
    @classmethod
    def _bare_path_is_sqlite(cls, value: str) -> str:
        """`koalabot.db` or `/data/kb.db` (no scheme) names a SQLite file; other words without a
        scheme stay as given, so a typo gets the URL's error instead of a new file."""
        looks_like_file = "/" in value or Path(value).suffix in (".db", ".sqlite", ".sqlite3")
        return f"sqlite:///{value}" if "://" not in value and looks_like_file else value

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        from koalabot.prompt.templates import TEMPLATES

        if value not in TEMPLATES:
            raise ValueError(f"unknown template {value!r} (known: {', '.join(sorted(TEMPLATES))})")
        return value

    @property
    def endpoints(self) -> list[str]:
        """The model server base URLs: KOALABOT_MODEL_URL, else KOALABOT_TGI_URLS, else
        KOALABOT_TGI_URL, else local."""
        urls = list(self.model_url) or list(self.tgi_urls)
        urls = urls or ([self.tgi_url] if self.tgi_url else [])
        return [u.rstrip("/") for u in urls] or ["http://127.0.0.1:8080"]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _CONFIG_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


# pydantic-settings builds sources from the class, so the --config path travels in here for the
# duration of one load_settings() call.
_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def _setting_name(loc: tuple[int | str, ...], flags: dict[str, Any]) -> str:
    """The setting's variable, and the flag first when the bad value came from the command line."""
    field = str(loc[0]) if loc else "settings"
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    variable = (
        str(alias.choices[1]) if isinstance(alias, AliasChoices) else f"KOALABOT_{field.upper()}"
    )
    if field in flags:
        return f"--{field.replace('_', '-')} ({variable})"
    return f"setting {variable}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build Settings; command-line overrides (None means not given) win over everything."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
    _CONFIG_FILE["path"] = Path(config_file) if config_file is not None else None
    try:
        return Settings(**given)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {config_file}: not valid TOML ({exc})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"unknown setting {err['loc'][0]!r} in the config file") from None
        if not err["loc"]:  # a rule across settings names them in its message
            raise ConfigError(f"invalid settings: {msg}") from None
        raise ConfigError(f"invalid {_setting_name(err['loc'], given)}: {msg}") from None
    finally:
        _CONFIG_FILE["path"] = None
