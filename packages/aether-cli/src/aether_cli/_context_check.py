"""`aether context add`'s look at the cluster before the context is saved: one read (`GET /api/v1/cluster`)
of each of its URLs with the CA certificate and the key the context will hold, so that a wrong CA is
found now, by the command that brought it, and not at the next command as a TLS error.

A node whose certificate does not verify, or an https:// URL that answers in plain HTTP, is a `problem`
(the context is not saved, unless the operator says so); anything else that is not right is a `warning`
and the context is saved: a node that cannot be reached now (the check could not be made), a key the
cluster refuses, a key sent to a cluster that checks none (open: dev mode), an answer that is not the
management API's. Any answer of the API, an error included, means the TLS handshake verified.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

TIMEOUT = 5.0  # seconds for each URL: a context for a cluster that is down must not hang the command
# What `aether_node.client` says of a certificate it refused (OpenSSL's own name for it)
UNTRUSTED = "CERTIFICATE_VERIFY_FAILED"


@attrs.frozen(kw_only=True)
class Findings:
    problems: tuple[str, ...] = ()  # the context must not be saved as it is
    warnings: tuple[str, ...] = ()  # saved, but the operator should know


def check_cluster(urls: Sequence[str], *, api_key: str | None, ca_cert: str | None) -> Findings:
    """Ask each of `urls` once; what was found, one sentence per URL that was not right."""
    from aether_node.client import PLAIN_HTTP, ApiClient, ApiError, ClusterUnreachableError, NoAnswerError

    problems: list[str] = []
    warnings: list[str] = []
    for url in urls:
        client = ApiClient(
            [url],
            api_key=api_key,
            ca_cert=ca_cert,
            timeout=TIMEOUT,
            read_patience=0,
            on_unchecked_key=lambda url: warnings.append(
                f"{url} checks no API keys (open: a dev-mode cluster with none made): the key is saved,"
                " but nothing checks it there"
            ),
        )
        try:
            client.cluster_status()
        except ClusterUnreachableError as error:
            reason = str(error).removeprefix("cannot reach the cluster: ")
            if UNTRUSTED in reason or PLAIN_HTTP in reason:  # it answered: this context cannot work
                problems.append(reason)
            else:
                warnings.append(f"could not check {url} now: {reason.removeprefix(url + ': ')}")
        except NoAnswerError as error:
            warnings.append(f"could not check {url} now: {error}")
        except ApiError as error:
            if error.status == 401:
                warnings.append(
                    f"{url} refused the API key (not one of the cluster's keys)"
                    if api_key
                    else f"{url} asks for an API key: add one with `--api-key -`"
                )
            elif error.kind == "error":  # not the API's JSON error: another server (the ingress port?)
                warnings.append(f"{url} answers HTTP {error.status}, not as an Aether management API")
        except ValueError as error:  # an answer that is not JSON: not the management API
            warnings.append(f"{url} answers, but not as an Aether management API ({error})")
    return Findings(problems=tuple(problems), warnings=tuple(warnings))
