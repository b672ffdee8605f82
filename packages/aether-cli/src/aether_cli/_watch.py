"""`--watch`: ask the management API again every `INTERVAL` seconds and show the answer again when it
changed, until Ctrl-C (exit 130, like every command).

On a terminal the screen is redrawn; to a pipe each changed answer is appended under a `--- HH:MM:SS`
line; with JSON output each changed answer is one JSON line. A first answer that fails ends the command
as without `--watch`; a later failure (a node restarting, the blueprint deleted) is shown and the watch
goes on, so that what comes back is seen.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from ._common import Common, client_for, explain, fail, target

INTERVAL = 2.0  # seconds between questions: a modest load on the node that answers


def watch(common: Common, fetch: Callable[[Any], Any], render: Callable[[Any], None]) -> NoReturn:
    """Show `render(fetch(client))` and again each time the answer changes."""
    from aether_node.client import ApiError, ClusterUnreachableError, NoAnswerError, to_json

    where = target(common)
    last: Any = None
    first = True
    with client_for(common, where) as client:
        while True:
            try:
                answer = fetch(client)
                seen: Any = to_json(answer)
            except (ClusterUnreachableError, NoAnswerError, ValueError, ApiError) as error:
                code, message = explain(error, where)
                if first:
                    fail(code, message)
                answer, seen = None, {"error": message}
            if seen != last:
                _show(common, answer, seen, render)
                last = seen
            first = False
            time.sleep(INTERVAL)


def _show(common: Common, answer: Any, seen: Any, render: Callable[[Any], None]) -> None:
    stamp = time.strftime("%H:%M:%S")
    if common.json:
        if answer is None:
            print(f"aether: error: {seen['error']} (still watching)", file=sys.stderr, flush=True)
        else:
            print(json.dumps(seen, sort_keys=True), flush=True)
        return
    from ._output import _text, console

    if console.is_terminal:
        console.clear()
        console.print(f"[dim]{stamp}, every {INTERVAL:g} s; Ctrl-C to stop[/dim]", highlight=False)
    else:
        console.print(f"--- {stamp}", highlight=False)
    if answer is None:
        console.print(f"[red]error:[/red] {_text(seen['error'])} (still watching)", highlight=False)
    else:
        render(answer)
    sys.stdout.flush()
