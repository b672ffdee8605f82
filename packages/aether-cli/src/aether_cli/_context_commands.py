"""`aether context add|use|list|remove`: the operator's named clusters (the file: `aether_node.contexts`).

Local only: these commands change the config file, never a cluster, so they have no MCP tool. A key is
never printed (`list` says whether a context has one); `--api-key -` reads it from stdin, so it stays out
of the shell's history. Imported at start-up for `COMMANDS`: nothing heavy at module level.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from cyclopts import Parameter

if TYPE_CHECKING:
    from aether_node.contexts import Config

Change = Callable[["Config", Path], tuple["Config", str]]

# command name → (function in this module, one-line help)
COMMANDS = {
    "add": ("add", "Add a context (or replace one of the same name): NAME, the cluster's URL(s), a key."),
    "use": ("use", "Make NAME the current context: commands without --cluster talk to its cluster."),
    "list": ("list_contexts", "Every context, its cluster, whether it has a key; * marks the current one."),
    "remove": ("remove", "Forget a context (its key too)."),
}


def _edit(change: Change) -> None:
    """Load the config, apply `change(config, path) -> (config, message)`, save, print the message."""
    from aether_node import contexts as _contexts

    from ._common import EXIT_BAD_INPUT, fail

    path = _contexts.config_path(os.environ)
    try:
        config, message = change(_contexts.load(path), path)
        _contexts.save(path, config)
    except _contexts.ConfigError as error:
        fail(EXIT_BAD_INPUT, str(error))
    print(message)


def add(
    name: str,
    cluster: str,
    /,
    *,
    api_key: Annotated[
        str | None,
        Parameter(
            name=("--api-key", "-k"),
            allow_leading_hyphen=True,
            help="The key to send to this cluster; `-` reads it from stdin.",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        Parameter(help="The cluster CA certificate (a node's data_dir/tls/ca.pem), kept in the context."),
    ] = None,
    use: Annotated[bool, Parameter(negative=(), help="Make it the current context too.")] = False,
    verify_now: Annotated[
        bool,
        Parameter(
            negative="--no-verify-now",
            help="Ask each URL once, with the CA and key given, before saving: a certificate that does not"
            " verify stops the command (nothing saved); an unreachable cluster is saved with a warning."
            " --no-verify-now: save without asking.",
        ),
    ] = True,
) -> None:
    """Add a context NAME for CLUSTER (management URL(s), comma-separated), or replace it. Unless
    --no-verify-now, each URL is asked once first with the CA and key given."""
    import attrs

    from aether_node import contexts as _contexts
    from aether_node.client import check_url, parse_urls

    from ._common import EXIT_BAD_INPUT, fail, read_ca_file

    ca_cert = read_ca_file(ca_file) if ca_file is not None else None
    try:
        _contexts.check_name(name)
        urls = parse_urls(cluster)
        if not urls:
            raise ValueError(f"{cluster!r}: no cluster URL given")
        for url in urls:
            check_url(url)  # the same check as before any request: a bad URL is refused now
    except (_contexts.ConfigError, ValueError) as error:
        fail(EXIT_BAD_INPUT, str(error))
    if api_key == "-":
        api_key = sys.stdin.readline().strip()
        if not api_key:
            fail(EXIT_BAD_INPUT, "--api-key -: stdin held no key")
    if ca_file is not None and not any(url.startswith("https://") for url in urls):
        print(
            f"aether: warning: --ca-file {ca_file} is kept, but used only for https:// URLs", file=sys.stderr
        )
    if verify_now:
        try:  # a malformed config file is said before the cluster is asked anything
            _contexts.load(_contexts.config_path(os.environ))
        except _contexts.ConfigError as error:
            fail(EXIT_BAD_INPUT, str(error))
        _verify(name, urls, api_key, ca_cert, ca_file)

    def change(config: _contexts.Config, path: Path) -> tuple[_contexts.Config, str]:
        verb = "replaced" if config.get(name) else "added"
        context = _contexts.Context(name=name, cluster=tuple(urls), api_key=api_key, ca_cert=ca_cert)
        config = config.with_context(context)
        current = use or config.current is None
        if current:
            config = attrs.evolve(config, current=name)
        return config, f"context {name!r} {verb} in {path}" + (" (current)" if current else "")

    _edit(change)


def _verify(
    name: str, urls: list[str], api_key: str | None, ca_cert: str | None, ca_file: Path | None
) -> None:
    """Ask the cluster once (`_context_check`): stop, saving nothing, if a node's certificate does not
    verify with the CA given; warn on stderr about the rest."""
    from ._common import EXIT_BAD_INPUT, fail
    from ._context_check import check_cluster

    found = check_cluster(urls, api_key=api_key, ca_cert=ca_cert)
    for warning in found.warnings:
        print(f"aether: warning: {warning}", file=sys.stderr)
    if found.problems:
        trusted = f"the CA in --ca-file {ca_file}" if ca_file else "the system's CAs (no --ca-file given)"
        fail(
            EXIT_BAD_INPUT,
            f"context {name!r} not saved: checked with {trusted}: {'; '.join(found.problems)}"
            " (--no-verify-now saves it unchecked)",
        )


def use(name: str, /) -> None:
    """Make NAME the current context."""
    import attrs

    from aether_node import contexts as _contexts

    def change(config: _contexts.Config, path: Path) -> tuple[_contexts.Config, str]:
        if config.get(name) is None:
            raise _contexts.ConfigError(f"no context {name!r} in {path} (known: {_names(config)})")
        return attrs.evolve(config, current=name), f"current context: {name!r}"

    _edit(change)


def remove(name: str, /) -> None:
    """Forget the context NAME (and its key); if it was current, no context is current any more."""
    from aether_node import contexts as _contexts

    def change(config: _contexts.Config, path: Path) -> tuple[_contexts.Config, str]:
        if config.get(name) is None:
            raise _contexts.ConfigError(f"no context {name!r} in {path} (known: {_names(config)})")
        was_current = config.current == name
        return config.without(name), f"context {name!r} removed" + (
            "; no context is current now (`aether context use NAME`)" if was_current else ""
        )

    _edit(change)


def list_contexts(
    *,
    output: Annotated[
        str, Parameter(name=("--output", "-o"), help="table or json (keys are never shown).")
    ] = "table",
    json_output: Annotated[bool, Parameter(name=("--json", "-j"), negative=(), help="= -o json")] = False,
) -> None:
    """Every context: name, cluster, whether it has a key; * marks the current one."""
    from aether_node import contexts as _contexts

    from ._common import EXIT_BAD_INPUT, fail

    if output not in ("table", "wide", "json"):
        fail(EXIT_BAD_INPUT, f"--output must be table, wide or json, got {output!r}")
    path = _contexts.config_path(os.environ)
    try:
        config = _contexts.load(path)
    except _contexts.ConfigError as error:
        fail(EXIT_BAD_INPUT, str(error))
    rows = [
        {
            "name": c.name,
            "current": c.name == config.current,
            "cluster": list(c.cluster),
            "api_key_set": c.api_key is not None,
        }
        for c in config.contexts
    ]
    if json_output or output == "json":
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(f"no contexts in {path} (add one with `aether context add NAME URL`)")
        return
    from . import _output

    _output.table(
        f"Contexts ({path})",
        ["CURRENT", "NAME", "CLUSTER", "API KEY"],
        (
            [
                "*" if row["current"] else "",
                _output._text(row["name"]),
                _output._text(", ".join(row["cluster"])),
                "set" if row["api_key_set"] else "-",
            ]
            for row in rows
        ),
    )


def _names(config: Config) -> str:
    return ", ".join(c.name for c in config.contexts) or "none"
