"""The problems of one table an operator wrote (a blueprint's `[slices.update]`, `[slices.autoscale]`,
`[policy]`; the API's body of `cluster policy set`): each one's key path, what is wrong and the key whose
line it is on. A table's parser runs every check that stands on its own and hands all the problems to its
caller's error maker at once, so one run reports them all. Pure."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence

import attrs

from ._text import shown


@attrs.frozen(kw_only=True)
class Problem:
    path: str  # the key path, e.g. slices[0].update.steps
    message: str  # what is wrong, e.g. "must be a number in [0, 1], got 2"
    key: str  # the key whose line it is: "" the table's header, the table's own name its `x = ...` line


# Every problem of a table (at least one) → the error to raise: the blueprint parser's (one line each,
# file:line:column) or the API's.
Fail = Callable[[Sequence[Problem]], Exception]


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,40}")  # a key TOML writes without quotes (and short)


def key_named(key: str) -> str:
    """A key someone wrote, in a key path: as it is if TOML would write it bare (`replicas`), else quoted
    and escaped as TOML and JSON write it (`"x y"`, `"\\u202e"`), cut. Pure."""
    return key if _BARE_KEY.fullmatch(key) else shown(key)


def unknown_key(key: str, known: Iterable[str], what: str = "key") -> str:
    """What is wrong with `key`, not one of `known`: "unknown key (expected: a, b)", with "did you mean
    'x'?" first when one of them is close to it (a typo: `instance` for `instances`); "unknown key (none
    is taken here)" when nothing is. `what`: what a key is called there ("query parameter")."""
    names = sorted(known)
    if not names:
        return f"unknown {what} (none is taken here)"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.7)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what} ({hint}expected: {', '.join(names)})"


def unknown_keys(given: Iterable[str], taken: Iterable[str], what: str = "key") -> str | None:
    """What is wrong with the keys of `given` that are not `taken` (a request body's, a query string's),
    one `unknown_key` each, the first five named ("; " between); None if there is none."""
    taken = tuple(taken)
    unknown = sorted(set(given) - set(taken))
    if not unknown:
        return None
    problems = [f"{key_named(key)}: {unknown_key(key, taken, what)}" for key in unknown[:5]]
    return "; ".join(problems) + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")


class Problems:
    """The problems found so far in one table."""

    def __init__(self) -> None:
        self.found: list[Problem] = []

    def add(self, path: str, message: str, key: str) -> None:
        self.found.append(Problem(path=path, message=message, key=key))

    def raise_any(self, fail: Fail) -> None:
        """Raise what `fail` makes of every problem found, if there is any."""
        if self.found:
            raise fail(tuple(self.found))
