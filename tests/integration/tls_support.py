"""Clients of every kind for the TLS tests (test_tls_cluster.py on 127.0.0.1, test_tls_netns.py across
network namespaces): certificate files a client may present (the cluster CA's, another cluster's, an
expired one, none), the probes that say whether a port serves such a client (the peer and KV ports'
first frame, the Raft port's answer to a status request, the KV client's own view, the management API's
answer, the serial of the certificate a port presents), a steady load of calls and KV writes (renewal
must fail none), and `aether-node token create`.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
from collections.abc import Sequence
from pathlib import Path

import attrs
import cli_support
import httpx
import trio
from cryptography import x509
from raft_probe import raft_answer, raft_frame

from aether_kv import (
    CERT_FILE,
    KVError,
    ReloadingTLS,
    client_identity,
    cluster_ca,
    issue,
    open_client,
    write_identity,
)

FOREIGN_SECRET = "another cluster's secret, 32 chars"  # its CA is not the cluster's
IDENTITIES = ("good", "other", "expired", "none")


def forge_identities(secret: str, root: Path) -> dict[str, Path | None]:
    """Certificate files in `root`: `good` (the cluster CA's), `other` (another cluster's CA), `expired`
    (the cluster CA's, expired a day ago), `none` (no certificate at all)."""
    client_identity(secret, root / "good")
    client_identity(FOREIGN_SECRET, root / "other")
    ca = cluster_ca(secret)
    a_day = datetime.timedelta(days=1)
    past = datetime.datetime.now(datetime.UTC) - 2 * a_day
    write_identity(root / "expired", ca, issue(ca, name="late", hosts=(), now=past, lifetime=a_day))
    return {name: root / name / CERT_FILE for name in ("good", "other", "expired")} | {"none": None}


def client_context(ca: Path, certificate: Path | None) -> ssl.SSLContext:
    """Trusts the cluster CA (so only the server's side of the check is tested) and presents
    `certificate`, if any."""
    context = ssl.create_default_context(cafile=str(ca))
    if certificate is not None:
        context.load_cert_chain(str(certificate))
    return context


async def greeted(address: str, context: ssl.SSLContext | None) -> bool:
    """Whether the server at `address` sends its first frame (the secret's challenge) to this client: over
    TLS with `context`, or in plain text with None (which sends a frame of its own first, so a TLS server
    sees no handshake at once). In TLS 1.3 a refused client certificate shows on the first read, after
    the client's handshake is done."""
    host, _, port = address.rpartition(":")
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, int(port))
    try:
        with trio.move_on_after(10):
            if context is not None:
                stream = trio.SSLStream(stream, context, server_hostname=host)
                await stream.do_handshake()
            else:
                await stream.send_all(b"\x00\x00\x00\x02{}")
            data = await stream.receive_some()
            return b"nonce" in data
        return False
    except trio.BrokenResourceError:
        return False
    finally:
        await trio.aclose_forcefully(stream)


async def raft_greeted(address: str, context: ssl.SSLContext | None) -> bool:
    """Whether the Raft port at `address` answers pysyncobj's `status` request from this client."""
    answer = await trio.to_thread.run_sync(raft_answer, address, context, raft_frame(["status"]))
    return isinstance(answer, dict)


async def port_greetings(
    addresses: dict[str, str], ca: Path, identities: dict[str, Path | None]
) -> dict[tuple[str, str], bool]:
    """(port name, client) → whether the port greeted that client: in plain text and with each identity.
    A port whose name ends in "raft" is a Raft port (`raft_greeted`); the others speak the KV's frames."""
    seen = {}
    for kind, address in addresses.items():
        probe = raft_greeted if kind.endswith("raft") else greeted
        seen[kind, "plain"] = await probe(address, None)
        for name, certificate in identities.items():
            seen[kind, name] = await probe(address, client_context(ca, certificate))
    return seen


async def kv_status(endpoints: Sequence[str], secret: str, tls_dir: Path | None) -> str:
    """What aether_kv's own client gets: "leader True" with a client certificate of the cluster CA made in
    `tls_dir`, "refused" if no connection completes (whichever way the client says so)."""
    tls = client_identity(secret, tls_dir) if tls_dir else None
    try:
        async with open_client(list(endpoints), secret, tls=tls, connect_timeout=1, request_timeout=2) as kv:
            return f"leader {(await kv.status()).leader is not None}"
    except KVError:
        return "refused"


def management_answer(
    url: str, verify: ssl.SSLContext, key: str | None, path: str = "/api/v1/cluster"
) -> int | str:
    """The status of GET `path` with the API key `key` (none if None), or the name of the error that ended
    it (a refused handshake, a server certificate not trusted)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(verify=verify, timeout=10) as http:
            return http.get(f"{url}{path}", headers=headers).status_code
    except httpx.HTTPError as error:
        return type(error).__name__


def served_serial(address: str, ca: Path, certificate: Path) -> int:
    """The serial number of the certificate the server at `address` presents now."""
    host, _, port = address.rpartition(":")
    context = client_context(ca, certificate)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@attrs.define
class Load:
    calls: int = 0
    writes: int = 0
    failures: list[str] = attrs.field(factory=list)


async def calls_and_writes(
    ingresses: Sequence[str],
    kv_endpoints: Sequence[str],
    tls: ReloadingTLS | None,
    secret: str,
    seconds: float,
) -> Load:
    """For `seconds`: one caller per ingress URL (repeat one for more) invoking echo back to back, and one
    KV writer (a put every 50 ms); what did not answer 200 is a failure (a KV error ends the run)."""
    load = Load()
    async with httpx.AsyncClient(timeout=30) as http, open_client(list(kv_endpoints), secret, tls=tls) as kv:
        deadline = trio.current_time() + seconds  # the load's length: a duration, not a wait

        async def caller(ingress: str) -> None:
            while trio.current_time() < deadline:
                answer = await http.post(f"{ingress}/invoke/org.aether:echo/echo", json={"call": load.calls})
                load.calls += 1
                if answer.status_code != 200:
                    load.failures.append(f"{ingress}: {answer.status_code} {answer.text}")

        async def writer() -> None:
            while trio.current_time() < deadline:
                await kv.put("tls-test/key", str(load.writes).encode())
                load.writes += 1
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            for ingress in ingresses:
                nursery.start_soon(caller, ingress)
            nursery.start_soon(writer)
    return load


def node_script() -> list[str]:
    return cli_support.console_script("aether-node", "aether_node.node:main")


def token_command(secret_file: Path, kv_endpoints: Sequence[str], ttl: float = 600) -> list[str]:
    """`aether-node token create` on a host that holds the secret and reaches the KV."""
    command = [*node_script(), "token", "create", "--secret-file", str(secret_file), "--ttl", str(ttl)]
    for endpoint in kv_endpoints:
        command += ["--kv-endpoint", endpoint]
    return command


def created_token(command: list[str]) -> str:
    """The token a `token_command` (maybe prefixed, e.g. to run in a namespace) prints."""
    made = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()
