"""The node's certificate (`node/_certificates.py`) and its TLS settings: which hosts it names, when it
is renewed (virtual time), and the configuration checks."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509

from aether_node.core._config import ConfigError, load_config
from aether_node.node._certificates import NodeCertificates, certificate_hosts, renew_at
from aether_node.node._node import kv_unreachable_hint
from support import operator_certificate

BASE = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def config_file(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "secret").write_text("s" * 32)
    path = tmp_path / "node.toml"
    path.write_text(
        'node_id = "n1"\ndata_dir = "data"\nindex = "index"\ningress = "0.0.0.0:1"\npeer = "10.0.0.1:2"\n'
        'management = "[::1]:4"\n' + extra + '[kv]\nraft = "10.0.0.1:5"\nclient = "node1.example:3"\n'
        'secret_file = "secret"\n'
    )
    return path


def test_tls_is_on_unless_dev_mode_or_asked_off_by_name(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    assert load_config(path, {}).tls_on
    assert not load_config(path, {"dev_mode": True}).tls_on
    assert load_config(path, {"dev_mode": True, "tls": True}).tls_on
    assert not load_config(path, {"tls": False}).tls_on


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("tls_cert_lifetime = 5.0\n", "tls_cert_lifetime must be at least 10 s, got 5"),
        ('ingress_cert = "c.pem"\n', "ingress_cert and ingress_key go together"),
    ],
)
def test_bad_tls_settings_are_refused(tmp_path: Path, extra: str, message: str) -> None:
    path = config_file(tmp_path, extra)
    with pytest.raises(ConfigError) as raised:
        load_config(path, {})
    assert raised.value.message.startswith(f"{path}: {message}")


def test_the_certificate_names_every_advertised_host_once(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, 'tls_hosts = ["aether.example", "10.0.0.1"]\n'), {})
    assert certificate_hosts(config) == ("10.0.0.1", "node1.example", "::1", "0.0.0.0", "aether.example")


def test_renewal_comes_with_a_third_of_the_life_left() -> None:
    assert renew_at(BASE, datetime.timedelta(hours=3)) == BASE - datetime.timedelta(hours=1)


async def test_the_node_renews_its_certificate_before_it_expires(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = load_config(config_file(tmp_path, "tls_cert_lifetime = 30.0\n"), {})

    def clock() -> datetime.datetime:
        return BASE + datetime.timedelta(seconds=trio.current_time())

    certificates = NodeCertificates(config, "s" * 32, clock=clock)
    first = certificates.expires()
    with trio.move_on_after(65):  # virtual seconds: renewed at 20, 40 and 60
        await certificates.renew_forever()
    assert certificates.renewals == 3
    assert certificates.expires() == first + datetime.timedelta(seconds=60)
    pem = (config.tls_dir / "cert.pem").read_bytes()
    assert x509.load_pem_x509_certificate(pem).subject.rfc4514_string() == "CN=n1"
    assert oct((config.tls_dir / "cert.pem").stat().st_mode & 0o777) == "0o600"


def test_either_ingress_server_takes_an_ingress_certificate(tmp_path: Path) -> None:
    from aether_node.node._node import ingress_context

    _, cert, key = operator_certificate(tmp_path)
    for server in ("trio", "fast"):
        extra = f'ingress_cert = "{cert}"\ningress_key = "{key}"\ningress_server = "{server}"\n'
        config = load_config(config_file(tmp_path, extra), {})
        assert (config.ingress_server, config.ingress_cert, config.ingress_key) == (server, cert, key)
        assert ingress_context(config) is not None


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("c.pem", "nosuch.pem", r"ingress_key .*nosuch\.pem: cannot read it \(No such file or directory\)"),
        ("bad.pem", "k.pem", r"ingress_cert .*bad\.pem: no PEM certificate in it"),
        ("c.pem", "bad.pem", r"ingress_key .*bad\.pem: no PEM private key in it"),
        (
            "c.pem",
            "other.key",
            r"ingress_cert .*c\.pem, ingress_key .*other\.key: cannot load them \(.*MISMATCH",
        ),
    ],
)
def test_an_ingress_certificate_that_does_not_load_is_a_configuration_error(
    tmp_path: Path, cert: str, key: str, message: str
) -> None:
    """Said at start (`aether-node run` checks it before anything starts), naming the file and why."""
    from aether_node.node._node import ingress_context

    operator_certificate(tmp_path)
    (tmp_path / "c.pem").write_bytes((tmp_path / "ingress.pem").read_bytes())
    (tmp_path / "k.pem").write_bytes((tmp_path / "ingress.key").read_bytes())
    (tmp_path / "bad.pem").write_text("not a certificate")
    (tmp_path / "other").mkdir()
    (tmp_path / "other.key").write_bytes(operator_certificate(tmp_path / "other")[2].read_bytes())
    extra = f'ingress_cert = "{tmp_path / cert}"\ningress_key = "{tmp_path / key}"\ningress_server = "fast"\n'
    config = load_config(config_file(tmp_path, extra), {})
    with pytest.raises(ConfigError, match=message):
        ingress_context(config)
    assert ingress_context(load_config(config_file(tmp_path), {})) is None


@pytest.mark.parametrize(
    ("last", "hint"),
    [
        (
            "cannot reach any aether-kv endpoint: 10.77.0.1:7300: TLS connection failed: [SSL:"
            " CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate in certificate"
            " chain (_ssl.c:1006)",
            "the TLS handshake with the replicas failed: a certificate of another CA",
        ),
        (
            "10.77.0.1:7300: TLS connection failed: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca",
            "the TLS handshake with the replicas failed",
        ),
        (
            "10.77.0.1:7300: TLS connection failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify"
            " failed: certificate is not yet valid",
            "a certificate is not valid at this host's time: are the hosts' clocks right?",
        ),
        ("no quorum: KV replica 10.77.0.3:7200 has heard from 1 of the 3 replicas", "start the others"),
    ],
)
def test_a_node_that_cannot_reach_the_kv_says_the_likely_cause(last: str, hint: str) -> None:
    """A host with another cluster's secret, or a clock an hour ahead, was told to check its addresses
    and firewall."""
    assert hint in kv_unreachable_hint(last)
