"""TLS from the cluster CA on a real 2-node cluster (real processes, sockets on 127.0.0.1): the peer, Raft
and KV client ports take only clients with a valid certificate of the cluster CA, the management API speaks
HTTPS (a client certificate optional, but one presented must be the CA's and valid), the CLI works
against it with the CA kept in its context, calls cross the nodes' peer links, and certificate renewal
under a steady stream of calls fails none.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cli_support
import httpx
import pytest
import trio
from cli_support import ANSWERED, CliCluster, cli_cluster, expect, run_aether
from tls_support import (
    FOREIGN_SECRET,
    calls_and_writes,
    client_context,
    created_token,
    forge_identities,
    kv_status,
    management_answer,
    node_script,
    port_greetings,
    served_serial,
    token_command,
)

from aether_kv import CA_FILE, cluster_ca

pytestmark = [pytest.mark.integration]

ADMIN = "admin-key-0123456789abcdef"
LIFETIME = 15  # seconds a node certificate lives here: renewed every 10 s
SMALL = 'name = "demo"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n'


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[CliCluster]:
    """Two nodes with TLS on (no dev mode, an admin key), certificates that live 15 s, echo ×1 applied."""
    directory = tmp_path_factory.mktemp("tls")
    with cli_cluster(
        directory,
        sample_index,
        nodes=2,
        dev_mode=False,
        tls=True,
        node_env={"AETHER_API_KEYS": f"admin:{ADMIN}"},
        node_args=("--tls-cert-lifetime", str(LIFETIME)),
    ) as cluster:
        ca = cluster.local.ca_file
        expect(cluster.aether("blueprint", "apply", "-", "--wait", env=_trusting(ca), input=SMALL))
        yield cluster


def _trusting(ca: Path) -> dict[str, str]:
    return {"AETHER_CA_FILE": str(ca), "AETHER_API_KEY": ADMIN}


# ---------------------------------------------------------------- clients of every kind


@pytest.fixture(scope="module")
def identities(secured: CliCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | None]:
    """Certificate files of every kind (tls_support.forge_identities)."""
    return forge_identities(secured.local.secret, tmp_path_factory.mktemp("identities"))


# ---------------------------------------------------------------- the smoke test (default run)


def test_a_tls_cluster_refuses_every_stranger_and_serves_the_cli(
    secured: CliCluster, identities: dict[str, Path | None], tmp_path: Path
) -> None:
    local = secured.local
    ca = local.ca_file
    # every node wrote the same CA: the one derived from the cluster secret
    for node in local.nodes:
        assert (Path(node.data_dir) / "tls" / CA_FILE).read_bytes() == cluster_ca(local.secret).pem

    ports = {"peer": local.nodes[1].peer, "kv": local.kv_endpoints[0], "raft": local.nodes[0].raft}
    seen = trio.run(port_greetings, ports, ca, identities)
    clients = ("plain", "good", "other", "expired", "none")
    assert seen == {(kind, name): name == "good" for kind in ports for name in clients}

    # the KV client protocol, as aether_kv's own client sees it: refused without a good certificate
    assert trio.run(kv_status, local.kv_endpoints, local.secret, None) == "refused"
    assert trio.run(kv_status, local.kv_endpoints, local.secret, tmp_path / "kv-client") == "leader True"

    # the management API: HTTPS only; no client certificate is fine (the API key counts), a bad one is not
    url = f"https://{local.nodes[0].management}"
    answers = {
        name: management_answer(url, client_context(ca, cert), ADMIN) for name, cert in identities.items()
    }
    assert answers["good"] == answers["none"] == 200, answers
    assert isinstance(answers["other"], str) and isinstance(answers["expired"], str), answers
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{local.nodes[0].management}/api/v1/cluster", timeout=10)

    # the CLI: a context that keeps the CA works; without the CA the node's certificate is not trusted
    cwd = secured.cwd
    expect(
        run_aether("context", "add", "prod", secured.urls, "--ca-file", str(ca), "--api-key", ADMIN, cwd=cwd)
    )
    status = expect(run_aether("cluster", "status", "--json", cwd=cwd), ANSWERED).json()
    assert sorted(n["node_id"] for n in status["nodes"]) == ["node-1", "node-2"]
    untrusted = run_aether("cluster", "status", "--cluster", secured.urls, "--api-key", ADMIN, cwd=cwd)
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, str(untrusted)

    # one echo instance, two ingresses: one of the two calls crosses the peer link (mutual TLS)
    for node in local.nodes:
        answer = httpx.post(f"http://{node.ingress}/invoke/org.aether:echo/echo", json={"n": 1}, timeout=30)
        assert answer.status_code == 200 and answer.json() == {"n": 1}, answer.text


def test_aether_kv_reaches_a_tls_cluster_with_a_node_s_tls_dir(secured: CliCluster, tmp_path: Path) -> None:
    """DEPLOY.md sends an operator to `aether-kv member add|remove` and `status`: on a TLS cluster (the
    default) they could not connect, having no way to present a certificate."""
    local = secured.local
    (tmp_path / "secret").write_text(local.secret)
    command = [sys.executable, "-m", "aether_kv", "status", "--endpoints", ",".join(local.kv_endpoints)]
    command += ["--secret-file", str(tmp_path / "secret")]

    def aether_kv(*more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *more], capture_output=True, text=True, timeout=60, check=False)

    with_tls = aether_kv("--tls-dir", str(Path(local.nodes[0].data_dir) / "tls"), "--json")
    assert with_tls.returncode == 0, with_tls.stderr
    assert json.loads(with_tls.stdout)["leader"], with_tls.stdout
    without = aether_kv()
    assert without.returncode != 0 and "aether-kv: error:" in without.stderr, without
    not_a_tls_dir = aether_kv("--tls-dir", str(tmp_path))
    assert not_a_tls_dir.returncode != 0 and "ca.pem" in not_a_tls_dir.stderr, not_a_tls_dir


@pytest.mark.long
def test_join_flags_are_checked_before_anything_starts(tmp_path: Path) -> None:
    """Bad input stops `aether-node run` with exit 2 and a sentence, and binds nothing."""
    (tmp_path / "secret").write_text("s" * 32)
    secret, new = ["--secret-file", str(tmp_path / "secret")], ["--secret-file", str(tmp_path / "new")]
    base = [*node_script(), "run", "--node-id", "x", "--data-dir", str(tmp_path / "data"), "--index", "i"]
    base += ["--ingress", "127.0.0.1:1", "--peer", "127.0.0.1:2", "--kv-endpoint", "127.0.0.1:3"]
    cases = {
        "--join and --token (or AETHER_JOIN_TOKEN) go together": [*secret, "--join", "127.0.0.1:4"],
        "--token: not a join token": [*new, "--join", "127.0.0.1:4", "--token", "x"],
        "--join-only goes with --join": [*secret, "--join-only"],
        "--join https://127.0.0.1:4: expected HOST:PORT": [
            *new,
            "--join",
            "https://127.0.0.1:4",
            "--token",
            "x",
        ],
        "--join 127.0.0.1: expected HOST:PORT": [*new, "--join", "127.0.0.1", "--token", "x"],
    }
    for message, extra in cases.items():
        run = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 2 and message in run.stderr, (extra, run.stderr)
    assert not (tmp_path / "new").exists() and not (tmp_path / "data").exists()


def test_a_cli_trusting_another_ca_says_which_node_and_what_to_do(
    secured: CliCluster, tmp_path: Path
) -> None:
    """The operator's context holds the wrong ca.pem (another cluster's): the CLI names each node it tried
    and says where the right CA comes from, not only OpenSSL's words."""
    wrong = tmp_path / "other-ca.pem"
    wrong.write_bytes(cluster_ca(FOREIGN_SECRET).pem)
    run = run_aether(
        "cluster",
        "status",
        "--cluster",
        secured.urls,
        "--ca-file",
        str(wrong),
        "--api-key",
        ADMIN,
        cwd=secured.cwd,
    )
    assert run.returncode == 3, str(run)
    for node in secured.local.nodes:
        assert (
            f"https://{node.management}: its certificate is not from the CA this client trusts" in run.stderr
        )
    assert "CERTIFICATE_VERIFY_FAILED" in run.stderr and "ca.pem from any node's data_dir/tls/" in run.stderr
    # no scheme (taken as http://) to a node that speaks HTTPS: reset without an answer, and said so
    first = secured.local.nodes[0].management
    run = run_aether("cluster", "status", "--cluster", first, "--api-key", ADMIN, cwd=secured.cwd)
    assert run.returncode != 0 and "if the node speaks HTTPS (TLS on" in run.stderr, str(run)
    assert f"give https://{first}" in run.stderr, str(run)


def test_context_add_checks_the_ca_file_and_the_cluster_before_saving(
    secured: CliCluster, tmp_path: Path
) -> None:
    """`aether context add` refuses a CA file that is no certificate, and one that did not sign the
    nodes' certificates (asked once, nothing saved); it saves, warning, a context it could not check."""
    config = tmp_path / cli_support.CONFIG_DIR / "aether" / "config.toml"
    local = secured.local

    def add(*args: str) -> cli_support.CliRun:
        return run_aether("context", "add", *args, cwd=tmp_path, timeout=60)

    mangled, marker_only = tmp_path / "mangled.pem", tmp_path / "notes.txt"
    mangled.write_text(local.ca_file.read_text()[:200])  # cut short: a copy that went wrong
    marker_only.write_text("ca: see the wiki\n")
    foreign = tmp_path / "other-ca.pem"
    foreign.write_bytes(cluster_ca(FOREIGN_SECRET).pem)
    for path, says in (
        (mangled, "its -----BEGIN CERTIFICATE----- block does not parse as a certificate"),
        (marker_only, "not a PEM certificate"),
        (tmp_path / "missing.pem", "cannot read it"),
    ):
        run = expect(add("prod", secured.urls, "--ca-file", str(path), "--api-key", ADMIN), 2)
        assert run.stderr.startswith(f"aether: error: --ca-file {path}: {says}"), str(run)
    assert not config.exists()

    # another cluster's CA: each node's certificate is refused, saying so; nothing saved
    run = expect(add("prod", secured.urls, "--ca-file", str(foreign), "--api-key", ADMIN), 2)
    assert run.stderr.startswith(
        f"aether: error: context 'prod' not saved: checked with the CA in --ca-file {foreign}: "
    )
    for node in local.nodes:
        assert (
            f"https://{node.management}: its certificate is not from the CA this client trusts" in run.stderr
        )
    assert "--no-verify-now saves it unchecked" in run.stderr and not config.exists(), str(run)
    # ... unless told: then nothing is asked
    expect(add("later", secured.urls, "--ca-file", str(foreign), "--no-verify-now"))
    assert '[contexts."later"]' in config.read_text()

    # the right CA: saved, quietly; a wrong key is saved with a warning
    run = expect(add("prod", secured.urls, "--ca-file", str(local.ca_file), "--api-key", ADMIN))
    assert run.stderr == "" and run.stdout == f"context 'prod' added in {config}\n", str(run)
    run = expect(
        add("typo", secured.urls, "--ca-file", str(local.ca_file), "--api-key", "wrong-key-0123456789")
    )
    assert f"aether: warning: https://{local.nodes[0].management} refused the API key" in run.stderr, str(run)

    # a cluster that cannot be reached now: saved, saying it was not checked
    down = f"https://127.0.0.1:{cli_support.closed_port()}"
    run = expect(add("down", down, "--ca-file", str(local.ca_file)))
    assert run.stderr.startswith(f"aether: warning: could not check {down} now: "), str(run)
    assert '[contexts."down"]' in config.read_text()


# ---------------------------------------------------------------- renewal (long)


@pytest.mark.long
def test_renewal_under_calls_fails_no_call(secured: CliCluster, identities: dict[str, Path | None]) -> None:
    """Calls through node-2's ingress (its instance, or node-1's over the peer link) and KV writes go on
    without a pause while both nodes renew their certificates (every 10 s): none fails, and the peer,
    KV and management API (HTTPS) ports present new certificates afterwards."""
    local = secured.local
    ca, good = local.ca_file, identities["good"]
    assert good is not None
    addresses = [local.nodes[0].peer, local.nodes[1].peer, local.kv_endpoints[0], local.nodes[1].management]
    before = {address: served_serial(address, ca, good) for address in addresses}
    began = time.monotonic()  # the load runs 2.5 lifetimes: at least two renewals of each node
    ingresses = [f"http://{node.ingress}" for node in (local.nodes[0], local.nodes[1], local.nodes[1])]
    load = trio.run(
        calls_and_writes, ingresses, local.kv_endpoints, local.tls_client(), local.secret, 2.5 * LIFETIME
    )
    after = {address: served_serial(address, ca, good) for address in addresses}
    assert load.failures == [], load.failures[:5]
    assert load.calls > 0 and load.writes > 0
    assert all(after[a] != before[a] for a in addresses), (before, after, time.monotonic() - began)
    renewed = [
        line for n in local.nodes for line in local.log_tail(n.node_id, 400).splitlines() if "renewed" in line
    ]
    assert len(renewed) >= 4, renewed


# ---------------------------------------------------------------- join tokens (long)


def make_token(cluster: CliCluster, ttl: float = 600) -> str:
    return created_token(token_command(cluster.local.secret_file, cluster.local.kv_endpoints, ttl))


@pytest.mark.long
def test_a_node_joins_with_a_token_once(secured: CliCluster, tmp_path: Path) -> None:
    """A third node with no secret file joins through node-1's management API with a token (it gets the
    secret over TLS checked by the CA fingerprint in the token) and registers; the same token is then
    refused, over HTTP and to `aether-node run`."""
    local = secured.local
    token = make_token(secured)
    node = local.add_node()
    secret_file = tmp_path / "joined-secret"

    def joining(secret: Path) -> list[str]:
        command = local.command(node)
        command[command.index("--secret-file") + 1] = str(secret)
        return [*command, "--join", local.nodes[0].management, "--token", token]

    command = joining(secret_file)
    Path(node.data_dir).mkdir(parents=True)
    log_path = Path(node.data_dir) / "node.log"
    with open(log_path, "wb") as log:
        node_env = {**os.environ, "AETHER_API_KEYS": f"admin:{ADMIN}"}
        local.processes[node.node_id] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=node_env
        )
    env = _trusting(local.ca_file)
    cli_support.wait_until(
        lambda: node.node_id in secured.aether("cluster", "status", "--json", env=env).stdout,
        timeout=60,
        what=f"{node.node_id} registered; its log:\n{log_path.read_text(errors='replace')[-2000:]}",
    )
    assert secret_file.read_text().strip() == local.secret
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"

    reused = httpx.post(
        f"https://{local.nodes[1].management}/api/v1/join",
        json={"token": token},
        verify=client_context(local.ca_file, None),
        timeout=10,
    )
    assert reused.status_code == 401 and "used already" in reused.json()["error"]["message"], reused.text
    again = subprocess.run(
        joining(tmp_path / "second"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 2 and "the cluster refused the token" in again.stderr, again.stderr
    assert "used already" in again.stderr and not (tmp_path / "second").exists()


@pytest.mark.long
def test_a_join_only_run_leaves_what_a_start_needs_and_serves_nothing(
    secured: CliCluster, tmp_path: Path
) -> None:
    """`--join-only` (what DEPLOY.md runs before starting the unit): the secret and the node's certificate
    written, exit 0, nothing served; again on the same host: nothing sent, exit 0; the used token on
    another host: refused, nothing written; then a plain start with what it left registers."""
    local = secured.local
    token = make_token(secured)
    node = local.add_node()
    secret_file = tmp_path / "joined-secret"
    node_env = {**os.environ, "AETHER_API_KEYS": f"admin:{ADMIN}"}
    env = _trusting(local.ca_file)

    def join_only(secret: Path) -> subprocess.CompletedProcess[str]:
        command = local.command(node)
        command[command.index("--secret-file") + 1] = str(secret)
        command += ["--join", local.nodes[0].management, "--token", token, "--join-only"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=node_env)

    run = join_only(secret_file)
    assert run.returncode == 0, run.stderr
    assert f"joined through {local.nodes[0].management}: secret in {secret_file}" in run.stdout, run.stdout
    assert "not serving" in run.stdout and "Traceback" not in run.stderr, run
    assert "HTTP Request:" not in run.stderr + run.stdout, run  # (httpx's INFO line per request)
    assert secret_file.read_text().strip() == local.secret
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    tls_dir = Path(node.data_dir) / "tls"
    assert (tls_dir / CA_FILE).read_bytes() == cluster_ca(local.secret).pem
    assert (tls_dir / "cert.pem").exists()
    nodes = expect(secured.aether("cluster", "status", "--json", env=env), ANSWERED).json()["nodes"]
    assert node.node_id not in [n["node_id"] for n in nodes], "a join-only run serves nothing"

    again = join_only(secret_file)
    assert again.returncode == 0 and "has joined already; nothing sent" in again.stdout, again
    assert secret_file.read_text().strip() == local.secret

    elsewhere = tmp_path / "elsewhere" / "secret"
    used = join_only(elsewhere)
    assert used.returncode == 2 and "the cluster refused the token" in used.stderr, used
    assert "used already" in used.stderr and "Traceback" not in used.stderr, used.stderr
    assert list(elsewhere.parent.iterdir()) == []  # no secret, no temporary file left

    command = local.command(node)
    command[command.index("--secret-file") + 1] = str(secret_file)
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        local.processes[node.node_id] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=node_env
        )
    cli_support.wait_until(
        lambda: node.node_id in secured.aether("cluster", "status", "--json", env=env).stdout,
        timeout=60,
        what=f"{node.node_id} registered; its log:\n{log_path.read_text(errors='replace')[-2000:]}",
    )


@pytest.mark.long
def test_a_secret_file_that_cannot_be_written_does_not_spend_the_token(
    secured: CliCluster, tmp_path: Path
) -> None:
    """As under systemd's ProtectSystem=strict with the secret file in /etc: the node cannot write it. It
    says so (exit 2, naming the file) before it asks the cluster anything, so the token is still good."""
    local = secured.local
    token = make_token(secured)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the secret file's "directory" is a file: even root cannot write there
    run = subprocess.run(
        [*node_script(), "run", "--node-id", "x", "--data-dir", str(tmp_path / "x"), "--index", "i",
         "--ingress", "127.0.0.1:1", "--peer", "127.0.0.1:2", "--kv-endpoint", local.kv_endpoints[0],
         "--secret-file", str(blocker / "secret"), "--join", local.nodes[0].management, "--token", token],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert f"kv.secret_file {blocker / 'secret'}: cannot write it" in run.stderr, run.stderr
    assert "the token is still good" in run.stderr and "Traceback" not in run.stderr, run.stderr
    # a configuration the start would refuse (its ingress port taken; no API keys) spends no token either:
    # it was redeemed first, the secret written, and the start then failed
    secret = tmp_path / "writable" / "secret"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        keys = {"AETHER_API_KEYS": f"admin:{ADMIN}"}
        for keys_env, said in ((keys, "cannot listen there"), ({}, "no API keys")):
            env = {k: v for k, v in os.environ.items() if k != "AETHER_API_KEYS"} | keys_env
            run = subprocess.run(
                [*node_script(), "run", "--node-id", "x", "--data-dir", str(tmp_path / "x"), "--index", "i",
                 "--ingress", f"127.0.0.1:{port}", "--peer", "127.0.0.1:2", "--management", "127.0.0.1:3",
                 "--kv-endpoint", local.kv_endpoints[0], "--secret-file", str(secret),
                 "--join", local.nodes[0].management, "--token", token, "--join-only"],
                capture_output=True, text=True, timeout=60, check=False, env=env,
            )  # fmt: skip
            assert run.returncode == 2 and said in run.stderr, run.stderr
            assert not secret.exists() and "joined through" not in run.stdout, run
    answer = httpx.post(
        f"https://{local.nodes[0].management}/api/v1/join",
        json={"token": token},
        verify=client_context(local.ca_file, None),
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["secret"] == local.secret, answer.text


@pytest.mark.long
def test_an_expired_or_foreign_token_is_refused(secured: CliCluster, tmp_path: Path) -> None:
    local = secured.local
    token = make_token(secured, ttl=10)
    made = time.time()  # the token expires before made + 10 s
    url = f"https://{local.nodes[0].management}/api/v1/join"
    verify = client_context(local.ca_file, None)
    # another cluster's token (its CA fingerprint is not this one's) is refused before anything is sent
    foreign = token.rsplit(".", 1)[0] + "." + cluster_ca(FOREIGN_SECRET).fingerprint
    run = subprocess.run(
        [*node_script(), "run", "--node-id", "x", "--data-dir", str(tmp_path / "x"), "--index", "i",
         "--ingress", "127.0.0.1:1", "--peer", "127.0.0.1:2", "--kv-endpoint", local.kv_endpoints[0],
         "--secret-file", str(tmp_path / "secret"), "--join", local.nodes[0].management, "--token", foreign],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2 and "fingerprint is not the token's" in run.stderr, run.stderr
    # expired: the token's 10 s run out (waited for on the clock, then asked once)
    cli_support.wait_until(lambda: time.time() > made + 10.5, timeout=30, what="the token's expiry")
    answer = httpx.post(url, json={"token": token}, verify=verify, timeout=10)
    assert answer.status_code == 401 and "expired" in answer.json()["error"]["message"], answer.text
