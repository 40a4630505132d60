"""Keep LLM configs in checkpoints without ever writing a secret to disk.

``redact_llm_config`` turns an AG2 ``llm_config`` (an ``LLMConfig``, a dict with or without ``config_list``,
the old flat one-entry dict, ``False`` or ``None``) into plain JSON data. Every non-secret field of every
``config_list`` entry and every top-level option is kept; each secret is replaced by a marker that says where
``restore_llm_config`` will take it from::

    {"$redacted": "api_key", "restore_from": "env:OPENAI_API_KEY"}
    {"$redacted": "azure_ad_token_provider", "restore_from": "user"}

``"$redacted"`` holds the field's path inside its entry (``"default_headers.Authorization"`` for a nested
key). ``restore_from`` is ``"user"`` (the caller must pass the value) or ``"env:NAME"`` / ``"env:A|B"``
(environment variables tried in order; chosen by ``api_type``, see ``env_names_for``; entries with a custom
``model_client_cls`` and nested paths always get ``"user"``). Values that have no JSON form and are not
secrets (a callable, a client object, a pydantic class) become
``{"$unserializable": "<module.QualName>", "restore_from": "user"}``.

What counts as a secret -- one rule, for key names at any depth and for string values anywhere.

**Names.** Every key is checked: ``config_list`` entries, top-level options, nested dicts and the dicts
inside lists, at any depth. A name is read as lower-case words, cut at ``_``, ``-``, ``.``, spaces and other
punctuation, where lower case turns to upper case (``accessToken``, ``APIKey``) and where letters turn to
digits: ``accessToken``, ``ACCESS_TOKEN``, ``access-token`` and ``Access.Token`` all read ``access token``.
A name is a secret when its words show one of:

* a known field: ``api_key``, ``azure_ad_token``, ``azure_ad_token_provider`` (except the string
  ``"DEFAULT"``, which asks AG2 for Azure's default credential), ``aws_access_key``, ``aws_secret_key``,
  ``aws_session_token``, ``http_client``, ``credentials``, ``google_application_credentials``,
  ``gcp_auth_token``, ``webhook_secret``, ``admin_api_key``, ``workload_identity``;
* **key** as the last word (``key``, ``api_key``, ``apiKey``, ``x-api-key``, ``signing_key``,
  ``license_key``, ``private_key``, ``keys``), or a last word run together from a credential stem and
  ``key(s)``: ``apikey``, ``secretkey``, ``accesskey``, ``privatekey``, ``accountkey`` ... (``_KEY_STEMS``);
* **token** as the last word (``token``, ``refresh_token``, ``accessToken``), or run together from a
  credential stem (``authtoken``, ``accesstoken``: ``_TOKEN_STEMS``), except token *limits* whose first
  word is ``max``, ``min``, ``num``, ``n``, ``total`` or ``count`` (``max_token``). The plural ``tokens``
  is a count (``max_tokens``, ``completion_tokens``, ``budget_tokens``) unless a credential stem comes
  before it (``access_tokens``, ``api_tokens``);
* **secret**: a word ``secret(s)`` or ending in it (``client_secret``, ``clientsecret``);
* **password**: a word ``password(s)``, ``passwd``, ``pwd``, ``passphrase(s)``, ``passcode`` or ending in one
  of them (``dbpassword``), or ``pass`` as the last word (``db_pass``);
* **credential**: a word containing ``credential`` (``credentials``, ``gcp_credentials``) or ``cred(s)``;
* **auth**: a word ``auth``, ``authn``, ``authz``, one ending in ``auth`` (``oauth``, ``basicauth``) or
  starting with ``authoriz``/``authoris``/``authentic`` (``authorization``, ``authentication``); not
  ``author``, ``authors`` or ``authority``;
* **signature**: a word ``signature(s)``, ``sig(s)`` or ending in ``signature``;
* **cookie**: a word containing ``cookie`` (``cookie``, ``cookies``, ``cookiejar``);
* **dsn**: a word ``dsn`` or ending in it (``sentry_dsn``, ``dsn``);
* **connection string**: ``connection``/``conn`` followed by ``string``/``str`` (``connection_string``,
  ``connectionString``, ``conn_str``) or the run-together ``connectionstring``/``connstring``/``connstr``.

Inside a ``*headers`` dict (``default_headers``, ``extra_headers``...) a header is also a secret when its
lower-cased name contains ``auth``, ``key``, ``token``, ``secret``, ``cookie``, ``pass``, ``pwd``,
``credential``, ``session``, ``signature`` or ``dsn``, or has a word ``sig``, ``csrf`` or ``xsrf``
(``Proxy-Authorization``, ``X-API-Key``, ``Cookie``, ``X-Session-Id``, ``X-CSRF-Token``).

**Values.** Whatever its key, a string (at any depth, list items included) is a secret when it

* is a URL with a password (``https://user:pw@host``), or with a query or fragment parameter whose name is a
  secret by the name rule (``?key=...``, ``&sig=...``, ``#access_token=...``);
* is a ``;``-separated connection string with a ``Name=value`` part whose name is a secret by the name rule
  (``AccountKey=``, ``SharedAccessKey=``, ``SharedAccessSignature=``, ``Password=``, ``Pwd=``, in any case;
  ``SharedAccessKeyName=`` is not), or a single such ``Name=value`` without spaces (``Password=x``);
* is an HTTP credential: ``Bearer <one word>``, or ``Basic <base64 of user:password>``;
* holds a PEM block (``-----BEGIN ...-----``): private keys, and certificates too;
* holds, at the start of a word, a well-known key: a prefix followed by at least 20 key characters --
  ``sk-`` (OpenAI, ``sk-proj-``, Anthropic's ``sk-ant-``), ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``/
  ``github_pat_`` (GitHub), ``glpat-`` (GitLab), ``ya29.`` (Google OAuth), ``gsk_`` (Groq),
  ``sk_live_``/``rk_live_`` (Stripe), ``GOCSPX-`` (Google OAuth client) --; ``hf_`` (Hugging Face) or
  ``npm_`` and 30; ``xoxa-``/``xoxb-``/``xoxe-``/``xoxo-``/``xoxp-``/``xoxr-``/``xoxs-`` (Slack) and 10;
  ``AIza`` and 35 (Google); ``AKIA``/``ASIA`` and 16 upper-case letters or digits (AWS); or a JWT
  (``eyJ...`` ``.`` ``eyJ...``).

Such a value is replaced whole, with ``restore_from: "user"`` (or its key's ``env:`` convention). A dict
with a key of one of these shapes is replaced whole; a ``pydantic.SecretStr``/``SecretBytes`` is a secret
whatever its key. Every check is linear in the length of the name or value: string methods, and regexes
without nested or overlapping repetition.

**Not secrets.** ``None``, empty strings and booleans, whatever the key (``use_token: True``); and these
look-alikes, kept on purpose: token counts and limits (``max_tokens``, ``max_completion_tokens``,
``max_token``, ``num_tokens``, ``token_count``, ``token_limit``), other names where ``key``/``token`` is
not the last word (``key_prefix``, ``key_file_path``, ``api_key_file``, ``token_type``, ``token_url``:
names and paths, not the secret), words merely containing ``key`` (``keywords``, ``monkey``), ``author``,
``authority``, ``session_id`` outside headers, and JSON-schema property definitions: under
``properties``, ``patternProperties``, ``$defs`` or ``definitions``, a dict made only of JSON Schema
keywords describes a field (a tool parameter named ``token``, a response model ``ApiKey``) and is not a
secret by its name (its strings are still checked). Over-matching is accepted where it is harmless:
``public_key``, ``primary_key``, ``auth_type`` or a certificate are redacted too. No field of AG2's
``LLMConfigEntry`` classes matches besides the known secret fields.

Fidelity: entries are dumped field by field; a ``None`` field is left out only when the field's default
is ``None`` (so rebuilding yields the same value), other ``None`` values and extra fields are kept.
Plain dicts keep the shape they were given. Rebuilding an ``LLMConfig`` from a restored dict therefore
gives a config equal (``==``) to the original.
"""

from __future__ import annotations

import base64
import enum
import itertools
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus, urlsplit

from pydantic import AnyUrl, BaseModel, SecretBytes, SecretStr

from .errors import InvalidCheckpointError
from .jsonable import UNSERIALIZABLE_KEY, unserializable_marker

__all__ = [
    "REDACTED_KEY",
    "RESTORE_FROM_KEY",
    "RESTORE_FROM_USER",
    "TOP_LEVEL",
    "UNSERIALIZABLE_KEY",
    "MissingSecret",
    "build_llm_config",
    "describe_missing",
    "env_names_for",
    "find_secrets",
    "is_secret_name",
    "redact_llm_config",
    "restore_from_for",
    "restore_llm_config",
    "restore_llm_config_report",
]

#: Key of the marker that replaces a secret; its value is the field's path inside its entry.
REDACTED_KEY = "$redacted"
#: Key of a marker saying where restore takes the value from.
RESTORE_FROM_KEY = "restore_from"
#: ``restore_from`` value meaning "the caller must supply it" (no environment convention).
RESTORE_FROM_USER = "user"
#: ``MissingSecret.entry_index`` of a top-level option (outside ``config_list``).
TOP_LEVEL = -1

_ENV_PREFIX = "env:"
_MAX_DEPTH = 100
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
_RESTORE_FROM_RE = re.compile(rf"env:{_ENV_NAME}(?:\|{_ENV_NAME}){{0,7}}")
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1

_OPENAI = ("OPENAI_API_KEY",)
_GOOGLE = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
_API_KEY_ENV: dict[str, tuple[str, ...]] = {
    "openai": _OPENAI,
    "responses": _OPENAI,
    "openai_v2": _OPENAI,
    "responses_v2": _OPENAI,
    "azure": ("AZURE_OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "anthropic_v2": ("ANTHROPIC_API_KEY",),
    "google": _GOOGLE,
    "google_vertex": _GOOGLE,
    "gemini": _GOOGLE,
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "together": ("TOGETHER_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
    "cerebras": ("CEREBRAS_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
}
_AWS_ENV = {
    "aws_access_key": ("AWS_ACCESS_KEY_ID",),
    "aws_secret_key": ("AWS_SECRET_ACCESS_KEY",),
    "aws_session_token": ("AWS_SESSION_TOKEN",),
}
_FIELD_ENV: dict[tuple[str, str], tuple[str, ...]] = {
    ("azure", "azure_ad_token"): ("AZURE_OPENAI_AD_TOKEN",),
    **{("bedrock", field): names for field, names in _AWS_ENV.items()},
    **{("bedrock_v2", field): names for field, names in _AWS_ENV.items()},
}
_ANY_API_FIELD_ENV: dict[str, tuple[str, ...]] = {
    "google_application_credentials": ("GOOGLE_APPLICATION_CREDENTIALS",),
}

# ------------------------------------------------------------------------------------- the secret rule

#: Known secret fields, as their words (see ``_words``).
_SECRET_FIELDS = frozenset(
    {
        "api key",
        "azure ad token",
        "azure ad token provider",
        "aws access key",
        "aws secret key",
        "aws session token",
        "http client",
        "credentials",
        "google application credentials",
        "gcp auth token",
        "webhook secret",
        "admin api key",
        "workload identity",
    }
)
#: Stems that, run together with ``key``/``token`` in one word, name a credential (``apikey``, ``authtoken``).
_KEY_STEMS = frozenset(
    {
        "access",
        "account",
        "admin",
        "api",
        "app",
        "auth",
        "client",
        "encryption",
        "hmac",
        "license",
        "master",
        "private",
        "secret",
        "service",
        "session",
        "shared",
        "sharedaccess",
        "signing",
        "ssh",
        "subscription",
        "webhook",
    }
)
_TOKEN_STEMS = frozenset(
    {
        "access",
        "api",
        "app",
        "auth",
        "bearer",
        "bot",
        "client",
        "csrf",
        "github",
        "id",
        "jwt",
        "oauth",
        "personal",
        "refresh",
        "sas",
        "security",
        "service",
        "session",
        "slack",
        "xsrf",
    }
)
#: A first word that makes ``..._token`` a token limit, not a token.
_COUNT_WORDS = frozenset({"max", "min", "num", "n", "total", "count"})
_PASSWORD_WORDS = ("password", "passwords", "passwd", "pwd", "passphrase", "passphrases", "passcode")
_SIGNATURE_WORDS = frozenset({"signature", "signatures", "sig", "sigs"})
_CONNECTION_WORDS = frozenset({"connectionstring", "connectionstrings", "connstring", "connstr"})
_AUTH_HEADER_PARTS = (
    "auth",
    "key",
    "token",
    "secret",
    "cookie",
    "pass",
    "pwd",
    "credential",
    "session",
    "signature",
    "dsn",
)
_AUTH_HEADER_WORDS = frozenset({"sig", "csrf", "xsrf"})
#: Keys whose dict maps JSON-schema field names to schemas (``tools`` parameters, ``response_format``).
_SCHEMA_NAME_KEYS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_SCHEMA_KEYWORDS = frozenset(
    {
        "$anchor",
        "$comment",
        "$id",
        "$ref",
        "$schema",
        "additionalItems",
        "additionalProperties",
        "allOf",
        "anyOf",
        "const",
        "contains",
        "contentEncoding",
        "contentMediaType",
        "default",
        "definitions",
        "$defs",
        "dependentRequired",
        "dependentSchemas",
        "deprecated",
        "description",
        "discriminator",
        "else",
        "enum",
        "example",
        "examples",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "format",
        "if",
        "items",
        "maxItems",
        "maxLength",
        "maxProperties",
        "maximum",
        "minItems",
        "minLength",
        "minProperties",
        "minimum",
        "multipleOf",
        "not",
        "nullable",
        "oneOf",
        "pattern",
        "patternProperties",
        "prefixItems",
        "properties",
        "propertyNames",
        "readOnly",
        "required",
        "then",
        "title",
        "type",
        "uniqueItems",
        "writeOnly",
    }
)

# One word: an upper-case run not followed by lower case (``API`` in ``APIKey``), a capitalised or lower-case
# run, or digits. Each alternative is a single repetition: linear.
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _words(name: str) -> tuple[str, ...]:
    """``name`` as lower-case words: ``accessToken``, ``ACCESS_TOKEN``, ``Access.Token`` -> access, token."""
    return tuple(match.group().lower() for match in _WORD_RE.finditer(name))


def _is_compound(word: str, base: str, stems: frozenset[str]) -> bool:
    """``word`` is ``base`` or ``<stem><base>`` for a known stem (``apikey``; never ``monkey``)."""
    return word == base or (word.endswith(base) and word[: -len(base)] in stems)


def _is_auth_word(word: str) -> bool:
    return (
        word in ("auth", "authn", "authz")
        or word.endswith("auth")
        or word.startswith(("authoriz", "authoris", "authentic"))
    )


def _secret_word(word: str) -> bool:
    """A word that names a secret wherever it stands in a name."""
    return (
        word.endswith(("secret", "secrets"))
        or word.endswith(_PASSWORD_WORDS)
        or "credential" in word
        or word in ("cred", "creds")
        or _is_auth_word(word)
        or word in _SIGNATURE_WORDS
        or word.endswith("signature")
        or "cookie" in word
        or word.endswith("dsn")
        or word in _CONNECTION_WORDS
    )


def _names_secret(words: tuple[str, ...]) -> bool:
    if not words:
        return False
    if " ".join(words) in _SECRET_FIELDS or any(_secret_word(word) for word in words):
        return True
    last = words[-1]
    if _is_compound(last, "key", _KEY_STEMS) or _is_compound(last, "keys", _KEY_STEMS) or last == "pass":
        return True
    if _is_compound(last, "token", _TOKEN_STEMS):
        return words[0] not in _COUNT_WORDS  # ``max_token`` is a limit
    if last == "tokens":  # a count (``max_tokens``), unless a credential word comes first (``access_tokens``)
        return len(words) > 1 and words[-2] in _TOKEN_STEMS
    if _is_compound(last, "tokens", _TOKEN_STEMS):
        return True  # ``accesstokens``
    return any(
        first in ("connection", "conn") and second in ("string", "str", "strings")
        for first, second in itertools.pairwise(words)
    )


def is_secret_name(name: str) -> bool:
    """Whether a config key names a secret (see the module docstring for the rule)."""
    return _names_secret(_words(name))


def _is_auth_header(name: str) -> bool:
    if is_secret_name(name):
        return True
    lowered = name.lower()
    return any(part in lowered for part in _AUTH_HEADER_PARTS) or not _AUTH_HEADER_WORDS.isdisjoint(
        _words(name)
    )


def _is_headers_key(name: str) -> bool:
    words = _words(name)
    return bool(words) and words[-1] == "headers"


def _is_schema(value: Any) -> bool:
    """A JSON-schema fragment: a dict whose keys are all JSON Schema keywords."""
    return isinstance(value, Mapping) and all(key in _SCHEMA_KEYWORDS for key in value)


# Well-known key formats, each at the start of a word (the look-behind), each of a bounded length except the
# JWT's first part, whose character class excludes the ``.`` that ends it: linear.
_KEY_FORMAT_RE = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-[A-Za-z0-9_-]{20}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{20}"
    r"|github_pat_[A-Za-z0-9_]{20}"
    r"|glpat-[A-Za-z0-9_-]{20}"
    r"|xox[abeoprs]-[A-Za-z0-9-]{10}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|ya29\.[A-Za-z0-9_-]{20}"
    r"|hf_[A-Za-z0-9]{30}"
    r"|gsk_[A-Za-z0-9]{20}"
    r"|[sr]k_live_[A-Za-z0-9]{20}"
    r"|GOCSPX-[A-Za-z0-9_-]{20}"
    r"|npm_[A-Za-z0-9]{30}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8}"
    r")"
)
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
# ``Bearer <one word>`` / ``Basic <one word>``: \s and \S are disjoint, so one pass.
_AUTH_SCHEME_RE = re.compile(r"\s*(bearer|basic)\s+(\S+)\s*", re.IGNORECASE)
_CONNECTION_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9 ._-]{0,63}")


def _url_secret(value: str) -> str | None:
    """The password, or the value of a secret-named query/fragment parameter, of a URL."""
    if "://" not in value:
        return None
    try:
        parts = urlsplit(value.strip())
        password = parts.password
    except ValueError:
        return None
    if password:
        return password
    for params in (parts.query, parts.fragment):
        for pair in params.split("&"):
            name, sep, item = pair.partition("=")
            if sep and item and is_secret_name(unquote_plus(name)):
                return item  # as written in the value
    return None


def _connection_string_secret(value: str) -> str | None:
    """The value of a secret-named ``Name=value`` part of a ``;``-separated connection string.

    A value without ``;`` counts only as one ``Name=value`` with no space in it (``Password=x``).
    """
    if "=" not in value:
        return None
    if ";" not in value and any(char.isspace() for char in value.strip()):
        return None
    for part in value.split(";"):
        name, sep, item = part.partition("=")
        name, item = name.strip(), item.strip()
        if sep and item and _CONNECTION_NAME_RE.fullmatch(name) and is_secret_name(name):
            return item
    return None


def _auth_scheme_secret(value: str) -> str | None:
    match = _AUTH_SCHEME_RE.fullmatch(value)
    if match is None:
        return None
    scheme, credential = match.group(1).lower(), match.group(2)
    if scheme == "bearer":
        return credential
    try:
        decoded = base64.b64decode(credential, validate=True)
    except ValueError:
        return None
    return credential if b":" in decoded else None


def _pem_secret(value: str) -> str | None:
    start = value.find("-----BEGIN ")
    if start < 0 or value.find("-----", start + 11) < 0:
        return None
    return value


def _value_secret(value: str) -> str | None:
    """The secret a string value carries by its shape (see the module docstring), or ``None``.

    Returns the secret part (a URL's password, a connection string's key, a bearer token...), which may be
    the whole value.
    """
    if not value:
        return None
    match = _KEY_FORMAT_RE.search(value)
    if match is not None:  # the pattern checks a bounded prefix; the key runs to the end of its word
        end = match.end()
        while end < len(value) and value[end] in _KEY_CHARS:
            end += 1
        return value[match.start() : end]
    for check in (_url_secret, _auth_scheme_secret, _pem_secret, _connection_string_secret):
        found = check(value)
        if found:
            return found
    return None


def env_names_for(api_type: str | None, field: str, *, custom_client: bool = False) -> tuple[str, ...]:
    """Environment variables a secret ``field`` of an entry of ``api_type`` is conventionally read from.

    Empty when there is no convention: nested paths, custom ``model_client_cls`` entries, unknown api types.
    """
    if custom_client or "." in field:
        return ()
    if field in _ANY_API_FIELD_ENV:
        return _ANY_API_FIELD_ENV[field]
    api = (api_type or "openai").lower()
    if field == "api_key":
        return _API_KEY_ENV.get(api, ())
    return _FIELD_ENV.get((api, field), ())


def restore_from_for(api_type: str | None, field: str, *, custom_client: bool = False) -> str:
    """The ``restore_from`` value written for a secret ``field`` of an entry of ``api_type``."""
    names = env_names_for(api_type, field, custom_client=custom_client)
    return _ENV_PREFIX + "|".join(names) if names else RESTORE_FROM_USER


@dataclass(frozen=True)
class _Scope:
    """Where a field lives: its entry (``TOP_LEVEL`` for top-level options) and that entry's provider."""

    index: int
    model: str | None
    api_type: str | None
    custom_client: bool


def _scope(index: int, entry: Mapping[str, Any]) -> _Scope:
    api_type = entry.get("api_type")
    model = entry.get("model")
    return _Scope(
        index=index,
        model=model if isinstance(model, str) else None,
        api_type=api_type if isinstance(api_type, str) else None,
        custom_client=entry.get("model_client_cls") is not None,
    )


# --------------------------------------------------------------------------------------------- redaction


class _Redactor:
    """One pass over a config: builds the redacted copy and collects the secret strings it removed."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def collect(self, value: Any, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            return
        if isinstance(value, (SecretStr, SecretBytes)):
            value = value.get_secret_value()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            if value and value not in self.found:
                self.found.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                self.collect(item, depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                self.collect(item, depth + 1)

    def _is_secret(self, key: str, value: Any, in_headers: bool, schema_names: bool) -> bool:
        if value is None or isinstance(value, bool) or (isinstance(value, str) and not value):
            return False
        if isinstance(value, (SecretStr, SecretBytes)):
            return True
        if (
            _words(key) == ("azure", "ad", "token", "provider")
            and isinstance(value, str)
            and value == "DEFAULT"
        ):
            return False
        if schema_names and _is_schema(value):
            return False  # the schema of a field named ``key`` (a tool parameter), not a secret
        return (in_headers and _is_auth_header(key)) or is_secret_name(key)

    def _marker(self, path: str, scope: _Scope) -> dict[str, str]:
        restore = restore_from_for(scope.api_type, path, custom_client=scope.custom_client)
        return {REDACTED_KEY: path, RESTORE_FROM_KEY: restore}

    def field(
        self,
        key: str,
        path: str,
        value: Any,
        scope: _Scope,
        *,
        in_headers: bool,
        depth: int,
        schema_names: bool = False,
    ) -> Any:
        """The redacted form of ``value`` stored under ``key`` at ``path`` (relative to its entry)."""
        if self._is_secret(key, value, in_headers, schema_names):
            self.collect(value)
            return self._marker(path, scope)
        if isinstance(value, str):
            found = _value_secret(value)
            if found is not None:
                self.collect(found)
                self.collect(value)
                return self._marker(path, scope)
            return str(value)
        if isinstance(value, Mapping):
            secret_keys = [k for k in value if isinstance(k, str) and _value_secret(k) is not None]
            if secret_keys:  # a secret used as a key: the whole dict goes
                for secret_key in secret_keys:
                    self.collect(_value_secret(secret_key))
                    self.collect(secret_key)
                self.collect(value)
                return self._marker(path, scope)
        return self.value(key, path, value, scope, depth=depth)

    def value(self, key: str, path: str, value: Any, scope: _Scope, *, depth: int) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value if value is None or type(value) in (bool, str) else str(value)
        if isinstance(value, enum.Enum):
            return self.field(key, path, value.value, scope, in_headers=False, depth=depth + 1)
        if isinstance(value, int):
            return int(value) if _INT64_MIN <= value <= _UINT64_MAX else unserializable_marker(value)
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else repr(value)
        if isinstance(value, AnyUrl):
            return self.field(key, path, str(value), scope, in_headers=False, depth=depth)
        if depth > _MAX_DEPTH:
            return unserializable_marker(value)
        if isinstance(value, BaseModel):
            return self.value(key, path, value.model_dump(), scope, depth=depth + 1)
        if isinstance(value, Mapping):
            return self.mapping(
                value,
                path + ".",
                scope,
                in_headers=_is_headers_key(key),
                depth=depth + 1,
                schema_names=key in _SCHEMA_NAME_KEYS,
            )
        if isinstance(value, (list, tuple)):
            return [
                self.field(key, f"{path}.{i}", item, scope, in_headers=False, depth=depth + 1)
                for i, item in enumerate(value)
            ]
        return unserializable_marker(value)

    def mapping(
        self,
        value: Mapping[Any, Any],
        prefix: str,
        scope: _Scope,
        *,
        in_headers: bool,
        depth: int,
        schema_names: bool = False,
    ) -> dict[str, Any]:
        if not all(isinstance(k, str) for k in value) or REDACTED_KEY in value or UNSERIALIZABLE_KEY in value:
            # Non-string keys have no JSON form; reserved keys would be read back as markers.
            self.collect(value)
            return unserializable_marker(value)
        return {
            k: self.field(
                k, prefix + k, v, scope, in_headers=in_headers, depth=depth, schema_names=schema_names
            )
            for k, v in value.items()
        }

    def entry(self, entry: Any, index: int, app_options: Mapping[str, Any]) -> Any:
        if isinstance(entry, BaseModel):
            entry = _entry_fields(entry, app_options)
        if not isinstance(entry, Mapping):
            self.collect(entry)
            return unserializable_marker(entry)
        return self.mapping(entry, "", _scope(index, entry), in_headers=False, depth=0)

    def config(self, config: Mapping[str, Any], app_options: Mapping[str, Any]) -> dict[str, Any]:
        if "config_list" not in config:
            out = self.entry(config, 0, app_options)
            return out if isinstance(out, dict) else {}
        top = _scope(TOP_LEVEL, config)
        result: dict[str, Any] = {}
        for key, value in config.items():
            if key != "config_list":
                result[str(key)] = self.field(str(key), str(key), value, top, in_headers=False, depth=0)
                continue
            if isinstance(value, (Mapping, BaseModel)):
                result[key] = self.entry(value, 0, app_options)
            elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
                result[key] = [self.entry(item, i, app_options) for i, item in enumerate(value)]
            else:
                result[key] = self.field(key, key, value, top, in_headers=False, depth=0)
        return result


def _field_default(model_cls: type[BaseModel], name: str) -> Any:
    try:
        return model_cls.model_fields[name].get_default(call_default_factory=True)
    except Exception:  # a default factory that needs validated data, or fails
        return object()


def _entry_fields(entry: BaseModel, app_options: Mapping[str, Any]) -> dict[str, Any]:
    """An ``LLMConfigEntry`` as a dict that rebuilds an equal entry.

    ``None`` is left out only for fields whose default is ``None``; it is kept for the application-level
    options (``max_tokens``, ``top_p``, ``temperature``) the config sets, which would otherwise be merged in.
    """
    raw = BaseModel.model_dump(entry, exclude_none=False)
    fields = type(entry).model_fields
    return {
        key: value
        for key, value in raw.items()
        if value is not None
        or key not in fields
        or app_options.get(key) is not None
        or _field_default(type(entry), key) is not None
    }


def _is_llm_config(value: Any) -> bool:
    """Duck-typed ``autogen.LLMConfig`` check (its attribute access forwards to an inner model)."""
    if isinstance(value, (Mapping, BaseModel, list, tuple)):
        return False
    return hasattr(value, "config_list") and callable(getattr(value, "model_dump", None))


def _as_plain_config(llm_config: Any) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """The config as a mapping (entries may still be models) and its application-level options."""
    if _is_llm_config(llm_config):
        top = llm_config.model_dump(exclude={"config_list"})
        entries = list(llm_config.config_list)
        app = {k: top.get(k) for k in ("max_tokens", "top_p", "temperature")}
        return {**top, "config_list": entries}, app
    if isinstance(llm_config, BaseModel):  # a single LLMConfigEntry
        return _entry_fields(llm_config, {}), {}
    if isinstance(llm_config, Mapping):
        return llm_config, {}
    if isinstance(llm_config, (list, tuple)):
        return {"config_list": list(llm_config)}, {}
    raise TypeError(f"unsupported llm_config of type {type(llm_config).__qualname__}")


def redact_llm_config(llm_config: Any) -> dict[str, Any] | Literal[False] | None:
    """A JSON-safe copy of ``llm_config`` with every secret replaced by a marker.

    Accepts an ``LLMConfig``, a single ``LLMConfigEntry``, a dict (with ``config_list``, or the old flat
    one-entry form, kept in the shape given), a list of entries (returned as ``{"config_list": [...]}``),
    ``False`` or ``None`` (returned unchanged). An ``LLMConfig`` becomes
    ``{**top_level_options, "config_list": [...]}``.
    Raises ``TypeError`` for anything else.
    """
    if llm_config is None or llm_config is False:
        return None if llm_config is None else False
    config, app = _as_plain_config(llm_config)
    return _Redactor().config(config, app)


def find_secrets(llm_config: Any) -> list[str]:
    """The secret strings in ``llm_config`` (what redaction removes), without duplicates or empty strings."""
    if llm_config is None or llm_config is False:
        return []
    config, app = _as_plain_config(llm_config)
    redactor = _Redactor()
    redactor.config(config, app)
    return redactor.found


# --------------------------------------------------------------------------------------------- restore


@dataclass(frozen=True)
class MissingSecret:
    """A marker restore could not fill; the field was left out of the restored config.

    ``entry_index`` is the position in ``config_list`` (0 for a flat config, ``TOP_LEVEL`` for a top-level
    option), ``field`` the path inside that entry, ``restore_from`` the marker's source.
    """

    entry_index: int
    model: str | None
    field: str
    restore_from: str
    reason: str = "not found"


def describe_missing(missing: Iterable[MissingSecret]) -> str:
    """A readable multi-line message listing ``missing`` and how to supply each one."""
    lines = []
    for item in missing:
        where = "top level" if item.entry_index == TOP_LEVEL else f"config_list[{item.entry_index}]"
        if item.model:
            where += f" (model {item.model!r})"
        hint = f"pass secrets={{{item.field!r}: ...}}"
        if item.restore_from.startswith(_ENV_PREFIX):
            names = item.restore_from[len(_ENV_PREFIX) :].replace("|", " or ")
            hint = f"set {names} or {hint}"
        lines.append(f"{where}: {item.field}: {item.reason}; {hint}")
    return "\n".join(lines)


def _invalid(message: str) -> InvalidCheckpointError:
    return InvalidCheckpointError(f"invalid llm_config in checkpoint: {message}")


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and (REDACTED_KEY in value or UNSERIALIZABLE_KEY in value)


class _Restorer:
    """One pass over a redacted config: fills markers and records what could not be filled."""

    def __init__(
        self,
        environ: Mapping[str, str],
        secrets: Mapping[str, Any],
        azure_ad_token_provider: Callable[[], str] | None,
    ) -> None:
        self.environ = environ
        self.secrets = secrets
        self.provider = azure_ad_token_provider
        self.missing: list[MissingSecret] = []

    def _location(self, scope: _Scope, path: str) -> str:
        where = "top level" if scope.index == TOP_LEVEL else f"config_list[{scope.index}]"
        return f"{where}.{path}"

    def _check_marker(self, marker: dict[str, Any], path: str, scope: _Scope) -> tuple[str, str]:
        kind = REDACTED_KEY if REDACTED_KEY in marker else UNSERIALIZABLE_KEY
        restore = marker.get(RESTORE_FROM_KEY)
        label = marker.get(kind)
        if (
            set(marker) != {kind, RESTORE_FROM_KEY}
            or not isinstance(restore, str)
            or not isinstance(label, str)
        ):
            raise _invalid(f"malformed marker at {self._location(scope, path)}")
        if kind == REDACTED_KEY and label != path:
            raise _invalid(f"marker at {self._location(scope, path)} names another field ({label[:100]!r})")
        if restore != RESTORE_FROM_USER and not _RESTORE_FROM_RE.fullmatch(restore):
            raise _invalid(f"bad restore_from {restore[:100]!r} at {self._location(scope, path)}")
        return kind, restore

    def _report(self, scope: _Scope, path: str, restore: str, reason: str) -> None:
        self.missing.append(MissingSecret(scope.index, scope.model, path, restore, reason))

    def resolve(self, marker: dict[str, Any], path: str, scope: _Scope) -> tuple[bool, Any]:
        """``(True, value)`` for a filled marker, ``(False, None)`` (and a report) otherwise."""
        kind, restore = self._check_marker(marker, path, scope)
        keys = [path]
        if scope.index != TOP_LEVEL:
            keys[:0] = [f"#{scope.index}.{path}", *([f"{scope.model}.{path}"] if scope.model else [])]
        for key in keys:
            if key in self.secrets:
                return True, self.secrets[key]
        if kind == UNSERIALIZABLE_KEY:
            self._report(scope, path, restore, f"value of type {marker[kind][:200]} was not saved")
            return False, None
        if path == "azure_ad_token_provider" and self.provider is not None:
            return True, self.provider
        if restore == RESTORE_FROM_USER:
            self._report(scope, path, restore, "must be supplied by the caller")
            return False, None
        names = restore[len(_ENV_PREFIX) :].split("|")
        allowed = env_names_for(scope.api_type, path, custom_client=scope.custom_client)
        if not set(names) <= set(allowed):
            # Never read an arbitrary variable named by a (possibly foreign) file into a config.
            self._report(scope, path, restore, "not the conventional variable for this field; not read")
            return False, None
        for name in names:
            value = self.environ.get(name)
            if value:
                return True, value
        self._report(scope, path, restore, "environment variable not set")
        return False, None

    def value(self, value: Any, path: str, scope: _Scope, depth: int) -> Any:
        if isinstance(value, (dict, list)) and depth > _MAX_DEPTH:  # redaction marks deeper containers
            raise _invalid(f"nesting too deep at {self._location(scope, path)}")
        if isinstance(value, dict):
            return self.mapping(value, path + ".", scope, depth + 1)
        if isinstance(value, list):
            out = []
            for i, item in enumerate(value):
                item_path = f"{path}.{i}"
                if _is_marker(item):
                    filled, restored = self.resolve(item, item_path, scope)
                    if filled:
                        out.append(restored)
                else:
                    out.append(self.value(item, item_path, scope, depth + 1))
            return out
        return value

    def mapping(self, value: dict[Any, Any], prefix: str, scope: _Scope, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _invalid(f"non-string key {key!r} in {self._location(scope, prefix or '.')}")
            path = prefix + key
            if _is_marker(item):
                filled, restored = self.resolve(item, path, scope)
                if filled:
                    out[key] = restored
            else:
                out[key] = self.value(item, path, scope, depth)
        return out

    def entry(self, entry: Any, index: int) -> dict[str, Any]:
        if not isinstance(entry, dict):
            raise _invalid(f"config_list[{index}] is a {type(entry).__name__}, not an object")
        if _is_marker(entry):
            raise _invalid(f"config_list[{index}] is a marker, not an entry")
        return self.mapping(entry, "", _scope(index, entry), 0)

    def config(self, config: dict[Any, Any]) -> dict[str, Any]:
        if _is_marker(config):
            raise _invalid("the whole config is a marker")
        if "config_list" not in config:
            return self.entry(config, 0)
        top = _scope(TOP_LEVEL, config)
        result: dict[str, Any] = {}
        for key, value in config.items():
            if not isinstance(key, str):
                raise _invalid(f"non-string key {key!r}")
            if key != "config_list":
                result.update(self.mapping({key: value}, "", top, 0))
            elif isinstance(value, dict):
                result[key] = self.entry(value, 0)
            elif isinstance(value, list):
                result[key] = []
                for i, item in enumerate(value):
                    if isinstance(item, dict) and UNSERIALIZABLE_KEY in item:  # an entry with no JSON form
                        scope = _Scope(i, None, None, False)
                        _, restore = self._check_marker(item, "", scope)
                        self._report(
                            scope, "", restore, f"entry of type {item[UNSERIALIZABLE_KEY][:200]} not saved"
                        )
                    else:
                        result[key].append(self.entry(item, i))
            else:
                raise _invalid(f"config_list is a {type(value).__name__}, not a list")
        return result


def restore_llm_config_report(
    redacted: dict[str, Any] | Literal[False] | None,
    *,
    environ: Mapping[str, str] | None = None,
    secrets: Mapping[str, Any] | None = None,
    azure_ad_token_provider: Callable[[], str] | None = None,
) -> tuple[dict[str, Any] | Literal[False] | None, list[MissingSecret]]:
    """Fill the markers of a redacted config; return the config and the markers that stayed empty.

    Each marker is filled, first match wins, from:

    1. ``secrets`` -- keyed ``"#<index>.<field>"`` (one entry by position), ``"<model>.<field>"`` (entries
       of that model) or ``"<field>"`` (every entry), where ``<field>`` is the marker's path such as
       ``"api_key"`` or ``"default_headers.Authorization"``; top-level options use ``"<field>"`` only.
       ``secrets`` may also supply ``$unserializable`` values (an ``http_client``, a ``response_format``...).
    2. ``azure_ad_token_provider`` for ``azure_ad_token_provider`` markers.
    3. ``environ`` (default ``os.environ``) for ``env:`` markers -- only the variables this module itself
       writes for that api type and field; a file naming any other variable is not obeyed.

    A marker left unfilled is removed from the restored config and reported as a ``MissingSecret``. Note
    that AG2 builds OpenAI/Azure clients eagerly, so an ``openai``/``azure`` entry without a key makes
    ``ConversableAgent(...)`` raise unless the SDK finds its own variable in ``os.environ``: check the report.
    Raises ``InvalidCheckpointError`` when the input is not a well-formed redacted config.
    """
    if redacted is None or redacted is False:
        return redacted, []
    if not isinstance(redacted, dict):
        raise _invalid(f"expected an object, false or null, got {type(redacted).__name__}")
    restorer = _Restorer(os.environ if environ is None else environ, secrets or {}, azure_ad_token_provider)
    try:
        restored = restorer.config(redacted)
    except RecursionError as exc:  # pragma: no cover - depth is bounded above
        raise _invalid("nesting too deep") from exc
    return restored, restorer.missing


def restore_llm_config(
    redacted: dict[str, Any] | Literal[False] | None,
    *,
    environ: Mapping[str, str] | None = None,
    secrets: Mapping[str, Any] | None = None,
    azure_ad_token_provider: Callable[[], str] | None = None,
) -> dict[str, Any] | Literal[False] | None:
    """``restore_llm_config_report`` without the report: a plain dict ``ConversableAgent`` accepts.

    AG2 0.14's ``LLMConfig.ensure_config`` pops ``config_list`` from the dict it is given: pass each agent
    its own restored dict (or a copy), or build an ``LLMConfig`` once with ``build_llm_config``.
    """
    config, _ = restore_llm_config_report(
        redacted, environ=environ, secrets=secrets, azure_ad_token_provider=azure_ad_token_provider
    )
    return config


def build_llm_config(config: Mapping[str, Any] | Literal[False] | None) -> Any:
    """An ``autogen.LLMConfig`` built from a restored dict on ag2 0.10 and 0.14; ``False``/``None`` as is.

    The input is not modified.
    """
    if config is None or config is False:
        return config
    from autogen import LLMConfig

    options = dict(config)
    if "config_list" not in options:
        return LLMConfig(options)
    entries = options.pop("config_list")
    if isinstance(entries, Mapping):
        entries = [entries]
    return LLMConfig(*entries, **options)
