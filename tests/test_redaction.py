"""Secrets in LLM configs never reach a checkpoint, and restore puts them back (no network needed)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import orjson
import pytest
from autogen import ConversableAgent, LLMConfig
from pydantic import BaseModel, SecretStr

from checkpoint_system.errors import InvalidCheckpointError
from checkpoint_system.redaction import (
    REDACTED_KEY,
    TOP_LEVEL,
    UNSERIALIZABLE_KEY,
    MissingSecret,
    build_llm_config,
    describe_missing,
    find_secrets,
    is_secret_name,
    redact_llm_config,
    restore_llm_config,
    restore_llm_config_report,
)

OPENAI_KEY = "sk-test-SECRET-123"
AZURE_KEY = "azure-test-SECRET-456"
CUSTOM_KEY = "custom-test-SECRET-789"
HEADER_AUTH = "Bearer hdr-test-SECRET-000"
FAKE_ENV = {"OPENAI_API_KEY": OPENAI_KEY, "AZURE_OPENAI_API_KEY": AZURE_KEY}


def _token_provider() -> str:
    return "aad-token"


def _marker(field: str, restore_from: str) -> dict[str, str]:
    return {REDACTED_KEY: field, "restore_from": restore_from}


def _roundtrip(data: Any) -> Any:
    """What a checkpoint file gives back: the bytes on disk, parsed again."""
    return orjson.loads(orjson.dumps(data))


def _llm(agent: ConversableAgent) -> LLMConfig:
    assert isinstance(agent.llm_config, LLMConfig)
    return agent.llm_config


def _entry_field(agent: ConversableAgent, index: int, name: str) -> Any:
    value = getattr(_llm(agent).config_list[index], name)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _blob(data: Any) -> bytes:
    return orjson.dumps(data)


def _full_llm_config() -> LLMConfig:
    return LLMConfig(
        {
            "model": "gpt-4o-mini",
            "api_key": OPENAI_KEY,
            "tags": ["fast", "cheap"],
            "default_headers": {"Authorization": HEADER_AUTH, "X-Trace": "on"},
            "max_completion_tokens": 77,
        },
        {
            "api_type": "azure",
            "model": "gpt-4",
            "api_key": AZURE_KEY,
            "azure_ad_token_provider": _token_provider,
            "base_url": "https://example.openai.azure.com",
            "api_version": "2024-02-01",
            "tags": ["azure"],
        },
        {
            "model": "my-local-model",
            "model_client_cls": "MyModelClient",
            "api_key": CUSTOM_KEY,
            "device": "cpu",
        },
        temperature=0.3,
        cache_seed=42,
        max_tokens=512,
    )


def _agent_llm_config() -> dict[str, Any]:
    """A config an agent can be built from on every ag2/openai version (no key+provider mix on azure)."""
    return {
        "config_list": [
            {"model": "gpt-4o-mini", "api_key": OPENAI_KEY, "tags": ["fast"]},
            {
                "api_type": "azure",
                "model": "gpt-4",
                "api_key": AZURE_KEY,
                "base_url": "https://example.openai.azure.com",
                "api_version": "2024-02-01",
            },
            {"model": "my-local-model", "model_client_cls": "MyModelClient", "device": "cpu"},
        ],
        "temperature": 0.2,
        "cache_seed": 7,
    }


# --------------------------------------------------------------------------------------------- redaction


def test_llm_config_keeps_every_non_secret_field_of_every_entry() -> None:
    config = _full_llm_config()
    original = config.model_dump()
    redacted = redact_llm_config(config)
    assert isinstance(redacted, dict)
    blob = _blob(redacted)
    for secret in (OPENAI_KEY, AZURE_KEY, CUSTOM_KEY, HEADER_AUTH, "hdr-test-SECRET"):
        assert secret.encode() not in blob
    assert b"SECRET" not in blob

    assert {k: v for k, v in redacted.items() if k != "config_list"} == {
        "temperature": 0.3,
        "cache_seed": 42,
        "max_tokens": 512,
    }
    secret_fields = {"api_key", "azure_ad_token_provider", "default_headers"}
    assert len(redacted["config_list"]) == 3
    for saved, entry in zip(redacted["config_list"], original["config_list"], strict=True):
        for key, value in entry.items():
            if key not in secret_fields:
                assert saved[key] == value, key
        assert set(saved) == set(entry)

    openai_entry, azure_entry, custom_entry = redacted["config_list"]
    assert openai_entry["api_key"] == _marker("api_key", "env:OPENAI_API_KEY")
    assert openai_entry["default_headers"] == {
        "Authorization": _marker("default_headers.Authorization", "user"),
        "X-Trace": "on",
    }
    assert openai_entry["max_tokens"] == 512
    assert openai_entry["max_completion_tokens"] == 77
    assert azure_entry["api_key"] == _marker("api_key", "env:AZURE_OPENAI_API_KEY")
    assert azure_entry["azure_ad_token_provider"] == _marker("azure_ad_token_provider", "user")
    assert azure_entry["base_url"] == "https://example.openai.azure.com/"
    assert azure_entry["api_version"] == "2024-02-01"
    assert custom_entry["model_client_cls"] == "MyModelClient"
    assert custom_entry["device"] == "cpu"
    # A custom client reads its own credentials: no environment convention applies.
    assert custom_entry["api_key"] == _marker("api_key", "user")


def test_redaction_does_not_touch_the_live_config() -> None:
    config = _full_llm_config()
    before = config.model_dump()
    redact_llm_config(config)
    assert config.model_dump() == before
    plain = _agent_llm_config()
    snapshot = copy.deepcopy(plain)
    redact_llm_config(plain)
    assert plain == snapshot


def test_find_secrets_lists_every_secret_value() -> None:
    found = find_secrets(_full_llm_config())
    assert set(found) == {OPENAI_KEY, AZURE_KEY, CUSTOM_KEY, HEADER_AUTH}
    assert find_secrets(False) == []
    assert find_secrets(None) == []
    assert find_secrets({"model": "m", "api_key": ""}) == []


def test_plain_dict_config_keeps_its_shape() -> None:
    plain = _agent_llm_config()
    redacted = redact_llm_config(plain)
    assert isinstance(redacted, dict)
    assert set(redacted) == {"config_list", "temperature", "cache_seed"}
    assert redacted["config_list"][0] == {
        "model": "gpt-4o-mini",
        "api_key": _marker("api_key", "env:OPENAI_API_KEY"),
        "tags": ["fast"],
    }
    assert redacted["config_list"][2] == plain["config_list"][2]
    assert OPENAI_KEY.encode() not in _blob(redacted)
    assert AZURE_KEY.encode() not in _blob(redacted)


def test_flat_old_style_dict() -> None:
    flat = {"model": "gpt-4o-mini", "api_key": OPENAI_KEY, "temperature": 0.1, "max_tokens": 50}
    redacted = redact_llm_config(flat)
    assert redacted == {
        "model": "gpt-4o-mini",
        "api_key": _marker("api_key", "env:OPENAI_API_KEY"),
        "temperature": 0.1,
        "max_tokens": 50,
    }
    restored = restore_llm_config(_roundtrip(redacted), environ=FAKE_ENV)
    assert restored == flat
    assert isinstance(restored, dict)
    agent = ConversableAgent("flat", llm_config=restored)
    assert _llm(agent).model_dump() == _llm(ConversableAgent("orig", llm_config=dict(flat))).model_dump()


@pytest.mark.parametrize("value", [False, None])
def test_false_and_none_pass_through(value: Any) -> None:
    assert redact_llm_config(value) is value
    assert restore_llm_config(value) is value
    assert restore_llm_config_report(value) == (value, [])
    assert build_llm_config(value) is value


def test_llm_config_entry_and_list_inputs() -> None:
    config = _full_llm_config()
    entry = redact_llm_config(config.config_list[0])
    assert isinstance(entry, dict)
    assert entry["api_key"] == _marker("api_key", "env:OPENAI_API_KEY")
    as_list = redact_llm_config([{"model": "a", "api_key": OPENAI_KEY}])
    assert as_list == {"config_list": [{"model": "a", "api_key": _marker("api_key", "env:OPENAI_API_KEY")}]}
    with pytest.raises(TypeError):
        redact_llm_config(42)


def test_auth_headers_are_redacted_other_headers_kept() -> None:
    headers = {
        "Authorization": "Bearer a-SECRET",
        "Proxy-Authorization": "Basic b-SECRET",
        "api-key": "c-SECRET",
        "X-API-Key": "d-SECRET",
        "Cookie": "session=e-SECRET",
        "x-goog-api-key": "f-SECRET",
        "X-Trace": "on",
        "Content-Type": "application/json",
        "User-Agent": "tests",
    }
    redacted = redact_llm_config(
        {
            "config_list": [
                {"model": "m", "default_headers": headers, "extra_headers": {"X-Auth-Token": "g-SECRET"}}
            ]
        }
    )
    assert isinstance(redacted, dict)
    entry = redacted["config_list"][0]
    assert b"SECRET" not in _blob(redacted)
    saved = entry["default_headers"]
    for name in ("X-Trace", "Content-Type", "User-Agent"):
        assert saved[name] == headers[name]
    for name in ("Authorization", "Proxy-Authorization", "api-key", "X-API-Key", "Cookie", "x-goog-api-key"):
        assert saved[name] == _marker(f"default_headers.{name}", "user")
    assert entry["extra_headers"]["X-Auth-Token"] == _marker("extra_headers.X-Auth-Token", "user")


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_key", True),
        ("admin_api_key", True),
        ("OPENAI-API-KEY", True),
        ("client_secret", True),
        ("aws_secret_key", True),
        ("refresh_token", True),
        ("gcp_auth_token", True),
        ("azure_ad_token", True),
        ("db_password", True),
        ("credentials", True),
        ("google_application_credentials", True),
        ("http_client", True),
        ("max_tokens", False),
        ("max_completion_tokens", False),
        ("max_token", False),
        ("num_token", False),
        ("thinking_budget", False),
        ("model", False),
        ("base_url", False),
        ("api_version", False),
        ("api_type", False),
        ("user", False),
        ("tags", False),
        ("temperature", False),
    ],
)
def test_secret_name_rule(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_unknown_secret_like_keys_and_counts() -> None:
    entry = {
        "model": "m",
        "max_tokens": 100,
        "max_completion_tokens": 10,
        "custom_token": "t-SECRET",
        "service_password": "p-SECRET",
        "extra_body": {"vendor_api_key": "v-SECRET", "top_k": 3},
        "proxy": "http://user:pw-SECRET@proxy.local:8080",
        "use_token": True,
    }
    redacted = redact_llm_config(entry)
    assert isinstance(redacted, dict)
    assert b"SECRET" not in _blob(redacted)
    assert redacted["max_tokens"] == 100
    assert redacted["max_completion_tokens"] == 10
    assert redacted["use_token"] is True
    assert redacted["custom_token"] == _marker("custom_token", "user")
    assert redacted["extra_body"] == {
        "vendor_api_key": _marker("extra_body.vendor_api_key", "user"),
        "top_k": 3,
    }
    assert redacted["proxy"] == _marker("proxy", "user")
    assert "pw-SECRET" in find_secrets(entry)


def test_secret_str_values_are_redacted_anywhere() -> None:
    entry = {"model": "m", "api_key": SecretStr(OPENAI_KEY), "vendor_blob": SecretStr("blob-SECRET")}
    redacted = redact_llm_config({"config_list": [entry]})
    assert isinstance(redacted, dict)
    saved = redacted["config_list"][0]
    assert saved["api_key"] == _marker("api_key", "env:OPENAI_API_KEY")
    assert saved["vendor_blob"] == _marker("vendor_blob", "user")
    assert set(find_secrets({"config_list": [entry]})) == {OPENAI_KEY, "blob-SECRET"}
    assert b"SECRET" not in _blob(redacted)


class _Answer(BaseModel):
    text: str


def test_non_json_values_become_unserializable_markers() -> None:
    def scorer(x: str) -> int:
        return len(x)

    client = httpx.Client()
    try:
        redacted = redact_llm_config(
            {
                "config_list": [{"model": "m", "scorer": scorer, "http_client": client}],
                "response_format": _Answer,
            }
        )
    finally:
        client.close()
    assert isinstance(redacted, dict)
    _blob(redacted)
    entry = redacted["config_list"][0]
    assert entry["scorer"][UNSERIALIZABLE_KEY].endswith("scorer")
    assert entry["scorer"]["restore_from"] == "user"
    assert entry["http_client"] == _marker("http_client", "user")
    assert redacted["response_format"][UNSERIALIZABLE_KEY].endswith("_Answer")

    restored, missing = restore_llm_config_report(_roundtrip(redacted), secrets={"response_format": _Answer})
    assert restored == {"config_list": [{"model": "m"}], "response_format": _Answer}
    assert {(m.entry_index, m.field) for m in missing} == {(0, "scorer"), (0, "http_client")}


@pytest.mark.parametrize(
    ("api_type", "field", "restore_from"),
    [
        ("openai", "api_key", "env:OPENAI_API_KEY"),
        ("responses", "api_key", "env:OPENAI_API_KEY"),
        ("azure", "api_key", "env:AZURE_OPENAI_API_KEY"),
        ("azure", "azure_ad_token", "env:AZURE_OPENAI_AD_TOKEN"),
        ("anthropic", "api_key", "env:ANTHROPIC_API_KEY"),
        ("google", "api_key", "env:GOOGLE_API_KEY|GEMINI_API_KEY"),
        ("gemini", "api_key", "env:GOOGLE_API_KEY|GEMINI_API_KEY"),
        ("mistral", "api_key", "env:MISTRAL_API_KEY"),
        ("groq", "api_key", "env:GROQ_API_KEY"),
        ("together", "api_key", "env:TOGETHER_API_KEY"),
        ("cohere", "api_key", "env:COHERE_API_KEY"),
        ("cerebras", "api_key", "env:CEREBRAS_API_KEY"),
        ("deepseek", "api_key", "env:DEEPSEEK_API_KEY"),
        ("bedrock", "aws_access_key", "env:AWS_ACCESS_KEY_ID"),
        ("bedrock", "aws_secret_key", "env:AWS_SECRET_ACCESS_KEY"),
        ("bedrock", "aws_session_token", "env:AWS_SESSION_TOKEN"),
        ("ollama", "api_key", "user"),
        ("somebody_new", "api_key", "user"),
        ("anthropic", "gcp_auth_token", "user"),
    ],
)
def test_restore_from_follows_api_type(api_type: str, field: str, restore_from: str) -> None:
    redacted = redact_llm_config({"config_list": [{"api_type": api_type, "model": "m", field: "v-SECRET"}]})
    assert isinstance(redacted, dict)
    assert redacted["config_list"][0][field] == _marker(field, restore_from)


def test_api_type_defaults_to_openai_and_gemini_fallback_variable() -> None:
    no_type = redact_llm_config({"config_list": [{"model": "m", "api_key": "k"}]})
    assert isinstance(no_type, dict)
    assert no_type["config_list"][0]["api_key"] == _marker("api_key", "env:OPENAI_API_KEY")
    redacted = redact_llm_config(
        {"config_list": [{"api_type": "google", "model": "gemini-pro", "api_key": "g"}]}
    )
    restored = restore_llm_config(_roundtrip(redacted), environ={"GEMINI_API_KEY": "from-gemini"})
    assert isinstance(restored, dict)
    assert restored["config_list"][0]["api_key"] == "from-gemini"
    restored = restore_llm_config(
        _roundtrip(redacted), environ={"GEMINI_API_KEY": "from-gemini", "GOOGLE_API_KEY": "from-google"}
    )
    assert isinstance(restored, dict)
    assert restored["config_list"][0]["api_key"] == "from-google"


# --------------------------------------------------------------------------------------------- restore


def test_restore_gives_an_equal_agent_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    original = ConversableAgent("original", llm_config=_agent_llm_config())
    redacted = redact_llm_config(original.llm_config)
    on_disk = _blob(redacted)
    assert OPENAI_KEY.encode() not in on_disk
    assert AZURE_KEY.encode() not in on_disk

    restored, missing = restore_llm_config_report(orjson.loads(on_disk), environ=FAKE_ENV)
    assert missing == []
    assert isinstance(restored, dict)
    rebuilt = ConversableAgent("rebuilt", llm_config=restored)
    assert _llm(rebuilt).model_dump() == _llm(original).model_dump()
    assert rebuilt.llm_config == original.llm_config
    assert _entry_field(rebuilt, 0, "api_key") == OPENAI_KEY
    assert _entry_field(rebuilt, 1, "api_key") == AZURE_KEY


def test_key_comes_from_the_environment_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-process-env")
    redacted = _roundtrip(redact_llm_config(_agent_llm_config()))
    restored = restore_llm_config(redacted, environ={**FAKE_ENV, "OPENAI_API_KEY": "sk-from-fake-env"})
    assert isinstance(restored, dict)
    assert restored["config_list"][0]["api_key"] == "sk-from-fake-env"
    restored = restore_llm_config(redacted)  # default: os.environ
    assert isinstance(restored, dict)
    assert restored["config_list"][0]["api_key"] == "sk-from-process-env"


def test_full_llm_config_round_trip_is_equal() -> None:
    config = _full_llm_config()
    redacted = _roundtrip(redact_llm_config(config))
    restored, missing = restore_llm_config_report(
        redacted,
        environ=FAKE_ENV,
        secrets={"my-local-model.api_key": CUSTOM_KEY, "default_headers.Authorization": HEADER_AUTH},
        azure_ad_token_provider=_token_provider,
    )
    assert missing == []
    rebuilt = build_llm_config(restored)
    assert rebuilt == config
    assert rebuilt.model_dump() == config.model_dump()
    assert restored is not None and restored is not False
    assert "config_list" in restored  # build_llm_config does not consume its input


def test_missing_environment_variable_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    redacted = _roundtrip(redact_llm_config(_agent_llm_config()))
    restored, missing = restore_llm_config_report(redacted, environ={"AZURE_OPENAI_API_KEY": AZURE_KEY})
    assert missing == [
        MissingSecret(0, "gpt-4o-mini", "api_key", "env:OPENAI_API_KEY", "environment variable not set")
    ]
    assert isinstance(restored, dict)
    assert "api_key" not in restored["config_list"][0]
    assert restored["config_list"][1]["api_key"] == AZURE_KEY
    message = describe_missing(missing)
    assert "config_list[0]" in message and "OPENAI_API_KEY" in message and "gpt-4o-mini" in message
    # Supplying the missing key through the environment makes the config usable again.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-late")
    agent = ConversableAgent("late", llm_config=restored)
    assert _entry_field(agent, 1, "api_key") == AZURE_KEY


def test_token_provider_is_supplied_again() -> None:
    config = {
        "config_list": [
            {
                "api_type": "azure",
                "model": "gpt-4",
                "azure_ad_token_provider": _token_provider,
                "base_url": "https://example.openai.azure.com",
                "api_version": "2024-02-01",
            }
        ]
    }
    redacted = _roundtrip(redact_llm_config(config))
    assert redacted["config_list"][0]["azure_ad_token_provider"] == _marker("azure_ad_token_provider", "user")

    def new_provider() -> str:
        return "fresh-token"

    restored, missing = restore_llm_config_report(redacted, environ={}, azure_ad_token_provider=new_provider)
    assert missing == []
    assert isinstance(restored, dict)
    assert restored["config_list"][0]["azure_ad_token_provider"] is new_provider
    agent = ConversableAgent("azure", llm_config=restored)
    assert _entry_field(agent, 0, "azure_ad_token_provider") is new_provider

    _, missing = restore_llm_config_report(_roundtrip(redacted), environ={})
    assert missing == [
        MissingSecret(0, "gpt-4", "azure_ad_token_provider", "user", "must be supplied by the caller")
    ]


def test_default_string_token_provider_is_not_a_secret() -> None:
    entry = {"api_type": "azure", "model": "gpt-4", "azure_ad_token_provider": "DEFAULT"}
    assert redact_llm_config(entry) == entry


def test_secrets_mapping_precedence() -> None:
    redacted = _roundtrip(
        redact_llm_config(
            {
                "config_list": [
                    {"model": "a", "api_key": "x"},
                    {"model": "b", "api_key": "y"},
                    {"model": "b", "api_key": "z"},
                    {"model": "c", "api_key": "w"},
                ]
            }
        )
    )
    restored = restore_llm_config(
        redacted,
        environ={"OPENAI_API_KEY": "from-env"},
        secrets={"#2.api_key": "by-index", "b.api_key": "by-model", "api_key": "by-field"},
    )
    assert isinstance(restored, dict)
    assert [e["api_key"] for e in restored["config_list"]] == ["by-field", "by-model", "by-index", "by-field"]
    restored = restore_llm_config(
        redacted, environ={"OPENAI_API_KEY": "from-env"}, secrets={"c.api_key": "c"}
    )
    assert isinstance(restored, dict)
    assert [e["api_key"] for e in restored["config_list"]] == ["from-env", "from-env", "from-env", "c"]


def test_top_level_unserializable_is_reported_at_top_level() -> None:
    redacted = redact_llm_config({"config_list": [{"model": "m"}], "response_format": _Answer})
    _, missing = restore_llm_config_report(_roundtrip(redacted))
    assert len(missing) == 1
    assert missing[0].entry_index == TOP_LEVEL
    assert missing[0].field == "response_format"
    assert "top level" in describe_missing(missing)


# --------------------------------------------------------------------------------------------- hostile input


def _with_key_marker(restore_from: Any, **extra: Any) -> dict[str, Any]:
    marker = {REDACTED_KEY: "api_key", "restore_from": restore_from, **extra}
    return {"config_list": [{"model": "m", "api_key": marker}]}


@pytest.mark.parametrize(
    "bad",
    [
        _with_key_marker("env:PATH; rm -rf /"),
        _with_key_marker("env:"),
        _with_key_marker("eval:__import__('os').system('true')"),
        _with_key_marker("env:OPENAI_API_KEY|"),
        _with_key_marker(123),
        _with_key_marker(None),
        _with_key_marker("user", extra="field"),
        {"config_list": [{"model": "m", "api_key": {REDACTED_KEY: "base_url", "restore_from": "user"}}]},
        {"config_list": [{"model": "m", "api_key": {REDACTED_KEY: 5, "restore_from": "user"}}]},
        {"config_list": [{"model": "m", "x": {UNSERIALIZABLE_KEY: ["t"], "restore_from": "user"}}]},
        {"config_list": ["not an entry"]},
        {"config_list": [None]},
        {"config_list": [["model", "m"]]},
        {"config_list": [{REDACTED_KEY: "", "restore_from": "user"}]},
        {"config_list": "gpt-4"},
        {"config_list": 3},
        {REDACTED_KEY: "api_key", "restore_from": "env:OPENAI_API_KEY"},
    ],
)
def test_hostile_redacted_input_raises_invalid_checkpoint(bad: Any) -> None:
    with pytest.raises(InvalidCheckpointError):
        restore_llm_config_report(bad, environ={"PATH": "/bin", "OPENAI_API_KEY": "k"})


@pytest.mark.parametrize("bad", [[{"model": "m"}], "config", 3, True])
def test_non_object_config_raises_invalid_checkpoint(bad: Any) -> None:
    with pytest.raises(InvalidCheckpointError):
        restore_llm_config(bad)


def test_deep_nesting_raises_invalid_checkpoint() -> None:
    deep: Any = "leaf"
    for _ in range(500):
        deep = {"x": deep}
    with pytest.raises(InvalidCheckpointError):
        restore_llm_config({"config_list": [{"model": "m", "extra_body": deep}]})


def test_deep_but_legitimate_nesting_round_trips() -> None:
    deep: Any = {"api_key": "deep-SECRET"}
    for _ in range(45):
        deep = {"x": [deep]}
    redacted = redact_llm_config({"model": "m", "extra_body": deep})
    assert b"deep-SECRET" not in _blob(redacted)
    restored = restore_llm_config(_roundtrip(redacted), secrets={"api_key": "never used for nested paths"})
    assert isinstance(restored, dict)
    inner = restored["extra_body"]
    for _ in range(45):
        inner = inner["x"][0]
    assert inner == {}


def test_well_formed_but_foreign_variable_is_not_read() -> None:
    restored, missing = restore_llm_config_report(
        _with_key_marker("env:AWS_SECRET_ACCESS_KEY|PATH"),
        environ={"AWS_SECRET_ACCESS_KEY": "aws-secret", "PATH": "/bin"},
    )
    assert restored == {"config_list": [{"model": "m"}]}
    assert len(missing) == 1
    assert missing[0].field == "api_key"
    assert "not read" in missing[0].reason


def test_unserializable_entry_is_dropped_and_reported() -> None:
    redacted = _roundtrip(redact_llm_config({"config_list": [object(), {"model": "m"}]}))
    restored, missing = restore_llm_config_report(redacted)
    assert restored == {"config_list": [{"model": "m"}]}
    assert [(m.entry_index, m.field) for m in missing] == [(0, "")]


def test_user_dict_with_reserved_key_is_not_mistaken_for_a_marker() -> None:
    redacted = redact_llm_config(
        {"model": "m", "extra_body": {REDACTED_KEY: "api_key", "restore_from": "user"}}
    )
    assert isinstance(redacted, dict)
    assert UNSERIALIZABLE_KEY in redacted["extra_body"]
    restored, missing = restore_llm_config_report(_roundtrip(redacted))
    assert restored == {"model": "m"}
    assert [m.field for m in missing] == ["extra_body"]


def test_restore_does_not_modify_its_input() -> None:
    redacted = _roundtrip(redact_llm_config(_agent_llm_config()))
    before = copy.deepcopy(redacted)
    restore_llm_config(redacted, environ=FAKE_ENV)
    assert redacted == before
