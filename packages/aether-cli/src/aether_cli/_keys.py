"""`aether key create|list|revoke`: the cluster's named API keys (admin role), through the management API
(each has its MCP tool). The secret of a new key is printed once: the cluster keeps only its hash."""

from __future__ import annotations

from typing import Annotated, Literal

from cyclopts import Parameter

from ._common import Common, call, emit

DEFAULT_COMMON = Common()
Role = Literal["viewer", "operator", "admin"]


def key_create(
    name: str,
    /,
    *,
    role: Annotated[Role, Parameter(help="What the key may do: viewer ⊂ operator ⊂ admin.")],
    common: Common = DEFAULT_COMMON,
) -> None:
    """Create API key NAME with ROLE and print its secret: the only time it is shown."""
    result = call(common, lambda client: client.create_key(name, role))

    def human() -> None:
        print(f"key {result.name!r} created (role {result.role}); its secret, shown only this once:")
        print(result.secret)

    emit(common, result, human)


def key_list(*, common: Common = DEFAULT_COMMON) -> None:
    """The cluster's named API keys: name, role, when and by whom created, how long ago last used (kept
    to a minute); never a secret."""
    result = call(common, lambda client: client.list_keys())

    def human() -> None:
        from . import _output

        rows = (
            [
                _output._text(k.name),
                k.role,
                _output._when(k.created_at),
                _output._text(k.created_by),
                f"{_output._age(k.last_used)} ago" if k.last_used else "never",
            ]
            for k in result
        )
        _output.table("API keys", ["NAME", "ROLE", "CREATED", "BY", "LAST USED"], rows)

    emit(common, result, human)


def key_revoke(name: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Revoke API key NAME: every node refuses it from then on (no restart)."""
    call(common, lambda client: client.revoke_key(name))
    emit(common, {"revoked": name}, lambda: print(f"key {name!r} revoked"))
