"""Node configuration: one frozen record, parsed once at the entry point from a TOML file and flags.

Unknown keys and wrong types are errors that name the file, the line and the key path, one line each
(`_config_problems`). Relative paths in the file
are relative to the file's directory.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs

from ._config_problems import config_problems
from ._errors import NodeError
from ._host_capacity import host_capacity
from ._policies import HealthChecks, RestartPolicy, StepTimeouts
from ._records import Capacity


class ConfigError(NodeError):
    """The node configuration is invalid: names the file (or flag) and the key."""


@attrs.frozen(kw_only=True)
class KVSettings:
    """This node's KV replica (raft + client addresses) — or none: a node without `raft` is a pure client
    of the replicas named in `endpoints` (clusters keep 3 or 5 Raft voters, however many nodes they have)."""

    raft: str | None = None
    client: str | None = None
    peers: tuple[str, ...] = ()  # Raft addresses of the other replicas
    endpoints: tuple[str, ...] = ()  # client addresses of the other replicas (failover)
    secret_file: Path = Path("secret")

    @property
    def runs_replica(self) -> bool:
        return self.raft is not None


@attrs.frozen(kw_only=True)
class NodeConfig:
    node_id: str
    data_dir: Path
    index: str
    ingress: str
    peer: str  # host:port where other nodes call this node's instances
    kv: KVSettings
    management: str | None = None  # host:port of the management API (none: no API on this node)
    # the app ingress's HTTP server: "trio" (hypercorn in the node's loop) or "fast" (a uvloop+httptools
    # worker process that hands each call to the node over a Unix socket)
    ingress_server: Literal["trio", "fast"] = "trio"
    api_keys_file: Path | None = None  # lines or commas of role:key
    dev_mode: bool = False  # with no API keys, the management API is open (for a local dev cluster only)
    # Mutual TLS from the cluster CA on the peer and KV client ports, HTTPS on the management API. None:
    # on, unless dev_mode. Off (plain text) only when asked for by name (`--no-tls`) or in dev mode.
    tls: bool | None = None
    tls_cert_lifetime: float = 86_400.0  # seconds a node certificate is valid; renewed with a third left
    tls_hosts: tuple[str, ...] = ()  # more names or addresses for the node certificate (behind NAT, DNS)
    ingress_cert: Path | None = None  # the operator's certificate (PEM) for HTTPS on the app ingress
    ingress_key: Path | None = None  # and its key
    metrics: bool = True  # Prometheus metrics at /metrics on the management API (off: nothing recorded)
    # A slice's memory_mib held by the kernel: a memory cgroup per instance, where this host lets the node
    # make them (runtime/_memory_cgroup.py); off, or where it cannot: checked every 2 s (a soft limit).
    memory_cgroups: bool = True
    lease_ttl: float = 1.5
    capacity: Capacity = attrs.field(factory=Capacity)
    labels: dict[str, str] = attrs.field(factory=dict)
    timeouts: StepTimeouts = attrs.field(factory=StepTimeouts)
    restart: RestartPolicy = attrs.field(factory=RestartPolicy)
    health: HealthChecks = attrs.field(factory=HealthChecks)
    blueprint_history: int = 20  # revisions kept per blueprint (`aether blueprint history`)

    @property
    def advertised_ingress(self) -> str:
        """The ingress address the node tells the others (its registration, `cluster status`): the one it
        binds, but for a wildcard (`0.0.0.0:8080`, every interface), the peer address's host with the
        ingress's port (the wildcard was shown as is: an address no client could call)."""
        if not _is_wildcard(self.ingress):
            return self.ingress
        return f"{self.peer.rpartition(':')[0]}:{self.ingress.rpartition(':')[2]}"

    @property
    def tls_on(self) -> bool:
        return self.tls if self.tls is not None else not self.dev_mode

    @property
    def tls_dir(self) -> Path:
        """The CA certificate and this node's certificate and key (`aether_kv._tls` file names)."""
        return self.data_dir / "tls"

    @property
    def secret(self) -> str:
        try:
            secret = self.kv.secret_file.read_text().strip()
        except OSError as error:
            raise ConfigError(
                f"kv.secret_file {self.kv.secret_file}: cannot read it ({error.strerror})"
            ) from None
        if len(secret) < 16:
            raise ConfigError(
                f"kv.secret_file {self.kv.secret_file}: the secret must be at least 16 characters"
            )
        return secret


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(Path, lambda value, _: Path(value))


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        elif value is not None:
            merged[key] = value
    return merged


def _with_host_capacity(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with what `[capacity]` leaves out found on this host (`_host_capacity`); a `[capacity]` that
    is not a table is left for the structuring to refuse."""
    given = data.get("capacity", {})
    if not isinstance(given, dict) or {"cpu", "memory_mib"} <= set(given):
        return data
    host = host_capacity()
    return {**data, "capacity": {"cpu": host.cpu, "memory_mib": host.memory_mib, **given}}


def _is_wildcard(address: str) -> bool:
    """Whether `address` (host:port) binds every interface: no host, 0.0.0.0 or ::."""
    host = address.rpartition(":")[0].strip("[]")
    return host in ("", "0.0.0.0", "::")


def _is_loopback(address: str) -> bool:
    """Whether `address` (host:port) is this machine's loopback: 127.0.0.0/8, ::1 or localhost."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MAX_LEASE_TTL = 86_400.0  # the KV's own bound on a lease


def _check_values(config: NodeConfig, where: str) -> None:
    """What the types alone let through and would fail only later, with the node running: an id that
    cannot be a KV key segment or URL path segment, an address without a usable port (the bind fails
    deep in the start), a lease TTL the KV refuses (registration retried forever), a negative capacity."""
    if not _NODE_ID.fullmatch(config.node_id):
        raise ConfigError(
            f"{where}: node_id {config.node_id!r}: use 1 to 63 letters, digits, '.', '_' or '-', starting"
            " with a letter or digit"
        )
    addresses = [
        ("ingress", config.ingress),
        ("peer", config.peer),
        ("management", config.management),
        ("kv.raft", config.kv.raft),
        ("kv.client", config.kv.client),
        *(("kv.peers", address) for address in config.kv.peers),
        *(("kv.endpoints", address) for address in config.kv.endpoints),
    ]
    for key, address in addresses:
        if address is None:
            continue
        host, colon, port = address.rpartition(":")
        if (
            not colon
            or not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535)
            or any(character.isspace() for character in host)
        ):
            # (port 0, "any free port", is no address: the others would be told ":0" and reach nothing)
            raise ConfigError(f"{where}: {key} {address!r}: expected host:port with a port from 1 to 65535")
    if not (math.isfinite(config.lease_ttl) and 0 < config.lease_ttl <= MAX_LEASE_TTL):
        raise ConfigError(
            f"{where}: lease_ttl must be a number of seconds in (0, {MAX_LEASE_TTL:g}],"
            f" got {config.lease_ttl:g}"
        )
    for name, seconds in attrs.asdict(config.timeouts).items():
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"{where}: timeouts.{name} must be a number of seconds > 0, got {seconds:g}")
    health = config.health
    if not all(math.isfinite(s) and s > 0 for s in (health.interval, health.timeout)) or health.failures < 1:
        raise ConfigError(
            f"{where}: health must be interval > 0 and timeout > 0 seconds and failures >= 1,"
            f" got interval {health.interval:g}, timeout {health.timeout:g}, failures {health.failures}"
        )
    cpu, memory = config.capacity.cpu, config.capacity.memory_mib
    if not (math.isfinite(cpu) and cpu >= 0) or memory < 0:
        raise ConfigError(
            f"{where}: capacity must be cpu >= 0 cores and memory_mib >= 0,"
            f" got cpu {cpu:g}, memory_mib {memory}"
        )


def load_config(path: Path | None, overrides: dict[str, Any]) -> NodeConfig:
    """Read `path` (if any), apply `overrides` (from flags; None means "not given"), validate."""
    data: dict[str, Any] = {}
    where = "flags"
    text: str | None = None
    if path is not None:
        where = str(path)
        try:
            text = path.read_text()
            data = tomllib.loads(text)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read it ({error.strerror})") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from None
        base = path.parent
        for section, key in (
            (None, "data_dir"),
            (None, "index"),
            (None, "api_keys_file"),
            (None, "ingress_cert"),
            (None, "ingress_key"),
            ("kv", "secret_file"),
        ):
            holder = data.get(section, {}) if section else data
            value = holder.get(key) if isinstance(holder, dict) else None
            if isinstance(value, str) and "://" not in value and not Path(value).is_absolute():
                holder[key] = str(base / value)
    data = _merge(data, overrides)
    data = _with_host_capacity(data)
    try:
        config = _converter.structure(data, NodeConfig)
    except cattrs.BaseValidationError as error:
        raise ConfigError(
            "\n".join(config_problems(error, NodeConfig, data, text=text, source=where))
        ) from None
    _check_values(config, where)
    if (config.kv.raft is None) != (config.kv.client is None):
        raise ConfigError(f"{where}: kv.raft and kv.client go together (a replica needs both)")
    for key, address in (
        ("peer", config.peer),
        ("management", config.management),
        ("kv.raft", config.kv.raft),
        ("kv.client", config.kv.client),
    ):
        if address is not None and _is_wildcard(address):
            raise ConfigError(
                f"{where}: {key} {address}: a wildcard address cannot be told to the other nodes (they would"
                " call themselves); give this host's own address, which the node also binds"
            )
    # One machine's cluster (`aether dev up`) is loopback everywhere; a loopback address beside another
    # host's is one the other hosts would dial on themselves.
    elsewhere = next((a for a in (*config.kv.peers, *config.kv.endpoints) if not _is_loopback(a)), None)
    for key, address in (("peer", config.peer), ("kv.raft", config.kv.raft), ("kv.client", config.kv.client)):
        if elsewhere is not None and address is not None and _is_loopback(address):
            raise ConfigError(
                f"{where}: {key} {address}: a loopback address, but the other hosts (as {elsewhere}) would"
                " call it, that is themselves; give this host's own address, which the node also binds"
            )
    if config.blueprint_history < 1:
        raise ConfigError(f"{where}: blueprint_history must be at least 1, got {config.blueprint_history}")
    if config.kv.raft is None and not config.kv.endpoints:
        raise ConfigError(f"{where}: a node without its own KV replica (kv.raft) needs kv.endpoints")
    if config.tls_cert_lifetime < 10:
        raise ConfigError(
            f"{where}: tls_cert_lifetime must be at least 10 s, got {config.tls_cert_lifetime:g}"
        )
    if (config.ingress_cert is None) != (config.ingress_key is None):
        raise ConfigError(
            f"{where}: ingress_cert and ingress_key go together (HTTPS on the ingress needs both)"
        )
    # Absolute paths: slice hosts run with their virtualenv as working directory.
    index = config.index if "://" in config.index else str(Path(config.index).resolve())
    kv = attrs.evolve(config.kv, secret_file=config.kv.secret_file.resolve())
    api_keys_file = config.api_keys_file.resolve() if config.api_keys_file else None
    return attrs.evolve(
        config,
        data_dir=config.data_dir.resolve(),
        index=index,
        kv=kv,
        api_keys_file=api_keys_file,
        ingress_cert=config.ingress_cert.resolve() if config.ingress_cert else None,
        ingress_key=config.ingress_key.resolve() if config.ingress_key else None,
    )
