"""Network namespaces for the nemesis suite: one namespace per node, joined by a Linux bridge
(tests/net_namespaces.py makes and removes them; shared with the TLS tests across namespaces), and the
network faults (partitions, loss, slow links, connection resets) applied inside them.

Faults need these tools (`missing_tools` says which are absent, so a caller can skip with a reason):
`ip` (iproute2) always; `nft` for partitions, loss and link-level drops; `ss` for connection resets;
`tc` for slow links (netem if the kernel has it, else a token bucket that queues: latency by rate limit).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence

import attrs
from net_namespaces import PREFIX, STATE_DIR, Host, NetError, sweep_stale
from net_namespaces import Network as Namespaces
from net_namespaces import missing_tools as _missing
from net_namespaces import run as _run

__all__ = ["PREFIX", "STATE_DIR", "Host", "NetError", "Network", "have_nft", "missing_tools", "sweep_stale"]


def missing_tools() -> list[str]:
    """What the suite needs and this machine lacks (empty: namespaces can be made and faults applied)."""
    return _missing(("ip", "tc", "ss"))


def have_nft() -> bool:
    return shutil.which("nft") is not None


@attrs.define
class Network(Namespaces):
    """The run's namespaces (`Network.create(count)`, `destroy()`) with the nemeses' network faults."""

    netem: bool | None = None  # learnt on first use

    def _nft(self, host: Host, script: str) -> None:
        _run(["ip", "netns", "exec", host.name, "nft", "-f", "-"], stdin=script)

    def _rules(self, host: Host, name: str, rules: Iterable[str]) -> None:
        """Replace table `inet chaos_{name}` in `host` with one input and one output chain of `rules`
        (each rule text is placed in both chains with `ADDR` replaced by saddr/daddr)."""
        rules = list(rules)
        self._nft(host, f"table inet chaos_{name} {{}}\ndelete table inet chaos_{name}\n")
        inbound = "\n".join(f"    {r.replace('ADDR', 'ip saddr')}" for r in rules)
        outbound = "\n".join(f"    {r.replace('ADDR', 'ip daddr')}" for r in rules)
        self._nft(
            host,
            f"table inet chaos_{name} {{\n"
            f"  chain input {{ type filter hook input priority 0; policy accept;\n{inbound}\n  }}\n"
            f"  chain output {{ type filter hook output priority 0; policy accept;\n{outbound}\n  }}\n"
            "}\n",
        )

    def _clear(self, host: Host, name: str) -> None:
        if have_nft():
            self._nft(host, f"table inet chaos_{name} {{}}\ndelete table inet chaos_{name}\n")

    def partition(self, *groups: Sequence[int]) -> None:
        """Hosts (by index) in different groups stop seeing each other (silent drops both ways); a host
        in no group keeps seeing everyone (a bridge node when the groups leave it out)."""
        where = {i: g for g, members in enumerate(groups) for i in members}
        for i, group in where.items():
            blocked = [self.hosts[j].address for j, other in where.items() if other != group]
            self._rules(self.hosts[i], "partition", (f"ADDR {a} drop" for a in blocked))

    def heal_partition(self) -> None:
        for host in self.hosts:
            self._clear(host, "partition")

    def lossy(self, index: int, percent: int) -> None:
        """Drop `percent` % of the packets between host `index` and the other hosts, both ways."""
        others = [h.address for j, h in enumerate(self.hosts) if j != index]
        rules = (f"ADDR {a} numgen random mod 100 < {percent} drop" for a in others)
        self._rules(self.hosts[index], "loss", rules)

    def heal_loss(self) -> None:
        for host in self.hosts:
            self._clear(host, "loss")

    def slow(self, index: int, delay_ms: int) -> str:
        """Delay the packets host `index` sends: netem if the kernel has it, else a token bucket slow
        enough to queue (latency by rate limit). Returns which one was used."""
        host = self.hosts[index]
        prefix = self.exec_prefix(host)
        if self.netem is not False:
            result = subprocess.run(
                [
                    *prefix,
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    host.ns_veth,
                    "root",
                    "netem",
                    "delay",
                    f"{delay_ms}ms",
                    f"{delay_ms // 4}ms",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            self.netem = result.returncode == 0
            if self.netem:
                return f"netem delay {delay_ms}ms"
        _run(
            [
                *prefix,
                "tc",
                "qdisc",
                "replace",
                "dev",
                host.ns_veth,
                "root",
                "tbf",
                "rate",
                "256kbit",
                "burst",
                "4kb",
                "latency",
                f"{delay_ms * 4}ms",
            ]
        )
        return f"tbf rate 256kbit latency {delay_ms * 4}ms (no netem in this kernel)"

    def heal_slow(self) -> None:
        for host in self.hosts:
            _run([*self.exec_prefix(host), "tc", "qdisc", "del", "dev", host.ns_veth, "root"], check=False)

    def reset_connections(self, index: int) -> int:
        """Abort every established TCP connection of host `index` (the kernel sends RST to the peers);
        returns how many were open."""
        prefix = self.exec_prefix(self.hosts[index])
        listing = _run([*prefix, "ss", "-Htn", "state", "established"], check=False)
        _run([*prefix, "ss", "-K", "state", "established"], check=False)
        return len([line for line in listing.splitlines() if line.strip()])

    def heal_all(self) -> None:
        self.heal_partition()
        self.heal_loss()
        self.heal_slow()
