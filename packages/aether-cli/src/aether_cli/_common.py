"""What every `aether` command shares: cluster and key options, the API client, exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

from cyclopts import Parameter

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 0, 1, 2, 3
DEV_DIR = Path(".aether-dev")
T = TypeVar("T")
# The exit code of each error kind (`aether_node.client.ErrorKind`; a test checks every kind is here).
EXIT_CODE_BY_KIND = {"bad_request": EXIT_BAD_INPUT, "unreachable": EXIT_UNREACHABLE} | dict.fromkeys((
    "unauthenticated", "forbidden", "not_found", "no_endpoint", "conflict", "raised", "internal",
    "unavailable", "gone", "timeout", "no_answer", "error",
), EXIT_FAILED)  # fmt: skip


@Parameter(name="*")
@dataclasses.dataclass
class Common:
    cluster: Annotated[
        str | None,
        Parameter(env_var="AETHER_CLUSTER", help="Management URL(s) of any node(s), comma-separated."),
    ] = None
    api_key: Annotated[
        str | None, Parameter(env_var="AETHER_API_KEY", help="API key (role viewer, operator or admin).")
    ] = None
    json: Annotated[bool, Parameter(name="--json", negative=(), help="Print JSON for scripts.")] = False


def fail(code: int, message: str) -> NoReturn:
    print(f"aether: error: {message}", file=sys.stderr)
    sys.exit(code)


def cluster_urls(common: Common) -> list[str]:
    from aether_node.client import parse_urls

    if common.cluster:
        return parse_urls(common.cluster)
    state = DEV_DIR / "cluster.json"
    if state.exists():
        return list(json.loads(state.read_text())["management"])
    fail(
        EXIT_UNREACHABLE,
        "no cluster given: pass --cluster URL (or AETHER_CLUSTER), or start one with `aether dev up`",
    )


def call(common: Common, operation: Callable[[Any], T]) -> T:
    """Run `operation(client)`; turn API errors into messages and exit codes."""
    from aether_node.client import ApiClient, ApiError, ClusterUnreachableError, NoAnswerError

    api_key = common.api_key or os.environ.get("AETHER_API_KEY")
    with ApiClient(cluster_urls(common), api_key=api_key) as client:
        try:
            return operation(client)
        except ClusterUnreachableError as error:
            fail(EXIT_UNREACHABLE, str(error))
        except NoAnswerError as error:  # a node got the request and did not answer: the outcome is unknown
            fail(EXIT_FAILED, str(error))
        except ValueError as error:  # a malformed --cluster URL or name
            fail(EXIT_BAD_INPUT, str(error))
        except ApiError as error:
            fail(
                EXIT_CODE_BY_KIND.get(error.kind, EXIT_BAD_INPUT if error.status == 400 else EXIT_FAILED),
                error.message,
            )


def emit(common: Common, data: Any, human: Callable[[], None]) -> None:
    """JSON for scripts, or the human rendering."""
    if common.json:
        from aether_node.client import to_json

        print(json.dumps(to_json(data), indent=2, sort_keys=True))
    else:
        human()
