"""Where a restored LLM config may send the secrets it is given.

A checkpoint file may come from anyone, and its ``llm_config`` names the server an agent talks to
(``base_url``, ``azure_endpoint``, ...). Restore fills redacted secrets from the environment or
``secrets=``, and provider SDKs read keys from the environment on their own. So a foreign file could
send the user's own key to a server of its choosing. An ``EndpointPolicy`` decides, before any agent is
built, whether an entry restored from a file may carry a credential to the endpoint it names.

An endpoint is **trusted** when it is

* absent (the provider's default endpoint) or the provider's well-known public endpoint
  (``https://api.openai.com``, ``https://api.anthropic.com``, ...);
* configured by the environment itself (``OPENAI_BASE_URL``, ``OPENAI_API_BASE``,
  ``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_API_BASE``, ``ANTHROPIC_BASE_URL``);
* listed by the user (``CheckpointRestorer(trusted_endpoints=[...])``, CLI ``--trust-endpoint``).

A trusted URL covers URLs with the same scheme, host and port whose path starts with its path. An entry
whose endpoint is not trusted is refused (``UntrustedEndpointError``, naming agent, entry, field and
endpoint) when it would carry a credential: a secret marker filled on restore, or no key at all while
the provider's key variable is set in the environment (its SDK would read and send it). Without a
credential it is restored and listed as untrusted in the report: nothing of the user's goes there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import CheckpointError
from .redaction import (
    REDACTED_KEY,
    TOP_LEVEL,
    UNSERIALIZABLE_KEY,
    MissingSecret,
    env_names_for,
    redact_llm_config,
)

__all__ = ["EndpointPolicy", "UntrustedEndpointError", "describe_endpoints", "endpoint_fields"]

#: Public endpoints of providers, by AG2 ``api_type`` (``None``: an entry without ``api_type``, i.e. OpenAI).
PROVIDER_ENDPOINTS: dict[str | None, tuple[str, ...]] = {
    None: ("https://api.openai.com",),
    "openai": ("https://api.openai.com",),
    "responses": ("https://api.openai.com",),
    "openai_v2": ("https://api.openai.com",),
    "responses_v2": ("https://api.openai.com",),
    "anthropic": ("https://api.anthropic.com",),
    "anthropic_v2": ("https://api.anthropic.com",),
    "deepseek": ("https://api.deepseek.com",),
    "mistral": ("https://api.mistral.ai",),
    "groq": ("https://api.groq.com",),
    "together": ("https://api.together.xyz",),
    "cerebras": ("https://api.cerebras.ai",),
    "cohere": ("https://api.cohere.com", "https://api.cohere.ai"),
    "google": ("https://generativelanguage.googleapis.com",),
    "gemini": ("https://generativelanguage.googleapis.com",),
}

#: Environment variables whose value is an endpoint the user configured for the SDKs.
ENDPOINT_ENV = ("OPENAI_BASE_URL", "OPENAI_API_BASE", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_BASE")
ENDPOINT_ENV_BY_API: dict[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_BASE_URL",),
    "anthropic_v2": ("ANTHROPIC_BASE_URL",),
}

_URL_SCHEMES = ("http", "https", "ws", "wss")
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
#: Secret fields whose environment variable a provider SDK reads by itself when the config has none.
_SDK_ENV_FIELDS = ("api_key", "azure_ad_token")


class UntrustedEndpointError(CheckpointError):
    """A restored config would send a credential to an endpoint the user has not trusted."""


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> _Origin | None:
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            return None
        scheme = parts.scheme.lower()
        if scheme not in _URL_SCHEMES or not parts.hostname:
            return None
        path = parts.path.rstrip("/") + "/"
        return cls(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], path)

    def covers(self, other: _Origin) -> bool:
        return (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port) and (
            other.path.startswith(self.path)
        )


def endpoint_fields(entry: Mapping[str, Any]) -> dict[str, str]:
    """The fields of one config entry (or the top-level options) whose value is a URL the client calls."""
    return {
        key: value
        for key, value in entry.items()
        if key != "config_list" and isinstance(value, str) and _Origin.parse(value) is not None
    }


def _marker_paths(value: Any, prefix: str = "") -> list[str]:
    """Paths of the secret / unserializable markers inside a redacted entry."""
    if isinstance(value, dict):
        if REDACTED_KEY in value or UNSERIALIZABLE_KEY in value:
            return [prefix.rstrip(".")]
        return [p for k, v in value.items() for p in _marker_paths(v, f"{prefix}{k}.")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _marker_paths(v, f"{prefix}{i}.")]
    return []


def _entries(config: Any) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(config, dict):
        return []
    if "config_list" not in config:
        return [(0, config)]
    entries = config["config_list"]
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        return []
    return [(i, e) for i, e in enumerate(entries) if isinstance(e, dict)]


class EndpointPolicy:
    """Which endpoints may receive credentials on restore (see the module docstring)."""

    def __init__(
        self, trusted_endpoints: Iterable[str] = (), environ: Mapping[str, str] | None = None
    ) -> None:
        self.environ = os.environ if environ is None else environ
        self.trusted: list[tuple[_Origin, str]] = []
        for url in trusted_endpoints:
            origin = _Origin.parse(url)
            if origin is None:
                raise ValueError(f"trusted endpoint {url!r} is not an http(s) or ws(s) URL")
            self.trusted.append((origin, "trusted by you"))

    def why_trusted(self, url: str, api_type: str | None) -> str | None:
        """Why ``url`` is trusted for an entry of ``api_type``, or None when it is not."""
        origin = _Origin.parse(url)
        if origin is None:
            return None
        api = api_type.lower() if isinstance(api_type, str) else None
        candidates = [(t, why) for t, why in self.trusted]
        for name in ENDPOINT_ENV + ENDPOINT_ENV_BY_API.get(api or "", ()):
            configured = _Origin.parse(self.environ.get(name) or os.environ.get(name) or "")
            if configured is not None:
                candidates.append((configured, f"set by ${name}"))
        for public in PROVIDER_ENDPOINTS.get(api, ()):
            candidates.append((_Origin.parse(public), "provider default"))  # type: ignore[arg-type]
        for trusted, why in candidates:
            if trusted.covers(origin):
                return why
        return None

    def _sdk_reads_key(self, entry: Mapping[str, Any], api_type: str | None, filled: list[str]) -> list[str]:
        """Environment variables holding a key that the entry's SDK would read because the entry has none."""
        if entry.get("model_client_cls") is not None:
            return []
        names = []
        for field in _SDK_ENV_FIELDS:
            value = entry.get(field)
            if (isinstance(value, str) and value) or field in filled:
                continue
            names += [n for n in env_names_for(api_type, field) if self.environ.get(n) or os.environ.get(n)]
        return names

    def check(self, owner: str, redacted: Any, missing: Iterable[MissingSecret]) -> list[str]:
        """Refuse untrusted endpoints that would get a credential; describe every endpoint of the config.

        ``redacted`` is the config as stored, ``missing`` the markers that restore left empty. Endpoints are
        read from the stored config: a URL the user supplied for a redacted field is the user's own.
        Raises ``UntrustedEndpointError``; returns one line per endpoint.
        """
        unfilled = {(m.entry_index, m.field) for m in missing}
        top = redacted if isinstance(redacted, dict) and "config_list" in redacted else {}
        top_filled = [
            p
            for p in _marker_paths(top)
            if (TOP_LEVEL, p) not in unfilled and not p.startswith("config_list")
        ]
        lines: list[str] = []
        for index, entry in _entries(redacted):
            if UNSERIALIZABLE_KEY in entry:  # an entry that was not saved: nothing to call
                continue
            api_type, where = _describe_entry(index, entry)
            filled = [p for p in _marker_paths(entry) if (index, p) not in unfilled] + top_filled
            fields = _endpoints_of(top, entry)
            if not fields:
                lines += _default_endpoint(owner, where, entry, api_type)
            for field, url in fields.items():
                why = self.why_trusted(url, api_type)
                if why is not None:
                    lines.append(f"{owner}: {where}.{field} -> {url} ({why})")
                    continue
                carried = [f"the secret {p!r} filled on restore" for p in filled] + [
                    f"the key in ${name} (read by the provider SDK)"
                    for name in self._sdk_reads_key(entry, api_type, filled)
                ]
                if carried:
                    raise UntrustedEndpointError(
                        f"{owner}: {where}.{field} names the endpoint {url}, which is not trusted, and "
                        f"restoring it would send {', '.join(carried)} there. If you expect this server, "
                        f"trust it: CheckpointRestorer(trusted_endpoints=[{url!r}]) or --trust-endpoint "
                        f"{url}; or rebuild the agent with your own agent_factory"
                    )
                lines.append(f"{owner}: {where}.{field} -> {url} (untrusted; no credential sent)")
        return lines


def _describe_entry(index: int, entry: Mapping[str, Any]) -> tuple[str | None, str]:
    """The entry's ``api_type`` and how messages name it (``config_list[0] (model 'gpt-4o')``)."""
    api_type = entry.get("api_type")
    model = entry.get("model")
    where = f"config_list[{index}]" + (f" (model {model!r})" if isinstance(model, str) else "")
    return (api_type if isinstance(api_type, str) else None), where


def _endpoints_of(top: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, str]:
    return {**endpoint_fields(top), **endpoint_fields(entry)}


def _default_endpoint(
    owner: str, where: str, entry: Mapping[str, Any], api_type: str | None, why: str = "provider default"
) -> list[str]:
    """The line for an entry that names no endpoint: its provider's public one (none for custom clients)."""
    if entry.get("model_client_cls") is not None:
        return []
    defaults = PROVIDER_ENDPOINTS.get(api_type.lower() if api_type else None)
    return [f"{owner}: {where} -> {defaults[0]} ({why})"] if defaults else []


def describe_endpoints(owner: str, llm_config: Any, source: str) -> list[str]:
    """One line per endpoint a live agent's config calls (for configs the user's own code built)."""
    if llm_config is None or llm_config is False:
        return []
    try:
        config = redact_llm_config(llm_config)
    except TypeError:
        return []
    top = config if isinstance(config, dict) and "config_list" in config else {}
    lines: list[str] = []
    for index, entry in _entries(config):
        api_type, where = _describe_entry(index, entry)
        fields = _endpoints_of(top, entry)
        lines += [f"{owner}: {where}.{f} -> {url} ({source})" for f, url in fields.items()]
        if not fields:
            lines += _default_endpoint(owner, where, entry, api_type, f"provider default, {source}")
    return lines
