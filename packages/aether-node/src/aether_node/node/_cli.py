"""`aether-node`: run a node; build the sample-slice index.

Exit codes: 0 ok, 1 failed, 2 bad arguments or configuration.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import trio
from cyclopts import App, Parameter

from aether_kv import KVError, UnavailableError, raise_open_files_limit

from ..contexts import loose_mode
from ..core._config import ConfigError, NodeConfig, load_config
from ..core._errors import exception_leaves
from ..routing._listen import check_free
from ._join import join_cluster
from ._node import ingress_context, listening_ports, load_api_keys, serve_node


def _warn_of_loose_modes(config: NodeConfig) -> None:
    """Say (stderr) which of the files holding the cluster's secret or API keys others may read: the
    secret makes the cluster's CA and opens every port (DEPLOY.md installs them 0600)."""
    held = [("the cluster secret", config.kv.secret_file), ("API keys", config.api_keys_file)]
    for what, path in held:
        mode = loose_mode(path) if path is not None else None
        if mode is not None:
            print(
                f"aether-node: warning: {path} holds {what} and is readable by others (mode {mode:o});"
                f" run `chmod 600 {path}`",
                file=sys.stderr,
                flush=True,
            )


def _check_join_address(join: str) -> None:
    """`--join` is a node's management address, HOST:PORT (a URL, or no port, failed later with a name
    lookup's or a refused connection's words)."""
    host, colon, port = join.rpartition(":")
    if "/" in join or not host or not colon or not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(
            f"--join {join}: expected HOST:PORT, a node's management address (as 10.0.0.11:9090; no"
            " scheme, no path)"
        )


app = App(name="aether-node", help="An Aether node: KV replica, slice runtime, ingress.")


@app.command
def run(
    *,
    config: Annotated[Path | None, Parameter(help="TOML configuration file (flags override it).")] = None,
    node_id: str | None = None,
    data_dir: Path | None = None,
    index: Annotated[str | None, Parameter(help="Wheel directory or PEP 503 simple index URL.")] = None,
    ingress: Annotated[str | None, Parameter(help="host:port of the app ingress (HTTP).")] = None,
    peer: Annotated[str | None, Parameter(help="host:port where other nodes call this node.")] = None,
    ingress_server: Annotated[
        Literal["trio", "fast"] | None,
        Parameter(help="The ingress's HTTP server: trio (in the node) or fast (a uvloop worker process)."),
    ] = None,
    management: Annotated[str | None, Parameter(help="host:port of the management API.")] = None,
    api_keys_file: Annotated[
        Path | None, Parameter(help="File of role:key entries (also AETHER_API_KEYS).")
    ] = None,
    dev_mode: Annotated[
        bool | None, Parameter(negative=(), help="Open management API when no keys are set (local use only).")
    ] = None,
    tls: Annotated[
        bool | None,
        Parameter(
            help="Mutual TLS from the cluster CA on the peer and KV ports, HTTPS on the management API"
            " (default: on, off with --dev-mode). --no-tls: plain text, for a network you trust."
        ),
    ] = None,
    tls_cert_lifetime: Annotated[
        float | None, Parameter(help="Seconds a node certificate is valid (renewed with a third left).")
    ] = None,
    tls_host: Annotated[
        tuple[str, ...], Parameter(help="Another name or address for the node certificate; repeat.")
    ] = (),
    ingress_cert: Annotated[
        Path | None, Parameter(help="Certificate (PEM) for HTTPS on the ingress.")
    ] = None,
    ingress_key: Annotated[Path | None, Parameter(help="Its private key (PEM).")] = None,
    metrics: Annotated[
        bool | None, Parameter(help="Record Prometheus metrics and serve them at /metrics (default on).")
    ] = None,
    memory_cgroups: Annotated[
        bool | None,
        Parameter(
            help="Hold a slice's memory_mib with a memory cgroup per instance where this host allows it"
            " (default on); --no-memory-cgroups: check each instance's memory every 2 s instead."
        ),
    ] = None,
    kv_raft: Annotated[str | None, Parameter(help="host:port of this node's Raft port.")] = None,
    kv_client: Annotated[str | None, Parameter(help="host:port of this node's KV client port.")] = None,
    kv_peer: Annotated[tuple[str, ...], Parameter(help="Raft address of another node; repeat.")] = (),
    kv_endpoint: Annotated[
        tuple[str, ...], Parameter(help="KV client address of another node; repeat.")
    ] = (),
    secret_file: Path | None = None,
    join: Annotated[
        str | None,
        Parameter(
            help="HOST:PORT of a node's management API: get the cluster secret there with --token (only"
            " if the secret file does not exist yet)."
        ),
    ] = None,
    token: Annotated[
        str | None, Parameter(env_var="AETHER_JOIN_TOKEN", help="A join token (`aether-node token create`).")
    ] = None,
    join_only: Annotated[
        bool,
        Parameter(
            negative=(),
            help="With --join and --token: write the secret file and the node's certificate, check the"
            " configuration, and exit 0 without serving; then start the node as usual (its systemd unit)."
            " A host whose secret file exists has joined already: nothing is sent, exit 0.",
        ),
    ] = False,
    lease_ttl: float | None = None,
    capacity_cpu: Annotated[
        float | None,
        Parameter(
            help="Cores this node offers the slices' resources (default: the CPUs it may run on, cut to its"
            " cgroups' quota)."
        ),
    ] = None,
    capacity_memory_mib: Annotated[
        int | None,
        Parameter(
            help="MiB of memory this node offers the slices' resources (default: the machine's, cut to its"
            " cgroups' limit)."
        ),
    ] = None,
    log_level: str = "INFO",
) -> None:
    """Run a node until SIGTERM/SIGINT, then shut down gracefully (with --join-only: join, then exit)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if log_level.upper() != "DEBUG":  # httpx says each request at INFO (a join printed its requests)
        logging.getLogger("httpx").setLevel(logging.WARNING)
    raise_open_files_limit()  # (its KV replica, slice templates and instances inherit it)
    kv: dict[str, Any] = {"raft": kv_raft, "client": kv_client, "secret_file": secret_file}
    if kv_peer:
        kv["peers"] = list(kv_peer)
    if kv_endpoint:
        kv["endpoints"] = list(kv_endpoint)
    overrides: dict[str, Any] = {
        "node_id": node_id,
        "data_dir": data_dir,
        "index": index,
        "ingress": ingress,
        "ingress_server": ingress_server,
        "peer": peer,
        "management": management,
        "api_keys_file": api_keys_file,
        "dev_mode": dev_mode,
        "tls": tls,
        "tls_cert_lifetime": tls_cert_lifetime,
        "tls_hosts": list(tls_host) if tls_host else None,
        "ingress_cert": ingress_cert,
        "ingress_key": ingress_key,
        "metrics": metrics,
        "memory_cgroups": memory_cgroups,
        "lease_ttl": lease_ttl,
        "kv": kv,
    }
    capacity = {"cpu": capacity_cpu, "memory_mib": capacity_memory_mib}
    if any(value is not None for value in capacity.values()):
        overrides["capacity"] = {key: value for key, value in capacity.items() if value is not None}
    try:
        node_config = load_config(config, overrides)
        if (join is None) != (token is None):
            raise ConfigError(
                "--join and --token (or AETHER_JOIN_TOKEN) go together (a join token is used at one node's"
                " address)"
            )
        if join_only and join is None:
            raise ConfigError("--join-only goes with --join HOST:PORT and --token (AETHER_JOIN_TOKEN)")
        if join is not None:
            _check_join_address(join)
        # Everything but the secret is checked before a join token is spent on this configuration
        load_api_keys(node_config)
        ingress_context(node_config)
        if join is not None:
            check_free(listening_ports(node_config))  # (also checked at start: a node runs elsewhere)
        joined = (
            join is not None and token is not None and join_cluster(join, token, node_config.kv.secret_file)
        )
        if joined:
            print(f"aether-node: joined through {join}: secret in {node_config.kv.secret_file}", flush=True)
        node_config.secret  # noqa: B018 (read it now: a bad secret file is a configuration error)
        _warn_of_loose_modes(node_config)
        if join_only:
            _joined_only(node_config, joined)
    except ConfigError as error:
        print(f"aether-node: error: {error.message}", file=sys.stderr)
        sys.exit(2)

    def startable() -> str | None:
        """Why a restart (this command line again, the configuration read again) would be refused now."""
        try:
            again = load_config(config, overrides)
            again.secret  # noqa: B018
            load_api_keys(again)
            ingress_context(again)
        except ConfigError as error:
            return "; ".join(error.message.splitlines())  # (one line: it is among the node's problems)
        return None

    async def main() -> None:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            started = False

            async def watch_signals() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        if shutdown.is_set() or not started:  # a second signal, or still starting: stop now
                            nursery.cancel_scope.cancel()
                            return
                        shutdown.set()

            async def run_node(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
                restart[0] = await serve_node(
                    node_config, shutdown=shutdown, startable=startable, task_status=task_status
                )
                nursery.cancel_scope.cancel()  # graceful shutdown done

            nursery.start_soon(watch_signals)
            info = await nursery.start(run_node)
            started = True
            scheme = "https" if node_config.ingress_cert else "http"
            print(f"aether-node {info.node_id} ready: ingress {scheme}://{info.ingress}", flush=True)

    restart = [False]  # `aether node restart`: after the graceful stop, start again as this process
    _tune_gc()
    refused: list[ConfigError] = []
    unavailable: list[KVError] = []
    try:
        trio.run(main)
    except* ConfigError as group:  # found only once the cluster could be asked (a twin's node id)
        refused.extend(e for e in exception_leaves(group) if isinstance(e, ConfigError))
    except* UnavailableError as group:  # no KV quorum at start: status 1, so a service manager retries
        unavailable.extend(e for e in exception_leaves(group) if isinstance(e, UnavailableError))
    if refused:
        print(f"aether-node: error: {refused[0].message}", file=sys.stderr)
        sys.exit(2)
    if unavailable:
        print(f"aether-node: error: {unavailable[0].message}", file=sys.stderr)
        sys.exit(1)
    if restart[0]:
        _start_again()


def _joined_only(config: NodeConfig, joined: bool) -> NoReturn:
    """`run --join-only`, once the secret is there and the configuration checked: the node's certificate
    (and `ca.pem`, the CA an operator's CLI needs) in `data_dir/tls/`, as a start would write them, then
    exit 0 without serving."""
    from ._certificates import NodeCertificates

    if config.tls_on:
        try:
            NodeCertificates(config, config.secret)
        except OSError as error:
            raise ConfigError(
                f"data_dir {config.data_dir}: cannot write the node certificate in {config.tls_dir}"
                f" ({error.strerror or error})"
            ) from None
        print(f"aether-node: certificate of {config.node_id} in {config.tls_dir}", flush=True)
    if not joined:
        print(f"aether-node: {config.kv.secret_file} exists: this host has joined already; nothing sent")
    print("aether-node: ready to start (e.g. `systemctl enable --now aether-node`); not serving", flush=True)
    sys.exit(0)


def _start_again() -> None:
    """`aether node restart`: replace this process by the same command line (`execv`): the same node id,
    configuration and data directory, and the same PID, so whatever supervises the node (the dev
    supervisor, systemd, a container runtime) sees it run on, however it was started. Every child (the
    KV replica, slice processes) has ended with the graceful stop."""
    print("aether-node: restarting", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _tune_gc() -> None:
    """Garbage collection for a long-running server, set once before it starts serving.

    A call in flight keeps its objects (task, frames, scope, buffers) alive while it waits for a slice, so
    with CPython's defaults the young collections (every 700 net allocations) kept finding live objects
    and promoting them, and full collections came every second or so, each walking every object the
    imports made: ~30 ms pauses (the p99 of a loaded ingress) and ~7 % of the node's CPU
    (benchmarks/README.md). So: the objects made so far (modules, classes, functions: never garbage)
    are frozen out of the collector's way, and the young generation is collected every 10,000 net
    allocations. Garbage cycles are still collected, just in larger, rarer passes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000)


@app.command
def build_index(
    *,
    source: Annotated[Path, Parameter(help="Directory of slice projects.")] = Path("sample-slices"),
    out: Annotated[Path, Parameter(help="Wheel directory to write (the embedded index).")] = Path(
        ".aether-index"
    ),
) -> None:
    """Build every slice project under SOURCE into wheels in OUT."""
    from ..dev._sample_index import build_sample_index

    if not source.is_dir():
        print(f"aether-node: error: --source {source} is not a directory", file=sys.stderr)
        sys.exit(2)
    try:
        wheels = build_sample_index(source, out, progress=lambda message: print(message, flush=True))
    except RuntimeError as error:
        print(f"aether-node: error: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"{len(wheels)} wheels in {out}")


token_app = App(name="token", help="Join tokens: how a new node gets the cluster secret.")
app.command(token_app)


@token_app.command(name="create")
def create_token(
    *,
    config: Annotated[
        Path | None, Parameter(help="This host's node configuration (its secret and KV).")
    ] = None,
    secret_file: Annotated[Path | None, Parameter(help="The cluster secret (without --config).")] = None,
    kv_endpoint: Annotated[
        tuple[str, ...], Parameter(help="KV client address of a replica (without --config); repeat.")
    ] = (),
    tls: Annotated[bool, Parameter(help="Whether the KV speaks TLS (without --config; default on).")] = True,
    ttl: Annotated[float, Parameter(help="Seconds the token may be used in (once).")] = 600.0,
) -> None:
    """Make a join token: a new node started with `--join HOST:PORT --token TOKEN` (HOST:PORT: any node's
    management API) gets the cluster secret with it, once, within TTL seconds. Prints the token."""
    from ._token import make_token

    try:
        if config is not None:
            node_config = load_config(config, {})
            secret, tls = node_config.secret, node_config.tls_on
            endpoints = [
                *([node_config.kv.client] if node_config.kv.client else []),
                *node_config.kv.endpoints,
            ]
        elif secret_file is not None and kv_endpoint:
            secret, endpoints = read_secret_file(secret_file), list(kv_endpoint)
        else:
            raise ConfigError("give --config, or --secret-file and --kv-endpoint")
        if not tls:
            raise ConfigError("join tokens need TLS: the secret is never handed out in plain text")
        if not 10 <= ttl <= 86_400:
            raise ConfigError(f"--ttl {ttl:g}: expected 10 to 86400 seconds")
    except ConfigError as error:
        print(f"aether-node: error: {error.message}", file=sys.stderr)
        sys.exit(2)
    try:
        text = trio.run(make_token, endpoints, secret, ttl)
    except KVError as error:
        print(
            f"aether-node: error: cannot record the token in the cluster's store: {error.message}",
            file=sys.stderr,
        )
        sys.exit(1)
    print(text)


def read_secret_file(path: Path) -> str:
    try:
        secret = path.read_text().strip()
    except OSError as error:
        raise ConfigError(f"--secret-file {path}: cannot read it ({error.strerror})") from None
    if len(secret) < 16:
        raise ConfigError(f"--secret-file {path}: the secret must be at least 16 characters")
    return secret


def main() -> None:
    app()
