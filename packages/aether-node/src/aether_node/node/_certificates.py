"""The node's certificate: issued from the cluster CA at start-up, renewed before it expires.

The CA is derived from the cluster secret (`aether_kv.cluster_ca`), so a node that has the secret and its
data dir issues its own certificate, without asking another node: its subject is the node id, its
subject alternative names the hosts of its advertised addresses (peer, Raft, KV client, management, ingress)
and `tls_hosts`. The files live in `data_dir/tls/` (`ca.pem`; `cert.pem`, certificate and key, 0600);
the node's KV replica reads the same directory. Renewal writes a new `cert.pem` once a third of the
certificate's life is left; every context of the node is re-loaded in place (new connections get the
new certificate, open ones keep theirs) and the replica re-loads it on its next connection.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

import trio

from aether_kv import ReloadingTLS, cluster_ca, issue, not_valid_after, write_identity

from ..core._config import NodeConfig

log = logging.getLogger("aether_node.certificates")

Clock = Callable[[], datetime.datetime]


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def certificate_hosts(config: NodeConfig) -> tuple[str, ...]:
    """The hosts a node's certificate names: of each address it advertises, then `tls_hosts`."""
    addresses = (config.peer, config.kv.raft, config.kv.client, config.management, config.ingress)
    hosts = [address.rpartition(":")[0].strip("[]") for address in addresses if address]
    return tuple(dict.fromkeys([*hosts, *config.tls_hosts]))


def renew_at(expires: datetime.datetime, lifetime: datetime.timedelta) -> datetime.datetime:
    """When a certificate that expires at `expires` is renewed: a third of its life before."""
    return expires - lifetime / 3


class NodeCertificates:
    """Issues and renews the node's certificate in `config.tls_dir`; `tls` holds the node's contexts."""

    def __init__(self, config: NodeConfig, secret: str, *, clock: Clock = _utc_now) -> None:
        self.config = config
        self.ca = cluster_ca(secret)
        self.lifetime = datetime.timedelta(seconds=config.tls_cert_lifetime)
        self.clock = clock
        self.renewals = 0
        self.issue_now()
        self.tls = ReloadingTLS(config.tls_dir)

    def issue_now(self) -> None:
        """Write a new certificate (and key) for this node."""
        identity = issue(
            self.ca,
            name=self.config.node_id,
            hosts=certificate_hosts(self.config),
            now=self.clock(),
            lifetime=self.lifetime,
        )
        write_identity(self.config.tls_dir, self.ca, identity)

    def expires(self) -> datetime.datetime:
        return not_valid_after((self.config.tls_dir / "cert.pem").read_bytes())

    async def renew_forever(self) -> None:
        """Renew the certificate a third of its life before it expires, forever (run supervised: an
        error here, a full disk, is logged and the service restarts)."""
        while True:
            due = renew_at(self.expires(), self.lifetime)
            wait = (due - self.clock()).total_seconds()
            if wait > 0:
                await trio.sleep(min(wait, 60.0))  # a wall clock that jumps is looked at again soon
                continue
            self.issue_now()
            self.tls.reload()
            self.renewals += 1
            log.info("node certificate renewed; valid until %s", self.expires().isoformat())
