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

What counts as a secret (key names are compared lower-cased with ``-`` read as ``_``):

* the known fields ``api_key``, ``azure_ad_token``, ``azure_ad_token_provider`` (except the string
  ``"DEFAULT"``, which asks AG2 for Azure's default credential), ``aws_access_key``, ``aws_secret_key``,
  ``aws_session_token``, ``http_client``, ``credentials``, ``google_application_credentials``,
  ``gcp_auth_token``, ``webhook_secret``, ``admin_api_key``, ``workload_identity``;
* any key, at any depth, named ``auth``/``cookie(s)`` or whose name ends in ``api_key``/``apikey``/
  ``api_keys``, ``secret``, ``secret_key``, ``access_key``, ``private_key``, ``credential(s)``,
  ``password``/``passwd``, ``_auth`` or ``_token``/``token`` -- except token *counts* (``*_tokens`` never
  matches; ``max_``/``min_``/``num_`` prefixed names are exempt);
* inside a ``*headers`` dict (``default_headers``, ``extra_headers``, ...), any header whose name mentions
  ``auth``, ``key``, ``token``, ``secret``, ``cookie``, ``password``, ``credential``, ``session`` or
  ``signature`` (``Authorization``, ``Proxy-Authorization``, ``api-key``, ``X-API-Key``, ``Cookie``, ...);
* any ``pydantic.SecretStr``/``SecretBytes`` value, whatever its key;
* a URL string carrying a password (``https://user:pw@host``).

``None``, empty strings and booleans are never secrets and are kept as they are.

Fidelity: entries are dumped field by field; a ``None`` field is left out only when the field's default
is ``None`` (so rebuilding yields the same value), other ``None`` values and extra fields are kept.
Plain dicts keep the shape they were given. Rebuilding an ``LLMConfig`` from a restored dict therefore
gives a config equal (``==``) to the original.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

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

_SECRET_FIELDS = frozenset(
    {
        "api_key",
        "azure_ad_token",
        "azure_ad_token_provider",
        "aws_access_key",
        "aws_secret_key",
        "aws_session_token",
        "http_client",
        "credentials",
        "google_application_credentials",
        "gcp_auth_token",
        "webhook_secret",
        "admin_api_key",
        "workload_identity",
        "auth",
        "cookie",
        "cookies",
    }
)
_SECRET_SUFFIXES = (
    "api_key",
    "apikey",
    "api_keys",
    "secret",
    "secret_key",
    "access_key",
    "private_key",
    "credential",
    "credentials",
    "password",
    "passwd",
    "_auth",
)
_COUNT_PREFIXES = ("max_", "min_", "num_")
_AUTH_HEADER_PARTS = (
    "auth",
    "key",
    "token",
    "secret",
    "cookie",
    "password",
    "passwd",
    "credential",
    "session",
    "signature",
)


def _norm(name: str) -> str:
    return name.lower().replace("-", "_")


def is_secret_name(name: str) -> bool:
    """Whether a config key names a secret (see the module docstring for the rule)."""
    key = _norm(name)
    if key in _SECRET_FIELDS or key.endswith(_SECRET_SUFFIXES):
        return True
    return (key == "token" or key.endswith("_token")) and not key.startswith(_COUNT_PREFIXES)


def _is_auth_header(name: str) -> bool:
    key = _norm(name)
    return any(part in key for part in _AUTH_HEADER_PARTS)


def _is_headers_key(name: str) -> bool:
    return _norm(name).endswith("headers")


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


def _url_password(value: str) -> str | None:
    if "@" not in value or "://" not in value:
        return None
    try:
        return urlsplit(value).password or None
    except ValueError:
        return None


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

    def _is_secret(self, key: str, value: Any, in_headers: bool) -> bool:
        if value is None or isinstance(value, bool) or (isinstance(value, str) and not value):
            return False
        if isinstance(value, (SecretStr, SecretBytes)):
            return True
        if _norm(key) == "azure_ad_token_provider" and value == "DEFAULT":
            return False
        return (in_headers and _is_auth_header(key)) or is_secret_name(key)

    def field(self, key: str, path: str, value: Any, scope: _Scope, *, in_headers: bool, depth: int) -> Any:
        """The redacted form of ``value`` stored under ``key`` at ``path`` (relative to its entry)."""
        if self._is_secret(key, value, in_headers):
            self.collect(value)
            restore = restore_from_for(scope.api_type, path, custom_client=scope.custom_client)
            return {REDACTED_KEY: path, RESTORE_FROM_KEY: restore}
        if isinstance(value, str):
            password = _url_password(value)
            if password is not None:
                self.collect(password)
                self.collect(value)
                return {REDACTED_KEY: path, RESTORE_FROM_KEY: RESTORE_FROM_USER}
            return str(value)
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
            return self.mapping(value, path + ".", scope, in_headers=_is_headers_key(key), depth=depth + 1)
        if isinstance(value, (list, tuple)):
            return [
                self.field(key, f"{path}.{i}", item, scope, in_headers=False, depth=depth + 1)
                for i, item in enumerate(value)
            ]
        return unserializable_marker(value)

    def mapping(
        self, value: Mapping[Any, Any], prefix: str, scope: _Scope, *, in_headers: bool, depth: int
    ) -> dict[str, Any]:
        if not all(isinstance(k, str) for k in value) or REDACTED_KEY in value or UNSERIALIZABLE_KEY in value:
            # Non-string keys have no JSON form; reserved keys would be read back as markers.
            self.collect(value)
            return unserializable_marker(value)
        return {
            k: self.field(k, prefix + k, v, scope, in_headers=in_headers, depth=depth)
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
