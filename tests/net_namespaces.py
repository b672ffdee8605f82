"""Network namespaces for the nemesis suite: one namespace per node, joined by a Linux bridge, and the
network faults (partitions, loss, slow links, connection resets) applied inside them.

Everything stays on this machine: the bridge and the namespaces live in the private subnet 10.231.X.0/24
(X chosen per run), the bridge itself holds .254 so the test process (in the root namespace) reaches
every node, and no route leads anywhere else. `Network.create` makes the namespaces; `Network.destroy`
removes them (the owner calls it in a `finally`); `sweep_stale` removes what a killed run left behind
(its owner pid is gone).

Faults need these tools (`missing_tools` says which are absent, so a caller can skip with a reason):
`ip` (iproute2) always; `nft` for partitions, loss and link-level drops; `ss` for connection resets;
`tc` for slow links (netem if the kernel has it, else a token bucket that queues: latency by rate limit).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

PREFIX = "ach"  # every interface and namespace of the suite starts with it (ip link names ≤ 15 chars)
STATE_DIR = Path("/tmp/aether-chaos-nets")  # one file per live run: its owner pid


class NetError(RuntimeError):
    """A network command failed: names the command and quotes its output."""


def missing_tools() -> list[str]:
    """What the suite needs and this machine lacks (empty: namespaces can be made)."""
    missing = [tool for tool in ("ip", "tc", "ss") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (namespaces and bridges need CAP_NET_ADMIN)")
    return missing


def have_nft() -> bool:
    return shutil.which("nft") is not None


def _run(command: Sequence[str], *, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True, input=stdin, check=False)
    if check and result.returncode != 0:
        raise NetError(f"{' '.join(command)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


@attrs.define
class Host:
    name: str  # namespace name
    address: str  # 10.231.X.i
    host_veth: str  # the bridge port (root namespace)
    ns_veth: str  # inside the namespace


@attrs.define
class Network:
    run_id: str
    subnet: int  # X of 10.231.X.0/24
    hosts: list[Host] = attrs.field(factory=list)
    bridge: str = ""
    netem: bool | None = None  # learnt on first use

    @classmethod
    def create(cls, count: int) -> Network:
        """`count` namespaces on one new bridge. On failure, removes what it made and raises NetError."""
        sweep_stale()
        run_id = secrets.token_hex(2)
        used = {int(p.read_text().split()[1]) for p in STATE_DIR.glob("*") if p.read_text().count(" ") >= 1}
        subnet = next(x for x in range(10 + os.getpid() % 200, 255) if x not in used)
        network = cls(run_id=run_id, subnet=subnet, bridge=f"{PREFIX}{run_id}br")
        STATE_DIR.mkdir(exist_ok=True)
        (STATE_DIR / run_id).write_text(f"{os.getpid()} {subnet}\n")
        try:
            _run(["ip", "link", "add", network.bridge, "type", "bridge"])
            _run(["ip", "addr", "add", f"{network.gateway}/24", "dev", network.bridge])
            _run(["ip", "link", "set", network.bridge, "up"])
            for i in range(1, count + 1):
                host = Host(
                    name=f"{PREFIX}{run_id}n{i}",
                    address=f"10.231.{subnet}.{i}",
                    host_veth=f"{PREFIX}{run_id}h{i}",
                    ns_veth=f"{PREFIX}{run_id}p{i}",
                )
                network.hosts.append(host)
                _run(["ip", "netns", "add", host.name])
                _run(["ip", "link", "add", host.host_veth, "type", "veth", "peer", "name", host.ns_veth])
                _run(["ip", "link", "set", host.ns_veth, "netns", host.name])
                _run(["ip", "link", "set", host.host_veth, "master", network.bridge, "up"])
                _run(["ip", "-n", host.name, "addr", "add", f"{host.address}/24", "dev", host.ns_veth])
                _run(["ip", "-n", host.name, "link", "set", host.ns_veth, "up"])
                _run(["ip", "-n", host.name, "link", "set", "lo", "up"])
        except BaseException:
            network.destroy()
            raise
        return network

    @property
    def gateway(self) -> str:
        """The bridge's own address: the test process talks to the nodes from it."""
        return f"10.231.{self.subnet}.254"

    def host(self, index: int) -> Host:
        return self.hosts[index]

    def exec_prefix(self, host: Host) -> list[str]:
        return ["ip", "netns", "exec", host.name]

    def destroy(self) -> None:
        """Remove every namespace, veth and the bridge of this run (idempotent; never raises)."""
        for host in self.hosts:
            _run(["ip", "netns", "del", host.name], check=False)
            _run(["ip", "link", "del", host.host_veth], check=False)
        if self.bridge:
            _run(["ip", "link", "del", self.bridge], check=False)
        with contextlib.suppress(OSError):
            (STATE_DIR / self.run_id).unlink()

    # ------------------------------------------------------------ faults

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


def sweep_stale() -> list[str]:
    """Remove the namespaces and links of runs whose owner process is gone; returns their run ids."""
    removed = []
    if not STATE_DIR.exists():
        return removed
    for state in STATE_DIR.iterdir():
        try:
            pid = int(state.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        if pid and Path(f"/proc/{pid}").exists():
            continue
        run_id = state.name
        for name in _run(["ip", "netns", "list"], check=False).split("\n"):
            if name.startswith(f"{PREFIX}{run_id}"):
                _run(["ip", "netns", "del", name.split()[0]], check=False)
        for line in _run(["ip", "-o", "link", "show"], check=False).splitlines():
            parts = line.split(":")
            if len(parts) > 1 and parts[1].strip().split("@")[0].startswith(f"{PREFIX}{run_id}"):
                _run(["ip", "link", "del", parts[1].strip().split("@")[0]], check=False)
        with contextlib.suppress(OSError):
            for line in Path("/proc/mounts").read_text().splitlines():
                source, target = line.split()[:2]
                if source == f"aether-chaos-{run_id}":  # the full-disk nemesis's tmpfs
                    _run(["umount", "-l", target], check=False)
        with contextlib.suppress(OSError):
            state.unlink()
        removed.append(run_id)
    return removed
