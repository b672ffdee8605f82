"""The service over stdio: the SDK's stdio transport, with an answer for a line that is no JSON-RPC
message. The SDK's reader hands such a line on as an exception, which its dispatcher drops unseen: a
client that sent a line cut short, or a message of another JSON-RPC version, waited for an answer for
ever. JSON-RPC 2.0 answers it with an error of id null: -32700 (parse error) for a line that is no JSON,
-32600 (invalid request) for JSON that is no message.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

log = logging.getLogger("aether_mcp")


def refusal(error: Exception) -> SessionMessage:
    """The error message that answers a line the transport could not read as a message (`error`)."""
    problems = error.errors(include_url=False) if isinstance(error, ValidationError) else []
    invalid = [p["msg"] for p in problems if p["type"] == "json_invalid"]
    not_json = bool(invalid) or not problems
    code, what = (PARSE_ERROR, "not JSON") if not_json else (INVALID_REQUEST, "not a JSON-RPC 2.0 message")
    said = f"Parse error: the line is {what}" if not_json else f"Invalid request: the line is {what}"
    detail = (invalid or [str(error) or type(error).__name__])[0].splitlines()[0][:200]
    return SessionMessage(
        JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=said, data=detail))
    )


async def serve_stdio(lowlevel: Server[Any], initialization: Any) -> None:
    """Serve `lowlevel` on stdin and stdout until the client hangs up, answering each unreadable line."""
    async with stdio_server() as (read_stream, write_stream):
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def forward() -> None:
            async with send:
                async for item in read_stream:
                    if isinstance(item, Exception):
                        log.info("stdio: a line that is no JSON-RPC message: %s", str(item)[:200])
                        await write_stream.send(refusal(item))
                        continue
                    await send.send(item)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(forward)
            await lowlevel.run(receive, write_stream, initialization)
            tasks.cancel_scope.cancel()
