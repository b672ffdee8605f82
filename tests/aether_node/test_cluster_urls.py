"""`aether_node.client.check_url`: a cluster URL the CLI, the MCP service and contexts take is checked
before any network I/O; a malformed one is a ValueError naming it. Pure."""

from __future__ import annotations

import pytest

from aether_node.client import check_url, parse_urls


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9090",
        "https://a.example:9090",
        "http://node-1.internal_zone.example",
        "http://[::1]:9090",
        "http://bücher.example:9090",
    ],
)
def test_a_usable_url_passes(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("not a url", "the host 'not a url' is not a host name"),
        ("http://exa mple.com:9090", "the host 'exa mple.com' is not a host name"),
        ("http://a.example;rm -rf:9090", "the host 'a.example;rm -rf' is not a host name"),
        ("http://h:notaport", "Port could not be cast to integer value"),
        ("http://300.1.1.1:9090", "does not appear to be an IPv4 or IPv6 address"),
        ("ftp://a.example", "expected http:// or https://"),
    ],
)
def test_a_malformed_url_is_refused_naming_it(text: str, detail: str) -> None:
    (url,) = parse_urls(text)
    with pytest.raises(ValueError, match="not a usable cluster URL") as raised:
        check_url(url)
    assert str(raised.value).startswith(f"{url}: ") and detail in str(raised.value)
