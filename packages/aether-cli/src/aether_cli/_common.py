"""What every `aether` command shares: cluster, key and output options, which cluster a command talks to
(flags, then environment variables, then a context, then `./.aether-dev/`), the API client with its errors
turned into sentences and exit codes, and stdin for `-`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from cyclopts import Parameter

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 0, 1, 2, 3
# A status command answered and what it shows is not well: the cluster unhealthy, a blueprint or slice
# not converged. Apart from 1 so that a script tells "not well" from "could not ask" (1, 2, 3).
EXIT_UNHEALTHY = 4
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a process ended by SIGINT
T = TypeVar("T")
# a path, or `-` for stdin (stdout for `cluster backup`; cyclopts takes a lone `-` for an option unless told)
InputFile = Annotated[Path, Parameter(allow_leading_hyphen=True)]


def _whole_number(type_: Any, tokens: Sequence[Any]) -> int:
    """A count, a revision, a limit: digits alone. cyclopts reads `1.5` as 2 and `0x3` as 3 for an `int`,
    and `aether blueprint rollback demo --to 2.5` rolled back to revision 2: a typo, refused instead."""
    from cyclopts.exceptions import CoercionError

    token = tokens[0]
    if not re.fullmatch(r"[+-]?[0-9]+", token.value.strip()):
        raise CoercionError(token=token, target_type=int)
    return int(token.value)


def _finite_number(type_: Any, tokens: Sequence[Any]) -> float:
    """A target or a delay: a number, not `nan` or `inf` (which reached the cluster as a JSON error)."""
    from cyclopts.exceptions import CoercionError

    token = tokens[0]
    try:
        value = float(token.value)
    except ValueError:
        raise CoercionError(token=token, target_type=float) from None
    if not math.isfinite(value):
        raise CoercionError(token=token, target_type=float)
    return value


# every integer the CLI takes, and every float it does not check itself (the timeouts say their own range)
WholeNumber = Annotated[int, Parameter(converter=_whole_number)]
FiniteNumber = Annotated[float, Parameter(converter=_finite_number)]

# The exit code of each error kind (`aether_node.client.ErrorKind`; a test checks every kind is here).
EXIT_CODE_BY_KIND = {"bad_request": EXIT_BAD_INPUT, "unreachable": EXIT_UNREACHABLE} | dict.fromkeys((
    "unauthenticated", "forbidden", "not_found", "no_endpoint", "conflict", "raised", "bad_result",
    "internal", "unavailable", "gone", "timeout", "no_answer", "error",
), EXIT_FAILED)  # fmt: skip


@Parameter(name="*")
@dataclasses.dataclass
class Common:
    cluster: Annotated[
        str | None,
        Parameter(
            name=("--cluster", "-c"),
            env_var="AETHER_CLUSTER",
            help="Management URL(s) of any node(s), comma-separated. Wins over the context.",
        ),
    ] = None
    api_key: Annotated[
        str | None,
        Parameter(
            name=("--api-key", "-k"),
            env_var="AETHER_API_KEY",
            help="API key (role viewer, operator or admin). Wins over the context's key.",
        ),
    ] = None
    context: Annotated[
        str | None,
        Parameter(
            name="--context",
            env_var="AETHER_CONTEXT",
            help="Use this context (`aether context list`) instead of the current one.",
        ),
    ] = None
    ca_file: Annotated[
        Path | None,
        Parameter(
            name="--ca-file",
            env_var="AETHER_CA_FILE",
            help="The cluster CA certificate (PEM) to check the nodes' HTTPS with. Wins over the context's.",
        ),
    ] = None
    output: Annotated[
        Literal["table", "wide", "json"],
        Parameter(
            name=("--output", "-o"),
            help="table (for people), wide (tables with more columns) or json (for scripts).",
        ),
    ] = "table"
    json: Annotated[
        bool, Parameter(name=("--json", "-j"), negative=(), help="Print JSON for scripts (= -o json).")
    ] = False

    def __post_init__(self) -> None:
        if self.json:
            self.output = "json"
        self.json = self.output == "json"

    @property
    def wide(self) -> bool:
        return self.output == "wide"


def visible(text: str, *, one_line: bool = False) -> str:
    """`text` with its control characters written as escapes (`aether_node.client.visible`)."""
    from aether_node.client import visible as escaped

    return escaped(text, one_line=one_line)


def fail(code: int, message: str) -> NoReturn:
    print(f"aether: error: {visible(message)}", file=sys.stderr)
    sys.exit(code)


def check_wait_timeout(timeout: float | None, wait: bool, *, default: float) -> float:
    """The seconds a --wait may take: `default` unless --timeout says. Refuses (exit 2) a --timeout a
    wait cannot have, or one given without --wait (it would do nothing): checked before anything is
    sent, so that a bad one changes nothing on the cluster."""
    if timeout is None:
        return default
    if not wait:
        fail(EXIT_BAD_INPUT, "--timeout goes with --wait (without it, nothing is waited for)")
    if not (timeout > 0 and math.isfinite(timeout)):
        fail(EXIT_BAD_INPUT, f"--timeout must be a number of seconds > 0, got {timeout:g}")
    return timeout


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 node`, `3 nodes`, `0 nodes`; `many` for an irregular plural."""
    return f"{count} {word if count == 1 else many or word + 's'}"


@dataclasses.dataclass(frozen=True)
class Target:
    """The cluster a command talks to, the key it sends, and where both came from (for messages)."""

    urls: list[str]
    api_key: str | None
    source: str
    ca_cert: str | None = None  # PEM of the cluster CA


def read_ca_file(path: Path) -> str:
    """The PEM text of a CA certificate file; a clear error (exit 2) if it is not one: unreadable, no
    certificate block, or a block that does not parse as a certificate (a cut or mangled copy)."""
    import ssl

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        fail(
            EXIT_BAD_INPUT, f"--ca-file {path}: cannot read it ({getattr(error, 'strerror', None) or error})"
        )
    if "-----BEGIN CERTIFICATE-----" not in text:
        fail(EXIT_BAD_INPUT, f"--ca-file {path}: not a PEM certificate (no -----BEGIN CERTIFICATE-----)")
    try:  # as the client will load it: what passes here, every request can use
        ssl.create_default_context(cadata=text)
    except (ssl.SSLError, ValueError):  # (OpenSSL's words add nothing: "no start line", "bad base64")
        fail(
            EXIT_BAD_INPUT,
            f"--ca-file {path}: its -----BEGIN CERTIFICATE----- block does not parse as a certificate"
            " (cut or mangled?): copy the whole ca.pem from a node's data_dir/tls/",
        )
    return text


def target(common: Common, environ: dict[str, str] | os._Environ[str] | None = None) -> Target:
    """--cluster/AETHER_CLUSTER (with only --api-key/AETHER_API_KEY: a context's key is never sent to
    another cluster), else the context named by --context/AETHER_CONTEXT or the current one (its key unless
    --api-key/AETHER_API_KEY), else the dev cluster recorded in ./.aether-dev/."""
    from aether_node.client import check_url, parse_urls

    environ = os.environ if environ is None else environ
    ca_cert = read_ca_file(common.ca_file) if common.ca_file else None
    if common.cluster:
        urls = parse_urls(common.cluster)
        if not urls:
            fail(EXIT_BAD_INPUT, f"--cluster (or AETHER_CLUSTER) {common.cluster!r}: no URL in it")
        try:  # as given, before a request's path is added to it
            for url in urls:
                check_url(url)
        except ValueError as error:
            fail(EXIT_BAD_INPUT, f"--cluster (or AETHER_CLUSTER): {error}")
        return Target(urls, common.api_key, "--cluster", ca_cert)
    from aether_node import contexts  # here: a command given its cluster reads no config file

    try:
        found = contexts.default_target(environ, context=common.context)
    except contexts.ConfigError as error:
        fail(EXIT_BAD_INPUT, str(error))
    if found is None:
        fail(
            EXIT_UNREACHABLE,
            "no cluster given: pass --cluster URL (or AETHER_CLUSTER), add a context"
            " (`aether context add NAME URL`), or start one with `aether dev up`",
        )
    mode = contexts.loose_mode(found.config_path) if found.api_key and found.config_path else None
    if mode is not None:
        print(
            f"aether: warning: {found.config_path} holds API keys and is readable by others (mode {mode:o});"
            f" run `chmod 600 {found.config_path}`",
            file=sys.stderr,
        )
    return Target(list(found.urls), common.api_key or found.api_key, found.source, ca_cert or found.ca_cert)


def explain(error: Exception, where: Target) -> tuple[int, str]:
    """An error from the API client as (exit code, sentence for the operator)."""
    from aether_node.client import ApiError, ClusterUnreachableError, NoAnswerError

    if isinstance(error, ClusterUnreachableError):
        return EXIT_UNREACHABLE, str(error)
    if isinstance(error, NoAnswerError):  # a node got the request and did not answer: the outcome is unknown
        return EXIT_FAILED, str(error)
    if isinstance(error, json.JSONDecodeError) or (
        isinstance(error, ApiError) and error.kind == "error" and error.status in (404, 405)
    ):
        # the API's own errors are JSON with a kind; a bare "Not Found" or non-JSON is another server
        detail = f"HTTP {error.status} {error.message!r}" if isinstance(error, ApiError) else "not JSON"
        return EXIT_BAD_INPUT, (
            f"{', '.join(where.urls)} ({where.source}) answers ({detail}) but is not an Aether management"
            " API (is it the ingress port?)"
        )
    if isinstance(error, ValueError):  # a malformed --cluster URL or name
        return EXIT_BAD_INPUT, str(error)
    if isinstance(error, ApiError):
        if error.status == 401:
            if where.api_key:
                return EXIT_FAILED, (
                    f"the API key was refused by {where.source}: it is not one of the cluster's keys"
                    " (check --api-key, AETHER_API_KEY or the context's key)"
                )
            return EXIT_FAILED, (
                f"no API key given: the cluster ({where.source}) needs one; pass --api-key KEY"
                " (or AETHER_API_KEY), or add it to the context (`aether context add NAME URL --api-key -`)"
            )
        return EXIT_CODE_BY_KIND.get(
            error.kind, EXIT_BAD_INPUT if error.status == 400 else EXIT_FAILED
        ), error.message
    raise error


def client_for(common: Common, where: Target) -> Any:
    """The API client of `where`, which warns on stderr (once) if a node says it checks no API keys
    while a key is sent: a mistyped key, or a keyed context pointed at an open dev cluster, would work
    and go unnoticed until the cluster it was meant for refused it."""
    from aether_node.client import ApiClient

    given = "given with --api-key (or AETHER_API_KEY)" if common.api_key else f"of {where.source}"

    def unchecked(url: str) -> None:
        print(
            f"aether: warning: {url} checks no API keys (open: a dev-mode cluster with none made);"
            f" the key {given} was not checked (mistyped, or meant for another cluster?)",
            file=sys.stderr,
            flush=True,
        )

    return ApiClient(where.urls, api_key=where.api_key, ca_cert=where.ca_cert, on_unchecked_key=unchecked)


def call(common: Common, operation: Callable[[Any], T]) -> T:
    """Run `operation(client)`; turn API errors into messages and exit codes."""
    from aether_node.client import ApiError, ClusterUnreachableError, NoAnswerError

    where = target(common)
    with client_for(common, where) as client:
        try:
            return operation(client)
        except (ClusterUnreachableError, NoAnswerError, ValueError, ApiError) as error:
            fail(*explain(error, where))


def emit(common: Common, data: Any, human: Callable[[], None]) -> None:
    """JSON for scripts, or the human rendering."""
    if common.json:
        from aether_node.client import to_json

        print(json.dumps(to_json(data), indent=2, sort_keys=True))
    else:
        human()


def read_input(path: Path, what: str) -> tuple[str, str]:
    """The text of `path`, or of stdin for `-`, and a name for it in messages; bad input exits 2."""
    if str(path) == "-":
        try:  # bytes, decoded here: stdin's own decoding may let bad bytes through as surrogates (C locale)
            return sys.stdin.buffer.read().decode("utf-8"), "<stdin>"
        except UnicodeDecodeError as error:
            fail(EXIT_BAD_INPUT, f"<stdin>: not UTF-8 text (byte {error.start}): {what}")
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as error:
        fail(EXIT_BAD_INPUT, f"{path}: cannot read it ({error.strerror})")
    except UnicodeDecodeError as error:
        fail(EXIT_BAD_INPUT, f"{path}: not UTF-8 text (byte {error.start}): {what}")
