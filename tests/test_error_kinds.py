"""One error vocabulary (docs/ARCHITECTURE.md, "Errors"): every `ErrorKind` maps to an HTTP status in the
node, to an exit code in the CLI and to an MCP error in the MCP service, and no table names a kind that
does not exist."""

from __future__ import annotations

import pytest
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from aether_cli._common import EXIT_BAD_INPUT, EXIT_CODE_BY_KIND, EXIT_FAILED, EXIT_UNREACHABLE
from aether_mcp._errors import RESOURCE_ERROR_BY_KIND
from aether_node.client import HTTP_STATUS, ApiError, ClusterUnreachableError, ErrorKind, NoAnswerError

TABLES = {
    "HTTP_STATUS (aether_node.client)": HTTP_STATUS,
    "EXIT_CODE_BY_KIND (aether_cli/_common.py)": EXIT_CODE_BY_KIND,
    "RESOURCE_ERROR_BY_KIND (aether_mcp/_errors.py)": RESOURCE_ERROR_BY_KIND,
}
CLIENT_ONLY = {ErrorKind.UNREACHABLE, ErrorKind.NO_ANSWER, ErrorKind.ERROR}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_kind_maps_in_every_table_and_nothing_else_does(name: str) -> None:
    table = TABLES[name]
    missing = [kind.value for kind in ErrorKind if kind not in table]
    unknown = [key for key in table if key not in {kind.value for kind in ErrorKind}]
    assert not missing, f"{name} has no entry for {missing}"
    assert not unknown, f"{name} maps kinds that do not exist: {unknown}"


def test_wire_names_are_the_lower_case_member_names() -> None:
    assert [kind.value for kind in ErrorKind] == [kind.name.lower() for kind in ErrorKind]


def test_a_node_answers_every_kind_but_the_clients_own_with_an_error_status() -> None:
    for kind in ErrorKind:
        status = HTTP_STATUS[kind]
        if kind in CLIENT_ONLY:
            assert status is None, kind
        else:
            assert status is not None and 400 <= status < 600, kind


def test_exit_codes_keep_their_meaning() -> None:
    """2 for the caller's bad input (what the API answers with 400), 3 when no node was reached, else 1."""
    for kind in ErrorKind:
        expected = (
            EXIT_BAD_INPUT
            if HTTP_STATUS[kind] == 400
            else EXIT_UNREACHABLE
            if kind is ErrorKind.UNREACHABLE
            else EXIT_FAILED
        )
        assert EXIT_CODE_BY_KIND[kind] == expected, kind


def test_only_what_does_not_exist_is_an_mcp_resource_not_found() -> None:
    not_found = {kind for kind, error in RESOURCE_ERROR_BY_KIND.items() if error is ResourceNotFoundError}
    assert not_found == {ErrorKind.NOT_FOUND}
    assert all(issubclass(error, ResourceError) for error in RESOURCE_ERROR_BY_KIND.values())


def test_the_clients_errors_carry_their_kinds() -> None:
    assert ClusterUnreachableError("x").kind is ErrorKind.UNREACHABLE
    assert NoAnswerError("x").kind is ErrorKind.NO_ANSWER
    assert ApiError(400, "bad_request", "x").kind == ErrorKind.BAD_REQUEST
