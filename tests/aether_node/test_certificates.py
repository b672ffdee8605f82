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
        (
            'ingress_cert = "c.pem"\ningress_key = "k.pem"\ningress_server = "fast"\n',
            'HTTPS on the ingress (ingress_cert) needs ingress_server = "trio"',
        ),
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


def test_an_ingress_certificate_that_does_not_load_is_a_configuration_error(tmp_path: Path) -> None:
    from aether_node.node._node import ingress_context

    (tmp_path / "c.pem").write_text("not a certificate")
    extra = f'ingress_cert = "{tmp_path / "c.pem"}"\ningress_key = "{tmp_path / "k.pem"}"\n'
    config = load_config(config_file(tmp_path, extra), {})
    with pytest.raises(ConfigError, match=r"ingress_cert .*c\.pem, ingress_key .*k\.pem: cannot load them"):
        ingress_context(config)
    assert ingress_context(load_config(config_file(tmp_path), {})) is None
