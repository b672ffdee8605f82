"""A real `aether-node --ingress-server fast` with the operator's certificate (`--ingress-cert`,
`--ingress-key`): calls to a real slice over HTTPS, verified against that certificate; a plain-HTTP
request that gets no HTTP answer; a certificate file that breaks while the node runs (the restarted
worker says which file and why, the node runs on, and serves HTTPS again once the file is good); and a
certificate that does not load at start, refused before anything starts."""

from __future__ import annotations

import os
import signal
import ssl
from pathlib import Path

import httpx
import pytest
from node_support import ECHO, NodeProcess, activate, client_node, ingress_workers, kv_client, node_cleanup

from support import operator_certificate, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def certificate_args(cert: Path, key: Path) -> tuple[str, ...]:
    return ("--ingress-server", "fast", "--ingress-cert", str(cert), "--ingress-key", str(key))


async def test_the_fast_ingress_serves_https(sample_index: Path, tmp_path: Path) -> None:
    ca, cert, key = operator_certificate(tmp_path)
    verify = ssl.create_default_context(cafile=str(ca))
    with client_node(tmp_path, sample_index, extra_args=certificate_args(cert, key)) as node:
        assert f"ready: ingress https://{node.ingress}" in node.log()
        async with kv_client(node) as kv:
            await activate(kv, node, ECHO, 1)
        url = f"https://{node.ingress}/invoke/org.aether:echo/echo"

        async def call(http: httpx.AsyncClient, payload: object) -> tuple[int, object]:
            answer = await http.post(url, json=payload)
            return answer.status_code, answer.json()

        async with httpx.AsyncClient(verify=verify, timeout=30) as http:
            assert await call(http, {"n": 1, "text": "é"}) == (200, {"n": 1, "text": "é"})
            # plain HTTP to the HTTPS port: no HTTP answer at all (not even an error status)
            with pytest.raises(httpx.TransportError):
                await http.post(url.replace("https://", "http://"), json={"n": 2})
            assert await call(http, {"n": 3}) == (200, {"n": 3})

        # the certificate file breaks while the node runs: the next worker cannot start and says why
        good = cert.read_bytes()
        cert.write_text("not a certificate")
        (first_worker,) = ingress_workers(node)
        os.kill(first_worker, signal.SIGKILL)
        said = f"the ingress worker did not start: ingress_cert {cert}: no PEM certificate in it"

        async def logged() -> bool:
            return said in node.log()

        await wait_until(logged, timeout=60, what="the node to log why its ingress worker cannot start")
        assert node.returncode() is None, node.log_tail()

        # the file is good again: a later restart of the service serves HTTPS again
        cert.write_bytes(good)

        async def serves_again() -> bool:
            async with httpx.AsyncClient(verify=verify, timeout=10) as http:
                try:
                    return await call(http, [4]) == (200, [4])
                except httpx.TransportError:
                    return False

        await wait_until(serves_again, timeout=90, what="HTTPS on the ingress again once the file is good")
        assert node.returncode() is None


async def test_a_certificate_that_does_not_load_stops_the_node_at_start(tmp_path: Path) -> None:
    _, cert, key = operator_certificate(tmp_path)
    key.write_text("not a key")
    # (no KV is running: the check comes before anything starts)
    node = NodeProcess(
        tmp_path / "node",
        index=str(tmp_path),
        kv_endpoints=("127.0.0.1:1",),
        extra_args=certificate_args(cert, key),
    )
    with node_cleanup(node):
        node.spawn()
        assert await node.wait_exit(60) == 2, node.log_tail()
        assert f"aether-node: error: ingress_key {key}: no PEM private key in it" in node.log()
