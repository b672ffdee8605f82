"""`aether-kv`: run a replica, run a local cluster, and small operator subcommands.

Exit codes: 0 ok, 1 the operation failed, 2 bad arguments or input, 3 cannot reach the cluster.
Client subcommands find the cluster through --endpoints/--secret-file, the AETHER_KV_ENDPOINTS and
AETHER_KV_SECRET_FILE environment variables, or the cluster.json of a running `aether-kv local`.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import trio
from cyclopts import App, Parameter

from ._client import KVClient, open_client
from ._errors import ConnectionLostError, InvalidRequestError, KVError, TLSError
from ._local import CLUSTER_FILE, running_local_cluster
from ._open_files import raise_open_files_limit
from ._raft import HEARTBEAT_PERIOD
from ._records import Event, KeyValue
from ._serve import ServeConfig, read_secret, serve_until_signalled, split_address
from ._serve import exit_with_parent as exit_with_parent_process
from ._tls import ReloadingTLS
from ._wire import encode

DEFAULT_LOCAL_DIR = Path(".aether-kv")

app = App(name="aether-kv", help="Aether's consensus key-value store (Raft on pysyncobj).")
member_app = App(name="member", help="Add or remove a replica while the cluster runs.")
app.command(member_app)

Endpoints = Annotated[
    str | None,
    Parameter(env_var="AETHER_KV_ENDPOINTS", help="Comma-separated client addresses host:port."),
]
SecretFile = Annotated[
    Path | None, Parameter(env_var="AETHER_KV_SECRET_FILE", help="File holding the cluster secret.")
]
ClientTLSDir = Annotated[
    Path | None,
    Parameter(
        name="--tls-dir",
        env_var="AETHER_KV_TLS_DIR",
        help="Speak mutual TLS to the replicas (a TLS cluster: the default of aether-node): a directory"
        " with the cluster CA and a certificate of it, as a node's data_dir/tls.",
    ),
]
AsJson = Annotated[bool, Parameter(name="--json", negative=(), help="Print JSON for scripts.")]


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _exit_code(error: KVError) -> int:
    if isinstance(error, (InvalidRequestError, TLSError)):
        return 2
    if isinstance(error, ConnectionLostError):
        return 3
    return 1


def _sole(error: BaseException) -> BaseException:
    """The one error inside nested groups of one (a nursery's), else `error` itself."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _run(main: Callable[[], Awaitable[int | None]]) -> None:
    try:
        try:
            code = trio.run(main) or 0
        except BaseExceptionGroup as group:  # (one error in a nursery: said as if raised alone)
            raise _sole(group) from None
    except KVError as error:
        print(f"aether-kv: error: {error.message}", file=sys.stderr)
        sys.exit(_exit_code(error))
    except _Exit as error:
        print(f"aether-kv: error: {error.message}", file=sys.stderr)
        sys.exit(error.code)

    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


def _cluster(endpoints: str | None, secret_file: Path | None) -> tuple[list[str], str]:
    local = DEFAULT_LOCAL_DIR / CLUSTER_FILE
    if endpoints is None and secret_file is None and local.exists():
        info = json.loads(local.read_text())
        return list(info["endpoints"]), read_secret(Path(info["secret_file"]))
    if endpoints is None:
        raise _Exit(
            2, "no cluster given: pass --endpoints (or AETHER_KV_ENDPOINTS), or start `aether-kv local`"
        )
    if secret_file is None:
        raise _Exit(2, "no secret given: pass --secret-file (or AETHER_KV_SECRET_FILE)")
    addresses = [a.strip() for a in endpoints.split(",") if a.strip()]
    for address in addresses:
        split_address(address, "--endpoints")
    return addresses, read_secret(secret_file)


def _client_command(
    endpoints: str | None,
    secret_file: Path | None,
    body: Callable[[KVClient], Awaitable[int | None]],
    tls_dir: Path | None,
) -> None:
    async def main() -> int | None:
        addresses, secret = _cluster(endpoints, secret_file)
        tls = ReloadingTLS(tls_dir) if tls_dir is not None else None
        async with open_client(addresses, secret, tls=tls) as client:
            return await body(client)

    _run(main)


def _show_kv(kv: KeyValue) -> str:
    return f"{kv.key} = {kv.value.decode('utf-8', 'backslashreplace')}"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# ---------------------------------------------------------------- serve and local


def _tune_gc() -> None:
    """Garbage collection for a replica, set once before it serves. With CPython's defaults a busy replica
    collected its young objects every 700 net allocations (each write's command, records and events) and
    now and then walked every object it holds: ~22 % of the Raft thread's CPU while a node wrote 300
    instances (`perf`, benchmarks/README.md). The objects the imports made are frozen out of the
    collector's way, and the young generation is collected every 10,000 net allocations; garbage cycles
    are still collected, in larger, rarer passes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000)


@app.command
def serve(
    *,
    id: Annotated[str, Parameter(help="Name of this replica (for logs).")],
    data_dir: Annotated[Path, Parameter(help="Directory for the Raft journal and snapshots.")],
    raft: Annotated[str, Parameter(help="host:port this replica's Raft port binds to.")],
    client: Annotated[str, Parameter(help="host:port of the client-protocol port.")],
    secret_file: Annotated[Path, Parameter(help="File holding the cluster secret (16+ characters).")],
    peer: Annotated[tuple[str, ...], Parameter(help="Raft address of another replica; repeat.")] = (),
    append_entries_period: float = HEARTBEAT_PERIOD,
    election_min: float = 0.5,
    election_max: float = 1.5,
    log_compaction_entries: Annotated[
        int, Parameter(help="Snapshot the state and restart the journal after this many log entries.")
    ] = ServeConfig.__attrs_attrs__.log_compaction_entries.default,  # type: ignore[attr-defined]
    tls_dir: Annotated[
        Path | None,
        Parameter(
            help="Speak mutual TLS to clients and Raft peers: the directory holding ca.pem and cert.pem"
            " (certificate and key, naming the hosts of --raft and --client; re-loaded when replaced)."
        ),
    ] = None,
    log_level: str = "INFO",
    exit_with_parent: Annotated[
        bool, Parameter(negative=(), help="Die when the parent process dies (for a supervising node).")
    ] = False,
    parent_silence: Annotated[
        float | None,
        Parameter(
            help="Lead only while the parent process writes to this replica's stdin at least this often"
            " (seconds; a supervising node's heartbeat). Unset: lead regardless."
        ),
    ] = None,
) -> None:
    """Run one replica until SIGTERM or SIGINT."""
    if exit_with_parent:
        exit_with_parent_process()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    raise_open_files_limit()
    _tune_gc()

    async def main() -> None:
        split_address(raft, "--raft")
        split_address(client, "--client")
        for address in peer:
            split_address(address, "--peer")
        if log_compaction_entries < 2:
            raise InvalidRequestError(f"--log-compaction-entries: at least 2, got {log_compaction_entries}")
        if parent_silence is not None and not (math.isfinite(parent_silence) and parent_silence > 0):
            raise InvalidRequestError(f"--parent-silence: a number of seconds > 0, got {parent_silence:g}")
        config = ServeConfig(
            replica_id=id,
            data_dir=data_dir,
            raft_address=raft,
            client_address=client,
            peers=peer,
            secret=read_secret(secret_file),
            append_entries_period=append_entries_period,
            election_min=election_min,
            election_max=election_max,
            log_compaction_entries=log_compaction_entries,
            tls_dir=tls_dir,
            parent_silence=parent_silence,
        )
        await serve_until_signalled(config)

    _run(main)


@app.command
def local(
    *,
    replicas: Annotated[int, Parameter(help="How many replicas.")] = 3,
    directory: Annotated[Path, Parameter(help="Where data, logs and the secret live.")] = DEFAULT_LOCAL_DIR,
) -> None:
    """Run a local cluster on 127.0.0.1 in the foreground until Ctrl-C (data is kept for next time)."""

    async def main() -> None:
        if replicas < 1:
            raise _Exit(2, f"--replicas must be at least 1, got {replicas}")
        with trio.open_signal_receiver(2, 15) as signals:  # SIGINT, SIGTERM
            async with running_local_cluster(directory, replicas, progress=print) as cluster:
                print(f"\naether-kv: {replicas} replicas ready; data in {directory}/")
                print(f"  endpoints:   {','.join(cluster.endpoints)}")
                print(f"  secret file: {cluster.secret_file}")
                print("Try, in another terminal of this directory:")
                print("  uv run aether-kv put greeting hello")
                print("  uv run aether-kv get greeting")
                print("  uv run aether-kv watch greet")
                print("  uv run aether-kv status")
                print("Ctrl-C stops the cluster.", flush=True)
                async for _ in signals:
                    print("\naether-kv: stopping replicas...", flush=True)
                    break

    _run(main)


# ---------------------------------------------------------------- client subcommands


@app.command
def status(
    *,
    endpoints: Endpoints = None,
    secret_file: SecretFile = None,
    tls_dir: ClientTLSDir = None,
    json_output: AsJson = False,
) -> None:
    """Leader, term, commit index, revision and members, as one replica sees them."""

    async def body(client: KVClient) -> None:
        state = await client.status()
        if json_output:
            _print_json(encode(state))
            return
        print(f"replica:       {state.self_address}{' (leader)' if state.is_leader else ''}")
        print(f"leader:        {state.leader or '(none)'}   quorum: {'yes' if state.has_quorum else 'NO'}")
        print(f"term:          {state.term}")
        print(f"commit index:  {state.commit_index} (applied {state.last_applied})")
        print(f"revision:      {state.revision} (history from {state.compact_revision + 1})")
        print(f"keys / leases: {state.keys} / {state.leases}")
        print(f"served:        {state.clients} client connections, {state.watches} watches")
        print("members:")
        for m in state.members:
            print(f"  {m.raft_address}  {'connected' if m.connected else 'DISCONNECTED'}")

    _client_command(endpoints, secret_file, body, tls_dir)


@app.command
def put(
    key: str,
    value: str,
    *,
    lease: int = 0,
    endpoints: Endpoints = None,
    secret_file: SecretFile = None,
    tls_dir: ClientTLSDir = None,
    json_output: AsJson = False,
) -> None:
    """Write VALUE (text) under KEY."""

    async def body(client: KVClient) -> None:
        result = await client.put(key, value.encode(), lease=lease)
        print(json.dumps(encode(result)) if json_output else f"OK revision {result.revision}")

    _client_command(endpoints, secret_file, body, tls_dir)


@app.command
def get(
    key: str,
    *,
    linearizable: bool = True,
    endpoints: Endpoints = None,
    secret_file: SecretFile = None,
    tls_dir: ClientTLSDir = None,
    json_output: AsJson = False,
) -> int | None:
    """Read KEY (linearizable by default). Exit code 1 if it does not exist."""

    async def body(client: KVClient) -> int:
        result = await client.get_with_revision(key, linearizable=linearizable)
        if json_output:
            _print_json(encode(result))
        elif result.kv is not None:
            print(result.kv.value.decode("utf-8", "backslashreplace"))
        else:
            print(f"aether-kv: {key!r} not found (revision {result.revision})", file=sys.stderr)
        return 0 if result.kv is not None else 1

    _client_command(endpoints, secret_file, body, tls_dir)
    return None


@app.command(name="range")
def range_(
    prefix: str = "",
    *,
    limit: int = 0,
    endpoints: Endpoints = None,
    secret_file: SecretFile = None,
    tls_dir: ClientTLSDir = None,
    json_output: AsJson = False,
) -> None:
    """List keys under PREFIX."""

    async def body(client: KVClient) -> None:
        result = await client.range(prefix, limit=limit, linearizable=True)
        if json_output:
            _print_json(encode(result))
            return
        for kv in result.kvs:
            print(_show_kv(kv))
        more = " (more: raise --limit)" if result.more else ""
        print(f"-- {len(result.kvs)} keys at revision {result.revision}{more}", file=sys.stderr)

    _client_command(endpoints, secret_file, body, tls_dir)


@app.command
def delete(
    key: str,
    *,
    prefix: bool = False,
    endpoints: Endpoints = None,
    secret_file: SecretFile = None,
    tls_dir: ClientTLSDir = None,
    json_output: AsJson = False,
) -> None:
    """Delete KEY (or, with --prefix, every key under it)."""

    async def body(client: KVClient) -> None:
        result = await (client.delete_prefix(key) if prefix else client.delete(key))
        print(
            json.dumps(encode(result))
            if json_output
            else f"deleted {result.deleted} at revision {result.revision}"
        )

    _client_command(endpoints, secret_file, body, tls_dir)


@app.command
def watch(
    prefix: str = "",
    *,
    from_revision: int = 0,
    endpoints: Endpoints = None,
    secret_file: SecretFile = None,
    tls_dir: ClientTLSDir = None,
    json_output: AsJson = False,
) -> None:
    """Stream changes under PREFIX (from --from-revision, default: from now) until Ctrl-C."""

    async def body(client: KVClient) -> None:
        stream = client.watch(prefix, from_revision)
        print(f"watching {prefix!r}...", file=sys.stderr, flush=True)
        async for events in stream:
            for event in events:
                print(json.dumps(encode(event)) if json_output else _show_event(event), flush=True)

    _client_command(endpoints, secret_file, body, tls_dir)


def _show_event(event: Event) -> str:
    if event.kind == "delete":
        return f"[{event.revision}] DELETE {event.kv.key}"
    return f"[{event.revision}] PUT    {_show_kv(event.kv)}"


@member_app.command
def add(
    raft_address: str,
    *,
    endpoints: Endpoints = None,
    secret_file: SecretFile = None,
    tls_dir: ClientTLSDir = None,
) -> None:
    """Add the replica at RAFT_ADDRESS (start it first, with every current member as --peer)."""
    split_address(raft_address, "RAFT_ADDRESS")
    _client_command(endpoints, secret_file, lambda client: client.add_member(raft_address), tls_dir)


@member_app.command
def remove(
    raft_address: str,
    *,
    endpoints: Endpoints = None,
    secret_file: SecretFile = None,
    tls_dir: ClientTLSDir = None,
) -> None:
    """Remove the replica at RAFT_ADDRESS from the cluster."""
    split_address(raft_address, "RAFT_ADDRESS")
    _client_command(endpoints, secret_file, lambda client: client.remove_member(raft_address), tls_dir)


def main() -> None:
    try:
        app()
    except InvalidRequestError as error:
        print(f"aether-kv: error: {error.message}", file=sys.stderr)
        sys.exit(2)
