"""docs/CLI.md keeps up with the CLI: every command `aether` has is in it, and every exit code."""

from __future__ import annotations

from pathlib import Path

from aether_cli import _common
from aether_cli._app import app

DOC = Path(__file__).parents[2] / "docs" / "CLI.md"


def commands() -> list[str]:
    found = []
    for group in app:
        if group.startswith("-"):
            continue
        subcommands = [c for c in app[group] if not c.startswith("-")]
        found += [f"aether {group} {c}" for c in subcommands] if subcommands else [f"aether {group}"]
    return found


def test_every_command_is_documented() -> None:
    text = DOC.read_text()
    assert len(commands()) >= 20
    missing = [command for command in commands() if f"`{command}" not in text]
    assert not missing, f"commands missing from docs/CLI.md: {missing}"


def test_every_exit_code_is_documented() -> None:
    text = DOC.read_text()
    codes = {
        value for name, value in vars(_common).items() if name.startswith("EXIT_") and isinstance(value, int)
    }
    assert codes == {0, 1, 2, 3, 4, 130}
    assert all(f"\n| {code} |" in text for code in codes)


def test_the_events_kind_option_names_every_kind_of_event() -> None:
    """`aether cluster events --kind`'s help lists the kinds the node takes (it refuses any other)."""
    from aether_node.client import EVENT_KINDS

    events = app["cluster"]["events"]
    (kind,) = [p for p in events.assemble_argument_collection() if p.name == "--kind"]
    listed = kind.parameter.help.split(": ", 1)[1].replace(" (", ",").split(",")
    assert [word.strip() for word in listed[: len(EVENT_KINDS)]] == list(EVENT_KINDS)
