"""KOALABOT_MODELS: several named models, from the environment or a TOML table."""

from __future__ import annotations

from pathlib import Path

import pytest

from koalabot.config import load_settings
from koalabot.errors import ConfigError


def test_the_environment_form_names_each_model_with_equal_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KOALABOT_MODELS", "koala=http://a:8080,candidate=http://b:8000/")

    settings = load_settings()

    assert settings.weighted_models == [("koala", 1.0), ("candidate", 1.0)]
    assert settings.models["candidate"].url == ["http://b:8000/"]


def test_weights_and_several_servers_per_model_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KOALABOT_MODELS", "koala=http://a:1|http://a:2,candidate=http://b:1")
    monkeypatch.setenv("KOALABOT_MODEL_WEIGHTS", "koala=3,candidate=1")

    settings = load_settings()

    assert settings.weighted_models == [("koala", 3.0), ("candidate", 1.0)]
    assert settings.models["koala"].url == ["http://a:1", "http://a:2"]


def test_a_toml_table_gives_weights_and_server_kinds(tmp_path: Path) -> None:
    config = tmp_path / "koalabot.toml"
    config.write_text(
        '[models.koala]\nurl = "http://a:8080"\nweight = 9\n'
        '[models.candidate]\nurl = "http://b:8000"\napi = "openai"\nmodel = "cand-7b"\n'
    )

    settings = load_settings(config)

    assert settings.weighted_models == [("koala", 9.0), ("candidate", 1.0)]
    assert settings.models["candidate"].api == "openai"
    assert settings.models["candidate"].model == "cand-7b"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("KOALABOT_MODELS", "koala", "invalid setting KOALABOT_MODELS: 'koala' is not name=url"),
        ("KOALABOT_MODELS", "koala=ftp://x", "KOALABOT_MODELS: 'ftp://x' is not an http"),
        ("KOALABOT_MODEL_WEIGHTS", "nobody=2", "KOALABOT_MODEL_WEIGHTS names no model: nobody"),
    ],
)
def test_a_bad_models_setting_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv("KOALABOT_MODELS", "koala=http://a:8080")
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert says in str(caught.value)
    assert "\n" not in str(caught.value)
