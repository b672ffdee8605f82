"""org.aether:greeter — a slice that calls another slice: `greet` sends the name to `org.aether:echo`
(entry `echo`) through the cluster and greets with what came back."""

from __future__ import annotations

from typing import Any

from aether_slice import EntryPoint, SliceContext, hookimpl


@hookimpl
def aether_entry_points(context: SliceContext) -> list[EntryPoint]:
    async def greet(payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            raise ValueError('greet takes {"name": <string>}')
        reply = await context.call(
            artifact="org.aether:echo", entry="echo", payload={"name": payload["name"]}
        )
        if not isinstance(reply, dict) or not isinstance(reply.get("name"), str):
            raise ValueError(f"org.aether:echo answered {reply!r}, not the payload it was sent")
        return {"greeting": "hello " + reply["name"], "via": reply}

    return [EntryPoint(name="greet", function=greet, idempotent=True)]
