"""The node's configuration: how many blueprint revisions it keeps (`blueprint_history`), what it offers
the slices (`[capacity]`, this host's where it does not say), the values it refuses."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from aether_node.core._config import ConfigError, NodeConfig, load_config
from aether_node.core._host_capacity import host_capacity
from aether_node.core._records import Capacity
from aether_node.node._cli import _warn_of_loose_modes


def config_file(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "secret").write_text("s" * 32)
    path = tmp_path / "node.toml"
    path.write_text(
        'node_id = "n1"\ndata_dir = "data"\nindex = "index"\ningress = "127.0.0.1:1"\npeer = "127.0.0.1:2"\n'
        + extra
        + '[kv]\nendpoints = ["127.0.0.1:3"]\nsecret_file = "secret"\n'
    )
    return path


def test_blueprint_history_defaults_to_twenty_and_can_be_set(tmp_path: Path) -> None:
    assert load_config(config_file(tmp_path, ""), {}).blueprint_history == 20
    assert load_config(config_file(tmp_path, "blueprint_history = 5\n"), {}).blueprint_history == 5


def test_blueprint_history_below_one_is_refused(tmp_path: Path) -> None:
    path = config_file(tmp_path, "blueprint_history = 0\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, {})
    assert raised.value.message == f"{path}: blueprint_history must be at least 1, got 0"


def test_what_capacity_leaves_out_is_this_hosts(tmp_path: Path) -> None:
    """A node offered 1 core and 1,024 MiB whatever its host had; now what the configuration does not
    say is found on the host: the CPUs this process may run on, and the machine's memory, each cut to the
    quota of its cgroups (test_host_capacity.py)."""
    host = host_capacity()  # (the CPUs it may run on and the memory, cut to its cgroups' quota)
    cpus, memory = host.cpu, host.memory_mib
    assert cpus > 0 and memory > 0
    assert load_config(config_file(tmp_path, ""), {}).capacity == Capacity(cpu=cpus, memory_mib=memory)
    given = load_config(config_file(tmp_path, "[capacity]\ncpu = 0.5\n"), {}).capacity
    assert given == Capacity(cpu=0.5, memory_mib=memory)
    flags = {"capacity": {"memory_mib": 512}}  # (as `--capacity-memory-mib 512` gives it)
    assert load_config(config_file(tmp_path, "[capacity]\ncpu = 0.5\n"), flags).capacity == Capacity(
        cpu=0.5, memory_mib=512
    )


def test_the_deployment_guides_example_config_loads() -> None:
    """examples/systemd/node.toml (docs/DEPLOY.md) is a valid node configuration."""
    example = Path(__file__).parents[2] / "examples" / "systemd" / "node.toml"
    config = load_config(example, {})
    assert (config.node_id, config.ingress, config.peer, config.management) == (
        "node-1",
        "10.0.0.11:8080",
        "10.0.0.11:7100",
        "10.0.0.11:9090",
    )
    assert config.kv.runs_replica and config.kv.raft == "10.0.0.11:7200"
    assert config.kv.peers == ("10.0.0.12:7200", "10.0.0.13:7200")
    assert str(config.kv.secret_file) == "/etc/aether/secret"
    assert config.capacity.cpu == 4.0 and config.labels == {"zone": "a"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"node_id": "bad id!"},
            "node_id 'bad id!': use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or"
            " digit",
        ),
        (
            {"node_id": ""},
            "node_id '': use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ),
        (
            {"node_id": "a/b"},
            "node_id 'a/b': use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ),
        (
            {"ingress": "127.0.0.1:99999"},
            "ingress '127.0.0.1:99999': expected host:port with a port from 1 to 65535",
        ),
        ({"peer": "garbage"}, "peer 'garbage': expected host:port with a port from 1 to 65535"),
        # (any free port: the node was told ":0" and advertised it, and nothing could reach it)
        ({"peer": "10.0.0.4:0"}, "peer '10.0.0.4:0': expected host:port with a port from 1 to 65535"),
        (
            {"management": "127.0.0.1:-1"},
            "management '127.0.0.1:-1': expected host:port with a port from 1 to 65535",
        ),
        (
            {"kv": {"endpoints": ["127.0.0.1:3", "a host:4"]}},
            "kv.endpoints 'a host:4': expected host:port with a port from 1 to 65535",
        ),
        ({"lease_ttl": -1.0}, "lease_ttl must be a number of seconds in (0, 86400], got -1"),
        ({"lease_ttl": float("nan")}, "lease_ttl must be a number of seconds in (0, 86400], got nan"),
        (
            {"capacity": {"cpu": -2.0, "memory_mib": 1024}},
            "capacity must be cpu >= 0 cores and memory_mib >= 0, got cpu -2, memory_mib 1024",
        ),
        (
            {"timeouts": {"template_idle": 0.0}},
            "timeouts.template_idle must be a number of seconds > 0, got 0",
        ),
        ({"timeouts": {"load": -1.0}}, "timeouts.load must be a number of seconds > 0, got -1"),
        (
            {"health": {"interval": 0.0}},
            "health must be interval > 0 and timeout > 0 seconds and failures >= 1,"
            " got interval 0, timeout 5, failures 3",
        ),
        (
            {"health": {"failures": 0}},
            "health must be interval > 0 and timeout > 0 seconds and failures >= 1,"
            " got interval 10, timeout 5, failures 0",
        ),
    ],
    ids=[
        "node-id-space",
        "node-id-empty",
        "node-id-slash",
        "port-too-big",
        "no-port",
        "port-zero",
        "negative-port",
        "endpoint-space",
        "negative-ttl",
        "nan-ttl",
        "negative-cpu",
        "timeouts-template-idle-zero",
        "timeouts-negative-load",
        "health-no-interval",
        "health-no-failures",
    ],
)
def test_a_value_that_would_fail_only_once_running_is_refused_at_start(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    path = config_file(tmp_path, "")
    with pytest.raises(ConfigError) as raised:
        load_config(path, overrides)
    assert raised.value.message == f"{path}: {message}"


def test_files_holding_the_secret_or_keys_that_others_may_read_are_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A secret file of mode 0644 (what `echo ... > secret` makes) was taken silently: the secret makes
    the cluster's CA and opens every port."""
    keys = tmp_path / "api-keys"
    keys.write_text("admin:0123456789abcdef\n")
    keys.chmod(0o600)
    config = load_config(config_file(tmp_path, f'api_keys_file = "{keys}"\n'), {})
    secret = config.kv.secret_file
    secret.chmod(0o644)
    _warn_of_loose_modes(config)
    assert capsys.readouterr().err == (
        f"aether-node: warning: {secret} holds the cluster secret and is readable by others (mode 644);"
        f" run `chmod 600 {secret}`\n"
    )
    secret.chmod(0o600)
    _warn_of_loose_modes(config)
    assert capsys.readouterr().err == ""


def test_structure_errors_say_where_each_key_is_one_line_each_in_the_file_s_order(tmp_path: Path) -> None:
    """Each problem on its own line, at the key's line and column (a missing one has none), in plain words;
    an unknown key names the one it may have meant (it said `extra fields found (ingres) @ config` and
    `required field missing @ config.ingress`, all on one line)."""
    (tmp_path / "secret").write_text("s" * 32)
    path = tmp_path / "node.toml"
    path.write_text(
        'node_id = "n1"\ndata_dir = "data"\nindex = "index"\npeer = "127.0.0.1:2"\ningres = "127.0.0.1:1"\n'
        'ingress_server = "quick"\n[capacity]\ncpu = "lots"\n[kv]\nendpoints = ["127.0.0.1:3"]\n'
        '  secrett_file = "secret"\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path, {})
    assert raised.value.message.splitlines() == [
        f"{path}: ingress: missing: it is required",
        f"{path}:5:1: ingres: unknown key (did you mean 'ingress'? expected: {', '.join(_top_level_keys())})",
        f'{path}:6:1: ingress_server: expected one of "trio", "fast", got "quick"',
        f'{path}:8:1: capacity.cpu: expected a number, got "lots"',
        f"{path}:11:3: kv.secrett_file: unknown key (did you mean 'secret_file'?"
        " expected: client, endpoints, peers, raft, secret_file)",
    ]


def test_a_missing_table_and_a_key_unlike_any_are_said_so(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        'node_id = "n1"\ndata_dir = "d"\nindex = "i"\ningress = "127.0.0.1:1"\npeer = "127.0.0.1:2"\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path, {"labels": None, "zzz": 1})
    assert raised.value.message.splitlines() == [
        f"{path}: kv: missing: a [kv] table is required",
        f"{path}: zzz: unknown key (expected: {', '.join(_top_level_keys())})",
    ]


def test_flags_have_no_file_to_point_into() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, {"node_id": "n1"})
    assert "flags: data_dir: missing: it is required" in raised.value.message.splitlines()


def _top_level_keys() -> list[str]:
    return sorted(field.name for field in attrs.fields(NodeConfig))
