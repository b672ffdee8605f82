"""The service's one way to the cluster: the management API's client (`aether_node.client`), called from
worker threads so the MCP event loop never blocks. Translates the client's errors into ClusterError with
the same text the `aether` CLI prints. Imports nothing server-side."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio.to_thread

from aether_node.client import ApiClient, ApiError, ClusterUnreachableError, ErrorKind, NoAnswerError

from ._errors import ClusterError

T = TypeVar("T")

log = logging.getLogger("aether_mcp.gateway")


class ClusterGateway:
    def __init__(
        self, urls: Sequence[str], *, api_key: str | None, timeout: float = 30.0, ca_cert: str | None = None
    ) -> None:
        self.urls = list(urls)
        self.api_key = api_key
        self.client = ApiClient(
            self.urls, api_key=api_key, timeout=timeout, ca_cert=ca_cert, on_unchecked_key=_unchecked_key
        )

    async def call(self, operation: Callable[[ApiClient], T]) -> T:
        """Run `operation(client)` in a worker thread. Cancellation abandons the thread (its request ends
        on its own timeout); the caller sees Cancelled at once."""
        return await anyio.to_thread.run_sync(self.call_blocking, operation, abandon_on_cancel=True)

    def call_blocking(self, operation: Callable[[ApiClient], T]) -> T:
        try:
            return operation(self.client)
        except (ClusterUnreachableError, NoAnswerError) as error:
            raise ClusterError(str(error), kind=error.kind) from None
        except ApiError as error:
            raise ClusterError(error.message, kind=error.kind) from None
        except ValueError as error:  # a malformed name or URL: the caller's input
            raise ClusterError(str(error), kind=ErrorKind.BAD_REQUEST) from None


def _unchecked_key(url: str) -> None:
    """The service was given an API key and a node says it checks none (an open dev cluster): said once
    on the service's log (stderr), as the CLI says it, since a mistyped key would otherwise go unnoticed."""
    log.warning(
        "%s checks no API keys (open: a dev-mode cluster with none made); the key this service was given"
        " was not checked (mistyped, or meant for another cluster?)",
        url,
    )
