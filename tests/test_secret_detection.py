"""Secret detection (issue 17): the name rule and the value shapes of ``redaction``'s docstring.

Every secret case is tried in each place a config can hold it: a ``config_list`` entry field, a top-level
option, a ``default_headers`` entry, a nested dict and a dict inside a list (value shapes also as a bare list
item). Each must leave no trace in the JSON written, become a marker and come back through ``secrets=``.
Fake keys are assembled at run time so that no key-shaped literal sits in the source.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from autogen import ConversableAgent, GroupChat
from autogen.llm_config.config import _LLMConfig
from autogen.llm_config.entry import LLMConfigEntry
from restore_support import files_containing
from scenarios import plain_agent

from checkpoint_system import (
    CheckpointingGroupChatManager,
    CheckpointManager,
    CheckpointRestorer,
    RestoreWarning,
    read_checkpoint_file,
)
from checkpoint_system.redaction import (
    REDACTED_KEY,
    build_llm_config,
    find_secrets,
    is_secret_name,
    redact_llm_config,
    restore_llm_config,
)
from checkpoint_system.testing import CLIENT_CLASS_NAME, DeterministicModelClient

# -- fake credentials, built from parts ---------------------------------------------------------------------

OPENAI_STYLE = "sk-" + "proj-" + "Q7x" * 12
ANTHROPIC_STYLE = "sk-" + "ant-api03-" + "Zz9" * 10
AWS_STYLE = "AK" + "IA" + "QX7Z2M4K9B1C3D5E"
GITHUB_STYLE = "gh" + "p_" + "A1b2" * 9
GITHUB_PAT_STYLE = "github_" + "pat_" + "11AB" * 6 + "_cd" * 4
SLACK_STYLE = "xo" + "xb-" + "1234567890-" + "abcDEF" * 3
GOOGLE_STYLE = "AI" + "za" + "Sy" + "B3" * 16 + "x"
HF_STYLE = "h" + "f_" + "Kq8" * 11
JWT_STYLE = "ey" + "JhbGciOiJIUzI1NiJ9." + "ey" + "JzdWIiOiJ0ZXN0In0." + "c2lnbmF0dXJl"
PEM_KEY = "-----BEGIN " + "PRIVATE KEY-----\nTUlJRXZRSUJBREFOQmdrcWhraUc5dzBC\n-----END PRIVATE KEY-----\n"
PEM_CERT = "-----BEGIN " + "CERTIFICATE-----\nTUlJQ2xqQ0NBWDRDQ1FE\n-----END CERTIFICATE-----"


def _named(name: str, index: int) -> tuple[str, str, str]:
    value = f"n{index:02d}-{name[:6]}-SECRET-v4lue"
    return name, value, value


#: Secret key names (with a plain value: only the name can give them away). Case and separator variants.
SECRET_NAMES = [
    "apiKey",
    "API-KEY",
    "x-api-key",
    "ApiKey",
    "apikey",
    "key",
    "keys",
    "signing_key",
    "license_key",
    "private_key",
    "SECRET_KEY",
    "accountKey",
    "client_secret",
    "clientSecret",
    "secret",
    "WEBHOOK-SECRET",
    "accessToken",
    "ACCESS_TOKEN",
    "access-token",
    "Access.Token",
    "refresh_token",
    "token",
    "authtoken",
    "id_token",
    "access_tokens",
    "password",
    "Password",
    "db_password",
    "passwd",
    "pwd",
    "PWD",
    "passphrase",
    "keyPassphrase",
    "db_pass",
    "credential",
    "Credentials",
    "service_account_credentials",
    "creds",
    "auth",
    "authorization",
    "Authentication",
    "oauth",
    "OAuth2",
    "proxy_auth",
    "basicAuth",
    "signature",
    "sig",
    "request_signature",
    "cookie",
    "Cookies",
    "session_cookie",
    "dsn",
    "SENTRY_DSN",
    "connection_string",
    "connectionString",
    "conn_str",
    "ConnectionString",
    "CONNSTR",
]

#: (key, value, the secret part that must not be written): secrets given away by the value's shape alone.
SECRET_VALUES = [
    ("endpoint", "https://user:Pa55-SECRET-w0rd@db.example.com:5432/app", "Pa55-SECRET-w0rd"),
    ("backend", "postgresql://admin:hunter2-SECRET@localhost/db", "hunter2-SECRET"),
    (
        "storage",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=QWNjb3VudEtleS1TRUNSRVQ=;"
        "EndpointSuffix=core.windows.net",
        "QWNjb3VudEtleS1TRUNSRVQ=",
    ),
    (
        "bus",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=U2FzLVNFQ1JFVA==",
        "U2FzLVNFQ1JFVA==",
    ),
    (
        "blob",
        "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&sig=c2lnLVNFQ1JFVA",
        "c2lnLVNFQ1JFVA",
    ),
    ("database", "Server=tcp:db;Database=app;User ID=u;Password=Pw-SECRET-1;", "Pw-SECRET-1"),
    ("odbc", "server=db;uid=u;PWD=Pw-SECRET-2", "Pw-SECRET-2"),
    ("login", "password=Pw-SECRET-3", "Pw-SECRET-3"),
    ("header_value", "Bearer tok-SECRET-abc123", "tok-SECRET-abc123"),
    ("upstream", "bearer " + JWT_STYLE, JWT_STYLE),
    ("proxy_header", "Basic dXNlcjpTRUNSRVQtcGFzcw==", "dXNlcjpTRUNSRVQtcGFzcw=="),
    ("tls", PEM_KEY, "TUlJRXZRSUJBREFOQmdrcWhraUc5dzBC"),
    ("ca_bundle", PEM_CERT, "TUlJQ2xqQ0NBWDRDQ1FE"),
    ("vendor", OPENAI_STYLE, OPENAI_STYLE),
    ("fallback", ANTHROPIC_STYLE, ANTHROPIC_STYLE),
    ("aws", AWS_STYLE, AWS_STYLE),
    ("repo", GITHUB_STYLE, GITHUB_STYLE),
    ("repo_pat", GITHUB_PAT_STYLE, GITHUB_PAT_STYLE),
    ("slack", SLACK_STYLE, SLACK_STYLE),
    ("maps", GOOGLE_STYLE, GOOGLE_STYLE),
    ("hub", HF_STYLE, HF_STYLE),
    ("claims", JWT_STYLE, JWT_STYLE),
    ("search_url", "https://www.googleapis.com/customsearch/v1?cx=1&key=" + GOOGLE_STYLE, GOOGLE_STYLE),
    ("sas_url", "https://a.blob.core.windows.net/c/f?sv=2022-11-02&sp=r&sig=c2lnLVNFQ1JFVA%3D", "c2lnLVNF"),
    ("callback", "https://app.example.com/cb#access_token=tok-SECRET-frag&state=1", "tok-SECRET-frag"),
    ("note", "use " + OPENAI_STYLE + " for the fallback", OPENAI_STYLE),
]

CASES = [_named(name, i) for i, name in enumerate(SECRET_NAMES)] + SECRET_VALUES
CASE_IDS = [f"name:{name}" for name in SECRET_NAMES] + [f"value:{key}" for key, _, _ in SECRET_VALUES]


def _in_entry(key: str, value: Any) -> tuple[dict[str, Any], list[Any], str]:
    return {"config_list": [{"model": "m", key: value}]}, ["config_list", 0, key], key


def _top_level(key: str, value: Any) -> tuple[dict[str, Any], list[Any], str]:
    return {"config_list": [{"model": "m"}], "temperature": 0.2, key: value}, [key], key


def _in_headers(key: str, value: Any) -> tuple[dict[str, Any], list[Any], str]:
    entry = {"model": "m", "default_headers": {"X-Trace": "on", key: value}}
    return {"config_list": [entry]}, ["config_list", 0, "default_headers", key], f"default_headers.{key}"


def _nested(key: str, value: Any) -> tuple[dict[str, Any], list[Any], str]:
    entry = {"model": "m", "extra_body": {"vendor": {"region": "eu", "options": {key: value}}}}
    location = ["config_list", 0, "extra_body", "vendor", "options", key]
    return {"config_list": [entry]}, location, f"extra_body.vendor.options.{key}"


def _in_list(key: str, value: Any) -> tuple[dict[str, Any], list[Any], str]:
    entry = {"model": "m", "extra_body": {"plugins": [{"name": "search"}, {"name": "db", key: value}]}}
    location = ["config_list", 0, "extra_body", "plugins", 1, key]
    return {"config_list": [entry]}, location, f"extra_body.plugins.1.{key}"


def _list_item(key: str, value: Any) -> tuple[dict[str, Any], list[Any], str]:
    entry = {"model": "m", "extra_body": {key: ["plain", value]}}
    return {"config_list": [entry]}, ["config_list", 0, "extra_body", key, 1], f"extra_body.{key}.1"


Placement = Callable[[str, Any], tuple[dict[str, Any], list[Any], str]]
PLACEMENTS: dict[str, Placement] = {
    "entry": _in_entry,
    "top_level": _top_level,
    "headers": _in_headers,
    "nested": _nested,
    "list": _in_list,
}


def _at(data: Any, location: list[Any]) -> Any:
    for step in location:
        data = data[step]
    return data


def _check_redacted(config: dict[str, Any], location: list[Any], path: str, secrets: list[str]) -> None:
    original = copy.deepcopy(config)
    redacted = redact_llm_config(config)
    blob = orjson.dumps(redacted)
    for secret in secrets:
        assert secret.encode() not in blob, secret
    assert _at(redacted, location) == {REDACTED_KEY: path, "restore_from": "user"}
    found = find_secrets(config)
    assert secrets[0] in found  # the value removed, as it was
    for secret in secrets:
        assert any(secret in item for item in found), secret
    restored = restore_llm_config(orjson.loads(blob), secrets={path: _at(original, location)})
    assert restored == original
    assert config == original  # redaction never touches the live config


@pytest.mark.parametrize("place", list(PLACEMENTS))
@pytest.mark.parametrize(("key", "value", "secret"), CASES, ids=CASE_IDS)
def test_secret_is_redacted_everywhere(place: str, key: str, value: str, secret: str) -> None:
    config, location, path = PLACEMENTS[place](key, value)
    _check_redacted(config, location, path, [value, secret])


@pytest.mark.parametrize(("key", "value", "secret"), SECRET_VALUES, ids=[c[0] for c in SECRET_VALUES])
def test_secret_value_is_redacted_as_a_list_item(key: str, value: str, secret: str) -> None:
    config, location, path = _list_item(key, value)
    _check_redacted(config, location, path, [value, secret])


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


def test_a_secret_used_as_a_dict_key_takes_the_dict_with_it() -> None:
    config = {"model": "m", "extra_body": {"key_map": {OPENAI_STYLE: "gpt-4o"}}}
    redacted = redact_llm_config(config)
    assert OPENAI_STYLE.encode() not in orjson.dumps(redacted)
    assert isinstance(redacted, dict)
    assert redacted["extra_body"]["key_map"] == {REDACTED_KEY: "extra_body.key_map", "restore_from": "user"}
    assert OPENAI_STYLE in find_secrets(config)
    restored = restore_llm_config(redacted, secrets={"extra_body.key_map": {OPENAI_STYLE: "gpt-4o"}})
    assert restored == config
    in_list = {"model": "m", "extra_body": {"maps": [{"a": 1}, {OPENAI_STYLE: "gpt-4o"}]}}
    redacted = redact_llm_config(in_list)
    assert isinstance(redacted, dict)
    assert redacted["extra_body"]["maps"][1] == {REDACTED_KEY: "extra_body.maps.1", "restore_from": "user"}
    assert restore_llm_config(redacted, secrets={"extra_body.maps.1": {OPENAI_STYLE: "gpt-4o"}}) == in_list


# -- look-alikes that are not secrets ----------------------------------------------------------------------

#: (key, value): kept as they are, wherever they stand (headers aside: see below).
LOOK_ALIKES = [
    ("max_tokens", 512),
    ("max_completion_tokens", 256),
    ("num_tokens", 10),
    ("token_count", 42),
    ("token_limit", 4096),
    ("max_token", 100),
    ("budget_tokens", 1024),
    ("completion_tokens", 7),
    ("author", "Ada Lovelace"),
    ("authors", ["Ada", "Grace"]),
    ("authority", "https://login.microsoftonline.com/tenant-id"),
    ("keywords", ["token", "secret", "key"]),
    ("monkey", "banana"),
    ("key_prefix", "ag2:cache"),
    ("key_file_path", "./keys"),
    ("api_key_file", "openai_key.txt"),
    ("token_type", "bearer"),
    ("session_id", "conversation-17"),
    ("model", "gpt-4o-mini"),
    ("base_url", "https://example.openai.azure.com/openai?api-version=2024-02-01"),
    ("api_version", "2024-02-01"),
    ("api_type", "azure"),
    ("azure_endpoint", "https://example.openai.azure.com"),
    ("azure_deployment", "gpt-4o"),
    ("reasoning_effort", "high"),
    ("tokenizer", "cl100k_base"),
    ("use_auth", True),
    ("password", None),
    ("api_token", ""),
    ("description", "Basic arithmetic helper"),
    ("summary", "Basic calculator"),
    ("hint", "Bearer tokens expire hourly"),
    ("task", "task-abcdefghijklmnopqrstuvwxyz0123"),
    ("params", "a=1;b=2;mode=fast"),
    ("proxy", "http://proxy.local:8080"),
]


@pytest.mark.parametrize("place", ["entry", "top_level", "nested", "list"])
@pytest.mark.parametrize(("key", "value"), LOOK_ALIKES, ids=[k for k, _ in LOOK_ALIKES])
def test_look_alikes_round_trip_unchanged(place: str, key: str, value: Any) -> None:
    config, location, _ = PLACEMENTS[place](key, value)
    redacted = redact_llm_config(copy.deepcopy(config))
    assert redacted == config
    assert _at(redacted, location) == value
    assert find_secrets(config) == []
    assert restore_llm_config(orjson.loads(orjson.dumps(redacted))) == config


@pytest.mark.parametrize(
    "header",
    [
        "X-Trace",
        "Content-Type",
        "User-Agent",
        "Accept",
        "X-Request-Id",
        "OpenAI-Organization",
        "anthropic-beta",
    ],
)
def test_plain_headers_are_kept(header: str) -> None:
    config = {"config_list": [{"model": "m", "default_headers": {header: "value-1"}}]}
    assert redact_llm_config(config) == config


def test_default_token_provider_string_is_kept_in_any_spelling() -> None:
    entry = {"api_type": "azure", "model": "gpt-4", "azure_ad_token_provider": "DEFAULT"}
    assert redact_llm_config(entry) == entry


def test_tool_and_response_schemas_with_secret_looking_field_names_round_trip() -> None:
    def param(kind: str) -> dict[str, Any]:
        return {"type": kind, "description": f"the {kind} argument"}

    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Find an entry by key.",
            "parameters": {
                "type": "object",
                "properties": {"key": param("string"), "token": param("string"), "password": param("string")},
                "required": ["key", "token"],
            },
        },
    }
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "Answer",
            "schema": {
                "type": "object",
                "properties": {"api_key": {"$ref": "#/$defs/ApiKey"}},
                "$defs": {"ApiKey": {"type": "object", "properties": {"secret": param("string")}}},
            },
        },
    }
    config = {"config_list": [{"model": "m"}], "tools": [tool], "response_format": response_format}
    assert redact_llm_config(copy.deepcopy(config)) == config
    # A dict that is not a schema under ``properties`` is still judged by its name.
    leaky = {"model": "m", "extra_body": {"properties": {"token": {"value": "tok-SECRET-x"}}}}
    assert b"tok-SECRET-x" not in orjson.dumps(redact_llm_config(leaky))


def _entry_fields_of_ag2() -> set[str]:
    def subclasses(cls: type) -> list[type]:
        found = []
        for sub in cls.__subclasses__():
            found += [sub, *subclasses(sub)]
        return found

    import autogen.oai  # noqa: F401  (registers the entry classes)

    names = set(_LLMConfig.model_fields)
    for cls in subclasses(LLMConfigEntry):
        names |= set(cls.model_fields)
    return names


KNOWN_SECRET_FIELDS = {
    "api_key",
    "aws_access_key",
    "aws_secret_key",
    "aws_session_token",
    "azure_ad_token_provider",
    "credentials",
    "gcp_auth_token",
    "google_application_credentials",
    "http_client",
}


def test_no_real_ag2_config_field_is_mistaken_for_a_secret() -> None:
    fields = _entry_fields_of_ag2()
    assert {"model", "max_tokens", "tools", "api_type", "base_url"} <= fields
    assert {name for name in fields if is_secret_name(name)} == KNOWN_SECRET_FIELDS & fields


# -- end to end: a saved session holds none of them -------------------------------------------------------

E2E_SECRETS = {
    "passphrase": "pp-SECRET-e2e-1",
    "signing_key": "sk-SECRET-e2e-2",
    "license_key": "lk-SECRET-e2e-3",
    "dsn": "https://pub:dsn-SECRET-e2e-4@sentry.example.com/1",
    "connection_string": "Endpoint=sb://ns/;SharedAccessKeyName=R;SharedAccessKey=cs-SECRET-e2e-5",
    "signature": "sig-SECRET-e2e-6",
    "accessToken": "at-SECRET-e2e-7",
}
E2E_HEADERS = {"authorization": "Bearer hdr-SECRET-e2e-8", "Cookie": "session=ck-SECRET-e2e-9"}
E2E_NESTED = {"vendor": {"pwd": "pw-SECRET-e2e-10"}, "mirrors": ["https://u:mir-SECRET-e2e-11@mirror.local"]}


def _solver_config() -> dict[str, Any]:
    entry = {
        "model": "solver",
        "model_client_cls": CLIENT_CLASS_NAME,
        **E2E_SECRETS,
        "default_headers": {**E2E_HEADERS, "X-Trace": "on"},
        "extra_body": {**E2E_NESTED, "top_k": 3},
    }
    return {"config_list": [entry], "cache_seed": None, "temperature": 0.0}


def _every_secret() -> list[str]:
    values = [*E2E_SECRETS.values(), *E2E_HEADERS.values(), OPENAI_STYLE, "oa-SECRET-e2e-12"]
    return [*values, "hdr-SECRET-e2e-8", "ck-SECRET-e2e-9", "pw-SECRET-e2e-10", "mir-SECRET-e2e-11"]


def test_saved_session_holds_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    user = plain_agent("user", "user: thanks")
    solver = ConversableAgent("solver", llm_config=_solver_config(), human_input_mode="NEVER")
    solver.register_model_client(DeterministicModelClient)
    # Never gets a turn (max_round=2): its OpenAI client is built but never called.
    gpt_config = {
        "config_list": [
            {"model": "gpt-4o-mini", "api_key": OPENAI_STYLE, "refresh_token": "oa-SECRET-e2e-12"}
        ],
        "cache_seed": None,
    }
    gpt = ConversableAgent("gpt", llm_config=copy.deepcopy(gpt_config), human_input_mode="NEVER")
    groupchat = GroupChat(
        agents=[user, solver, gpt], messages=[], max_round=2, speaker_selection_method="round_robin"
    )
    session = tmp_path / "session"
    manager = CheckpointingGroupChatManager(
        checkpoint_manager=CheckpointManager(session),
        groupchat=groupchat,
        name="chat_manager",
        llm_config=False,
    )
    user.initiate_chat(manager, message="What is 6 * 7?")
    assert len(groupchat.messages) == 2
    files = [p for p in session.rglob("*") if p.is_file()]
    assert files
    for secret in _every_secret():
        assert files_containing(session, secret.encode()) == [], secret

    cm = manager.checkpoint_manager
    path = cm.checkpoint_path(cm.list_checkpoints()[-1])
    saved = read_checkpoint_file(path).agent_states["solver"].llm_config
    entry = saved["config_list"][0]
    for field in E2E_SECRETS:
        assert entry[field] == {REDACTED_KEY: field, "restore_from": "user"}
    assert entry["default_headers"]["X-Trace"] == "on"
    assert entry["extra_body"]["top_k"] == 3

    # The values come back through ``secrets=``, and the restored session writes none of them either.
    secrets: dict[str, Any] = dict(E2E_SECRETS)
    secrets |= {f"default_headers.{k}": v for k, v in E2E_HEADERS.items()}
    secrets |= {"extra_body.vendor.pwd": "pw-SECRET-e2e-10", "extra_body.mirrors.0": E2E_NESTED["mirrors"][0]}
    secrets |= {"refresh_token": "oa-SECRET-e2e-12"}
    restorer = CheckpointRestorer(
        environ={"OPENAI_API_KEY": OPENAI_STYLE},
        secrets=secrets,
        model_clients={CLIENT_CLASS_NAME: DeterministicModelClient},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RestoreWarning)
        restored = restorer.restore(path)
    assert restored.groupchat.messages == groupchat.messages
    by_name = {agent.name: agent for agent in restored.agents}
    assert by_name["solver"].llm_config == solver.llm_config
    assert build_llm_config(restore_llm_config(saved, secrets=secrets)) == solver.llm_config
    for secret in _every_secret():
        assert files_containing(session, secret.encode()) == [], secret
