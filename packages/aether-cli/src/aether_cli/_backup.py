"""`aether cluster backup FILE` and `aether cluster restore FILE`: the cluster's desired state (blueprints,
their revisions, the named API keys) read at one revision into a JSON file, and written back into a fresh
cluster (admin role; each has its MCP tool)."""

from __future__ import annotations

import json
import os
import sys

from ._common import EXIT_BAD_INPUT, Common, InputFile, call, emit, fail, plural, read_input

DEFAULT_COMMON = Common()


def cluster_backup(file: InputFile, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Write the cluster's blueprints, their revisions and its named API keys (hashed), read at one
    revision, to FILE (`-`: stdout); the file is made readable by its owner only."""
    backup = call(common, lambda client: client.backup())
    text = json.dumps(backup, indent=1, sort_keys=True) + "\n"
    if str(file) == "-":
        sys.stdout.write(text)
        return
    try:
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as error:
        fail(EXIT_BAD_INPUT, f"{file}: cannot write it ({error.strerror})")
    summary = {"file": str(file), "revision": backup["revision"], "entries": len(backup["entries"])}
    emit(
        common,
        summary,
        lambda: print(f"{file}: {len(backup['entries'])} keys at revision {backup['revision']}"),
    )


def cluster_restore(file: InputFile, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Write the backup in FILE (`-`: stdin) into this cluster, which must have no blueprint, revision or
    named key yet; its leader then places the blueprints' instances."""
    text, source = read_input(file, "a backup is the JSON `aether cluster backup` writes")
    try:
        backup = json.loads(text)
    except json.JSONDecodeError as error:
        fail(EXIT_BAD_INPUT, f"{source}: not JSON ({error})")
    result = call(common, lambda client: client.restore(backup))
    counts = result.get("by_prefix", {})
    named_keys = counts.get("cluster/api-keys/", 0)
    if named_keys:  # (stderr: a JSON answer on stdout stays whole)
        print(
            f"note: {plural(named_keys, 'named API key')} restored: the cluster now asks every request for"
            " a key (an open one is open no more); give one of them (--api-key, AETHER_API_KEY or the"
            " context's)",
            file=sys.stderr,
        )

    def human() -> None:
        what = (
            f"{plural(counts.get('blueprints/', 0), 'blueprint')},"
            f" {plural(counts.get('blueprint-revisions/', 0), 'kept revision')},"
            f" {plural(named_keys, 'named API key')}"
        )
        print(f"restored {result['restored']} records from {source} ({what})")

    emit(common, result, human)
