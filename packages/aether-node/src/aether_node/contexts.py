"""Contexts: named clusters (management URLs and an API key) in the operator's config file, and which one
is current. Owns the file's format, where it lives, reading and writing it (mode 0600: it holds keys).

`$XDG_CONFIG_HOME/aether/config.toml`, or `~/.config/aether/config.toml`:

    current-context = "dev"

    [contexts.dev]
    cluster = ["http://127.0.0.1:9090"]

    [contexts.prod]
    cluster = ["https://a.example:9090", "https://b.example:9090"]
    api-key = "..."
    ca-cert = "-----BEGIN CERTIFICATE-----\\n..."   # the cluster CA (a node's data_dir/tls/ca.pem)

Parsing and rendering are pure (text in, records out); `load` and `save` do the file I/O. `default_target`
is what the `aether` CLI and the `aether-mcp` service both use when no cluster is given on the command
line: the named or current context, else the dev cluster recorded in `./.aether-dev/` (flags and
environment variables win over both, in each tool). Public for both tools; this module prints nothing.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

import attrs

DEV_STATE = Path(".aether-dev") / "cluster.json"  # what `aether dev up` records, relative to where it ran
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEV_CONTEXT = "dev"


class ConfigError(Exception):
    """The config file cannot be read or is malformed (the user's to fix), or a context name is bad.
    The message names the file (and the line where TOML says so)."""


@attrs.frozen(kw_only=True)
class Context:
    name: str
    cluster: tuple[str, ...]
    api_key: str | None = None
    ca_cert: str | None = None  # PEM of the cluster CA: the nodes' HTTPS certificates are checked with it


@attrs.frozen(kw_only=True)
class Config:
    contexts: tuple[Context, ...] = ()
    current: str | None = None

    def get(self, name: str) -> Context | None:
        return next((c for c in self.contexts if c.name == name), None)

    def with_context(self, context: Context) -> Config:
        """This config with `context` added, or replacing the one of the same name (in place)."""
        if self.get(context.name) is None:
            return attrs.evolve(self, contexts=(*self.contexts, context))
        return attrs.evolve(
            self, contexts=tuple(context if c.name == context.name else c for c in self.contexts)
        )

    def without(self, name: str) -> Config:
        current = None if self.current == name else self.current
        return Config(contexts=tuple(c for c in self.contexts if c.name != name), current=current)


def config_path(environ: Mapping[str, str]) -> Path:
    """Where the config file lives, following the XDG base directory spec."""
    base = environ.get("XDG_CONFIG_HOME") or ""
    if not os.path.isabs(base):  # the spec: a relative value is to be ignored
        base = os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "aether" / "config.toml"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"context name {name!r}: use 1-64 letters, digits, '_', '.' or '-' (first a letter or digit)"
        )
    return name


# ---------------------------------------------------------------- pure: text <-> records


def parse(text: str, source: str) -> Config:
    import tomllib  # here: only a command that reads a config file pays for the parser

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: {error}") from None
    _no_unknown(data, {"current-context", "contexts"}, source)
    current = data.get("current-context")
    if current is not None and not isinstance(current, str):
        raise ConfigError(f"{source}: current-context must be a string, got {current!r}")
    tables = data.get("contexts", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: contexts must be a table of [contexts.NAME] tables")
    contexts = []
    for name, table in tables.items():
        where = f"{source}: [contexts.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        _no_unknown(table, {"cluster", "api-key", "ca-cert"}, where)
        cluster = table.get("cluster")
        if isinstance(cluster, str):
            cluster = [cluster]
        if not cluster or not isinstance(cluster, list) or not all(isinstance(u, str) for u in cluster):
            raise ConfigError(f"{where}: cluster must be a non-empty list of management URLs")
        key = table.get("api-key")
        if key is not None and not isinstance(key, str):
            raise ConfigError(f"{where}: api-key must be a string")
        ca_cert = table.get("ca-cert")
        if ca_cert is not None and (not isinstance(ca_cert, str) or "BEGIN CERTIFICATE" not in ca_cert):
            raise ConfigError(f"{where}: ca-cert must be a PEM certificate (-----BEGIN CERTIFICATE-----)")
        contexts.append(Context(name=name, cluster=tuple(cluster), api_key=key, ca_cert=ca_cert))
    config = Config(contexts=tuple(contexts), current=current)
    if current is not None and config.get(current) is None:
        raise ConfigError(f"{source}: current-context {current!r} names no [contexts.{current}] table")
    return config


def _no_unknown(table: Mapping[str, object], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        word = "key" if len(unknown) == 1 else "keys"
        raise ConfigError(f"{where}: unknown {word} {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _string(value: str) -> str:
    """A TOML basic string: quote and backslash escaped, control characters (and DEL) as \\uXXXX."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in escaped) + '"'


def render(config: Config) -> str:
    lines = ["# aether contexts: edit with `aether context add|use|remove` (this file holds API keys)", ""]
    if config.current is not None:
        lines += [f"current-context = {_string(config.current)}", ""]
    for context in config.contexts:
        lines.append(f"[contexts.{_string(context.name)}]")
        lines.append(f"cluster = [{', '.join(_string(u) for u in context.cluster)}]")
        if context.api_key is not None:
            lines.append(f"api-key = {_string(context.api_key)}")
        if context.ca_cert is not None:
            lines.append(f"ca-cert = {_string(context.ca_cert)}")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- the file


def load(path: Path) -> Config:
    """The config in `path`; empty if there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    return parse(text, str(path))


def loose_mode(path: Path) -> int | None:
    """The file's mode if others than its owner may read or write it (it holds keys), else None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & 0o077 else None


def save(path: Path, config: Config) -> None:
    """Write `config` to `path` atomically, readable by its owner only (0600; the directory 0700)."""
    import tempfile

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config.", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(render(config))
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as error:
        raise ConfigError(f"{path}: cannot write it ({error.strerror or error})") from None


def register_dev(management: list[str], environ: Mapping[str, str]) -> str:
    """Record a local dev cluster as the `dev` context (replacing an older one), current if none is; a
    sentence saying what was done, or why it was not (the cluster runs either way: this never raises)."""
    path = config_path(environ)
    try:
        config = load(path).with_context(Context(name=DEV_CONTEXT, cluster=tuple(management)))
        made_current = config.current is None
        if made_current:
            config = attrs.evolve(config, current=DEV_CONTEXT)
        save(path, config)
    except ConfigError as error:
        return f"context {DEV_CONTEXT!r} not recorded: {error}"
    return f"context {DEV_CONTEXT!r} recorded in {path}" + (
        " (now current)" if made_current else f" (current: {config.current!r})"
    )


@attrs.frozen(kw_only=True)
class Target:
    """A cluster to talk to: its management URLs, the API key that goes with them, and where they came from
    (for messages)."""

    urls: tuple[str, ...]
    api_key: str | None
    source: str
    config_path: Path | None = None  # the config file, when a context of it was used
    ca_cert: str | None = None  # PEM of the cluster CA, when the context keeps one


def default_target(
    environ: Mapping[str, str], *, context: str | None = None, cwd: Path | None = None
) -> Target | None:
    """The context named `context` (or by AETHER_CONTEXT), else the current one, else the dev cluster that
    `aether dev up` recorded under `cwd`; None if there is none. ConfigError for a malformed file or an
    unknown context name."""
    path = config_path(environ)
    config = load(path)
    name = context or environ.get("AETHER_CONTEXT") or config.current
    if name:
        found = config.get(name)
        if found is None:
            known = ", ".join(c.name for c in config.contexts) or "none"
            raise ConfigError(f"no context {name!r} in {path} (known: {known}; see `aether context list`)")
        return Target(
            urls=found.cluster,
            api_key=found.api_key,
            source=f"context {name!r}",
            config_path=path,
            ca_cert=found.ca_cert,
        )
    state = (cwd or Path.cwd()) / DEV_STATE
    try:
        recorded = json.loads(state.read_text())
        urls = tuple(str(url) for url in recorded["management"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{state}: not a dev cluster record ({error})") from None
    return Target(urls=urls, api_key=None, source=str(DEV_STATE))
