"""The operator's habits, through the real `aether` console script: contexts instead of flags every time,
`-o table|wide|json`, whole lines into a pipe, `--watch`, 130 on Ctrl-C, `-` for stdin, shell completion,
and errors that say what is wrong (a URL that is not a management API, a missing positional by its name).

Against a stub management API where the answer must change on cue (`--watch`) or only the wire matters,
and against a real cluster of nodes for stdin and the ingress port.
"""

from __future__ import annotations

import json
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cli_support
import pytest
from cli_support import (
    ANSWERED,
    CONFIG_DIR,
    COUNTER,
    ECHO,
    CliCluster,
    background_aether,
    cli_cluster,
    closed_port,
    expect,
    run_aether,
    stub_api,
)

pytestmark = [pytest.mark.integration]


NODE = {
    "node_id": "node-1", "ingress": "127.0.0.1:41001", "management": "127.0.0.1:41002",
    "peer": "127.0.0.1:41003", "cpu": 2.0, "memory_mib": 4096, "role": "voter",
    "started_at": 1.0, "instances": 2, "active": 2, "leader": True, "state": "ON_DUTY", "waiting": "",
    "problems": [],
}  # fmt: skip
CLUSTER = {
    "leader": "node-1", "term": 1, "revision": 9, "has_quorum": True, "healthy": True, "nodes": [NODE],
    "blueprints": 1, "instances": 1, "active": 1, "failed": 0, "expected_nodes": ["node-1"],
}  # fmt: skip
SMALL = f'name = "demo"\n\n[[slices]]\nartifact = "{ECHO}"\ninstances = 1\n'


# ---------------------------------------------------------------- output


def test_output_table_wide_and_json(tmp_path: Path) -> None:
    with stub_api({("GET", "/api/v1/nodes"): (200, [NODE])}) as stub:
        table = expect(run_aether("cluster", "nodes", "-c", stub.url, cwd=tmp_path)).stdout
        wide = expect(
            run_aether("cluster", "nodes", "-o", "wide", "--cluster", stub.url, cwd=tmp_path)
        ).stdout
        runs = [run_aether("cluster", "nodes", *flag, "-c", stub.url, cwd=tmp_path)
                for flag in (("-o", "json"), ("--output", "json"), ("--json",), ("-j",))]  # fmt: skip
        bad = run_aether("cluster", "nodes", "-o", "yaml", "-c", stub.url, cwd=tmp_path)
    # the capacity the help promises is shown; wide adds role and peer
    for column in ("CPU", "MEMORY", "INGRESS", "MANAGEMENT"):
        assert column in table and column in wide
    assert "4096 MiB" in table and "127.0.0.1:41003" not in table and "ROLE" not in table
    assert "ROLE" in wide and "voter" in wide and "PEER" in wide and "127.0.0.1:41003" in wide
    for run in runs:
        assert expect(run).json() == [NODE]
    assert expect(bad, 2).stderr.startswith("aether: error: "), str(bad)
    assert "yaml" in bad.stderr and "Traceback" not in bad.stderr


def test_plurals_are_right_for_one(tmp_path: Path) -> None:
    with stub_api({("GET", "/api/v1/cluster"): (200, CLUSTER)}) as stub:
        run = expect(run_aether("cluster", "status", "-c", stub.url, cwd=tmp_path))
    assert "1 of 1 expected node registered, 1 blueprint, 1 instance (1 ACTIVE, 0 FAILED)" in run.stdout, str(
        run
    )
    (tmp_path / "one.toml").write_text(SMALL)
    run = expect(run_aether("blueprint", "validate", "one.toml", cwd=tmp_path))
    assert run.stdout == "one.toml: valid blueprint 'demo' with 1 slice\n"


def test_logs_of_instances_that_wrote_nothing_say_so_on_stderr(tmp_path: Path) -> None:
    quiet = [
        {"node_id": f"node-{n}", "artifact": "org.aether:echo:1.0.0", "instance": n, "lines": []}
        for n in (1, 2)
    ]
    with stub_api({("GET", "/api/v1/slices/org.aether%3Aecho/logs"): (200, quiet)}) as stub:
        run = expect(run_aether("slice", "logs", "org.aether:echo", "-c", stub.url, cwd=tmp_path))
        as_json = expect(run_aether("slice", "logs", "org.aether:echo", "-j", "-c", stub.url, cwd=tmp_path))
    assert run.stdout == ""  # stdout holds log lines only
    assert run.stderr == (
        "org.aether:echo: no line of output yet (2 instances; nothing written to stdout or stderr and ended"
        " with a newline)\n"
    )
    assert as_json.stderr == "" and [item["lines"] for item in as_json.json()] == [[], []]


def test_piped_output_keeps_each_line_whole(tmp_path: Path) -> None:
    message = "instance moved " + "x" * 300 + " END"
    event = {"revision": 7, "timestamp": 0.0, "kind": "rebalance_move", "subject": "s", "message": message}
    with stub_api(
        {("GET", "/api/v1/events"): (200, [event]), ("GET", "/api/v1/nodes"): (200, [NODE])}
    ) as stub:
        # no terminal and no COLUMNS: nothing is wrapped at 80 columns
        events = expect(run_aether("cluster", "events", "-c", stub.url, cwd=tmp_path, env={"COLUMNS": ""}))
        nodes = expect(run_aether("cluster", "nodes", "-c", stub.url, cwd=tmp_path, env={"COLUMNS": ""}))
    lines = events.stdout.splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"rebalance_move {message}"), str(events)
    row = next(line for line in nodes.stdout.splitlines() if "node-1" in line)
    assert "127.0.0.1:41001" in row and "127.0.0.1:41002" in row and "4096 MiB" in row, str(nodes)


def test_piped_help_is_plain_text_with_whole_lines(tmp_path: Path) -> None:
    run = expect(run_aether("cluster", "events", "--help", cwd=tmp_path, env={"COLUMNS": ""}))
    kind = next(line for line in run.stdout.splitlines() if line.lstrip().startswith("--kind"))
    assert "node_joined" in kind and "node_uncordoned" in kind, run.stdout  # the whole list on its line
    assert "╭" not in run.stdout and "│" not in run.stdout, run.stdout  # no boxes around it


# ---------------------------------------------------------------- --watch and Ctrl-C


@pytest.mark.long
def test_watch_shows_each_change_and_ctrl_c_exits_130(tmp_path: Path) -> None:
    with stub_api({("GET", "/api/v1/cluster"): (200, CLUSTER)}) as stub:
        env = {"AETHER_CLUSTER": stub.url}
        with (
            background_aether("cluster", "status", "--watch", cwd=tmp_path, env=env) as human,
            background_aether("cluster", "status", "-w", "-o", "json", cwd=tmp_path, env=env) as as_json,
        ):
            human.wait_for(lambda line: "leader node-1" in line, timeout=30, what="the first status")
            first = json.loads(as_json.wait_for(lambda line: True, timeout=30, what="the first JSON"))
            assert first["leader"] == "node-1"
            stub.routes[("GET", "/api/v1/cluster")] = (200, {**CLUSTER, "leader": "node-2", "term": 2})
            human.wait_for(lambda line: "leader node-2" in line, timeout=30, what="the new leader shown")
            second = json.loads(as_json.wait_for(lambda line: True, timeout=30, what="the second JSON"))
            assert (second["leader"], second["term"]) == ("node-2", 2)
            # a failure after the first answer is shown and the watch goes on
            stub.routes[("GET", "/api/v1/cluster")] = (
                503,
                {"error": {"kind": "unavailable", "message": "no quorum"}},
            )
            human.wait_for(lambda line: "no quorum (still watching)" in line, timeout=30, what="the failure")
            stub.routes[("GET", "/api/v1/cluster")] = (200, CLUSTER)
            human.wait_for(lambda line: "leader node-1" in line, timeout=30, what="the status again")
            third = json.loads(as_json.wait_for(lambda line: True, timeout=30, what="the third JSON"))
            # one JSON line per change: an unchanged answer is not printed again
            assert [first["leader"], second["leader"], third["leader"]] == ["node-1", "node-2", "node-1"]
            assert sum(line.startswith("--- ") for line in human.lines) >= 4  # 2 statuses, error, status
            for reader in (human, as_json):
                reader.process.send_signal(signal.SIGINT)
                assert reader.process.wait(timeout=10) == 130
                assert reader.process.stderr is not None
                assert "Traceback" not in reader.process.stderr.read()


def test_watch_whose_first_question_fails_ends_like_without_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    for command in (("cluster", "status"), ("blueprint", "status", "demo"), ("slice", "status", ECHO)):
        run = expect(run_aether(*command, "--watch", "-c", url, cwd=tmp_path, timeout=30), 3)
        assert run.stderr.startswith(f"aether: error: cannot reach the cluster: {url}: "), str(run)


# ---------------------------------------------------------------- contexts


@pytest.mark.long
def test_contexts_add_use_list_remove(tmp_path: Path) -> None:
    config = tmp_path / CONFIG_DIR / "aether" / "config.toml"

    def aether(*args: str, **kw: object) -> cli_support.CliRun:
        return run_aether(*args, cwd=tmp_path, timeout=30, **kw)  # type: ignore[arg-type]

    run = expect(aether("context", "list"))
    assert run.stdout == f"no contexts in {config} (add one with `aether context add NAME URL`)\n"
    with stub_api({("GET", "/api/v1/cluster"): (200, CLUSTER)}) as stub:
        run = expect(aether("context", "add", "stub", stub.url, "--api-key", "-", input="secret-key-123\n"))
        assert run.stdout == f"context 'stub' added in {config} (current)\n"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert 'api-key = "secret-key-123"' in config.read_text()
        refused = f"http://127.0.0.1:{closed_port()}"
        expect(aether("context", "add", "down", refused))  # not current: there is one
        listed = expect(aether("context", "list", "-o", "json")).json()
        assert listed == [
            {"name": "stub", "current": True, "cluster": [stub.url], "api_key_set": True},
            {"name": "down", "current": False, "cluster": [refused], "api_key_set": False},
        ]
        table = expect(aether("context", "list")).stdout
        assert "secret-key-123" not in table and "stub" in table and "set" in table

        # no flag: the current context's cluster
        assert expect(aether("cluster", "status", "--json")).json()["leader"] == "node-1"
        # --context, AETHER_CONTEXT, --cluster and AETHER_CLUSTER win over the current one
        expect(aether("cluster", "status", "--context", "down"), 3)
        expect(aether("cluster", "status", env={"AETHER_CONTEXT": "down"}), 3)
        expect(aether("cluster", "status", "--cluster", refused), 3)
        expect(aether("cluster", "status", env={"AETHER_CLUSTER": refused}), 3)
        run = expect(aether("context", "use", "down"))
        assert run.stdout == "current context: 'down'\n"
        run = expect(aether("cluster", "status"), 3)
        assert f"cannot reach the cluster: {refused}: " in run.stderr
        expect(aether("cluster", "status", "--cluster", stub.url))
    count = len(stub.requests)
    assert count == 3, stub.requests  # `context add stub`'s look at the cluster, then two commands

    run = expect(aether("context", "remove", "down"))
    assert run.stdout == "context 'down' removed; no context is current now (`aether context use NAME`)\n"
    run = expect(aether("cluster", "status"), 3)
    assert "no cluster given" in run.stderr
    # replacing keeps the place; bad input changes nothing
    before = config.read_bytes()
    for args, message in [
        (("context", "use", "prod"), "no context 'prod' in "),
        (("context", "remove", "prod"), "no context 'prod' in "),
        (("context", "add", "a b", "http://h:1"), "context name 'a b': use 1-64 letters"),
        (("context", "add", "x", "http://h:notaport"), "not a usable cluster URL"),
        (("context", "add", "x", "http://h:1", "--api-key", "-"), "--api-key -: stdin held no key"),
        (("cluster", "status", "--context", "nope"), "no context 'nope' in "),
    ]:
        run = expect(aether(*args), 2)
        assert message in run.stderr and "Traceback" not in run.stderr, str(run)
    assert config.read_bytes() == before
    # a broken file: said with the place, and not overwritten
    config.write_text("current-context = [\n")
    for args in (("context", "list"), ("context", "add", "x", "http://h:1"), ("cluster", "status")):
        run = expect(aether(*args), 2)
        assert run.stderr.startswith(f"aether: error: {config}: "), str(run)
    assert config.read_text() == "current-context = [\n"


def test_a_bad_cluster_url_is_named_as_given_and_https_to_plain_http_is_said(tmp_path: Path) -> None:
    run = expect(run_aether("cluster", "status", "-c", "http://127.0.0.1:99999", cwd=tmp_path), 2)
    assert run.stderr == (
        "aether: error: --cluster (or AETHER_CLUSTER): http://127.0.0.1:99999: not a usable cluster URL"
        " (Port out of range 0-65535)\n"
    ), str(run)
    # no URL in it: was exit 3, "cannot reach the cluster: " and nothing after
    run = expect(run_aether("cluster", "status", "-c", " , ", cwd=tmp_path), 2)
    assert run.stderr == "aether: error: --cluster (or AETHER_CLUSTER) ' , ': no URL in it\n", str(run)
    with stub_api({("GET", "/api/v1/cluster"): (200, CLUSTER)}) as stub:
        https = stub.url.replace("http://", "https://")
        run = expect(run_aether("cluster", "status", "-c", https, cwd=tmp_path), 3)
        assert f"{https}: it answers in plain HTTP, not HTTPS" in run.stderr, str(run)
        assert "give its URL as http://" in run.stderr, str(run)
        # a context that could never work is not saved
        run = expect(run_aether("context", "add", "plain", https, cwd=tmp_path), 2)
        assert run.stderr.startswith("aether: error: context 'plain' not saved: "), str(run)
        assert "it answers in plain HTTP, not HTTPS" in run.stderr, str(run)
    assert not (tmp_path / CONFIG_DIR / "aether" / "config.toml").exists()


# ---------------------------------------------------------------- completion, arguments


def test_completion_scripts(tmp_path: Path) -> None:
    for shell in ("bash", "zsh", "fish"):
        script = expect(run_aether("completion", shell, cwd=tmp_path)).stdout
        for word in ("blueprint", "context", "watch", "output", "remove"):
            assert word in script, f"{word} not in the {shell} script"
    bash = expect(run_aether("completion", "bash", cwd=tmp_path)).stdout
    subprocess.run(["bash", "-n"], input=bash, text=True, check=True)  # it parses
    run = expect(run_aether("completion", "tcsh", cwd=tmp_path), 2)
    assert 'Invalid value "tcsh"' in run.stderr


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("blueprint", "status"), "NAME"),
        (("slice", "status"), "ARTIFACT"),
        (("slice", "invoke"), "ARTIFACT"),
        (("cluster", "forget"), "NODE"),
        (("context", "add", "prod"), "CLUSTER"),
        (("node", "cordon"), "NODE"),  # (these were named --node, --artifact, --name: not as in --help)
        (("node", "drain"), "NODE"),
        (("slice", "scale"), "ARTIFACT"),
        (("slice", "scale", "org.aether:echo"), "INSTANCES"),
        (("slice", "promote"), "ARTIFACT"),
        (("blueprint", "history"), "NAME"),
        (("blueprint", "diff"), "FILE"),
    ],
)
def test_a_missing_positional_is_named_as_the_help_shows_it(
    tmp_path: Path, args: tuple[str, ...], name: str
) -> None:
    run = expect(run_aether(*args, cwd=tmp_path), 2)
    assert (
        run.stderr
        == f'aether: error: Command "{" ".join(args[:2])}" parameter {name} requires an argument.\n'
    )


def test_an_extra_argument_is_named_with_its_command(tmp_path: Path) -> None:
    for args, extra in ((("cluster", "status", "extra"), "argument extra"),
                        (("slice", "scale", ECHO, "2", "3"), "argument 3"),
                        (("blueprint", "list", "a", "b"), "arguments a b")):  # fmt: skip
        run = expect(run_aether(*args, cwd=tmp_path), 2)
        command = "aether " + " ".join(args[:2])
        assert run.stderr == (
            f"aether: error: {command}: unexpected {extra} (`{command} --help` says what it takes)\n"
        ), str(run)


def test_a_payload_given_to_slice_invoke_as_an_argument_is_told_where_it_goes(tmp_path: Path) -> None:
    run = expect(run_aether("slice", "invoke", ECHO, "echo", '{"a": 1}', cwd=tmp_path), 2)
    assert run.stderr == (
        """aether: error: aether slice invoke: unexpected argument {"a": 1} (a payload goes after --data:"""
        """ `aether slice invoke ARTIFACT ENTRY -d '{...}'`)\n"""
    ), str(run)
    run = expect(run_aether("slice", "invoke", ECHO, "echo", "extra", cwd=tmp_path), 2)  # (not JSON)
    assert run.stderr == (
        "aether: error: aether slice invoke: unexpected argument extra"
        " (`aether slice invoke --help` says what it takes)\n"
    ), str(run)


def test_dev_up_over_a_cluster_whose_supervisor_is_gone_says_how_to_start_it_again(tmp_path: Path) -> None:
    """Its supervisor killed, a dev cluster's nodes run on, and one that stops stays stopped; `dev up`
    refused with "already runs" alone, which said nothing of why a node was missing."""
    dev = tmp_path / ".aether-dev"
    dev.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    node = subprocess.Popen(["sleep", "120"])
    try:
        recorded = json.dumps({"supervisor": gone.pid, "pids": {"node-1": node.pid}})
        (dev / "cluster.json").write_text(recorded)
        run = expect(run_aether("dev", "up", "--directory", str(dev), cwd=tmp_path), 1)
        assert run.stderr == (
            f"aether: error: a dev cluster already runs from {dev}/, but its supervisor is gone (a node"
            " that stops is not restarted): stop it with `aether dev down`, then `aether dev up` starts"
            " it again on its data\n"
        ), str(run)
        assert (dev / "cluster.json").read_text() == recorded and node.poll() is None  # (nothing changed)
    finally:
        node.kill()
        node.wait()


@pytest.mark.parametrize(
    ("args", "flag", "value"),
    [
        (("cluster", "events", "--limit", "0"), "--limit", 0),
        (("cluster", "events", "-n", "-3"), "--limit", -3),
        (("cluster", "events", "--follow", "--limit", "0"), "--limit", 0),
        (("cluster", "events", "--limit", "1001"), "--limit", 1001),
        (("describe", "slice", ECHO, "--events", "0"), "--events", 0),
    ],
)
def test_an_event_count_out_of_range_is_bad_usage_before_any_cluster_is_asked(
    tmp_path: Path, args: tuple[str, ...], flag: str, value: int
) -> None:
    """Like `slice logs --lines`: the flag by its name and its range, exit 2, with no cluster there (the
    check is the CLI's, not a node's answer)."""
    url = f"http://127.0.0.1:{closed_port()}"
    run = expect(run_aether(*args, "-c", url, cwd=tmp_path, timeout=30), 2)
    assert run.stderr == f"aether: error: {flag} must be between 1 and 1000, got {value}\n", str(run)
    assert "1 to 1000" in expect(run_aether(*args[:2], "--help", cwd=tmp_path)).stdout


def test_diff_reads_stdin_for_dash(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    run = expect(run_aether("blueprint", "diff", "-", "-c", url, cwd=tmp_path, input=SMALL), 3)
    assert run.stderr.startswith(f"aether: error: cannot reach the cluster: {url}: "), str(run)


def test_validate_reads_stdin_for_dash(tmp_path: Path) -> None:
    run = expect(run_aether("blueprint", "validate", "-", cwd=tmp_path, input=SMALL))
    assert run.stdout == "<stdin>: valid blueprint 'demo' with 1 slice\n"
    run = expect(run_aether("blueprint", "validate", "-", cwd=tmp_path, input="name = \n"), 2)
    assert run.stderr.startswith("aether: error: <stdin>:1:"), str(run)


# ---------------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[CliCluster]:
    with cli_cluster(tmp_path_factory.mktemp("habits"), sample_index, nodes=1) as running:
        yield running


def test_apply_and_invoke_read_stdin_for_dash(cluster: CliCluster) -> None:
    run = expect(cluster.aether("blueprint", "apply", "-", "--wait", input=SMALL, timeout=180))
    assert f"converged: {ECHO} 1/1" in run.stdout, str(run)
    source = expect(cluster.aether("blueprint", "get", "demo", "--json")).json()["source"]
    assert source == SMALL
    run = cluster.aether(
        "slice", "invoke", "org.aether:echo", "echo", "--data", "-", "-j", input='{"a": [1]}'
    )
    assert expect(run).json() == {"a": [1]}
    run = expect(cluster.aether("slice", "invoke", "org.aether:echo", "echo", "-d", "-", input="{"), 2)
    assert run.stderr.startswith("aether: error: --data - (stdin) is not valid JSON: "), str(run)


def test_invoke_reads_its_payload_from_a_file_after_an_at(cluster: CliCluster, tmp_path: Path) -> None:
    """`--data @FILE` as curl reads it (no JSON text starts with @); a file that is not there, or not
    JSON, is bad input naming it, and nothing is called."""
    payload = tmp_path / "payload.json"
    payload.write_text('{"big": [1, 2, 3], "text": "é"}', encoding="utf-8")
    run = cluster.aether("slice", "invoke", "org.aether:echo", "echo", "--data", f"@{payload}", "-j")
    assert expect(run).json() == {"big": [1, 2, 3], "text": "é"}
    run = cluster.aether("slice", "invoke", "org.aether:echo", "echo", "-d", "@-", "-j", input="[7]")
    assert expect(run).json() == [7]
    missing = tmp_path / "nowhere.json"
    run = expect(cluster.aether("slice", "invoke", "org.aether:echo", "echo", "-d", f"@{missing}"), 2)
    assert run.stderr.startswith(f"aether: error: {missing}: cannot read it (No such file"), str(run)
    payload.write_text("{not json", encoding="utf-8")
    run = expect(cluster.aether("slice", "invoke", "org.aether:echo", "echo", "-d", f"@{payload}"), 2)
    assert run.stderr.startswith(f"aether: error: --data @{payload} is not valid JSON: "), str(run)
    run = expect(cluster.aether("slice", "invoke", "org.aether:echo", "echo", "-d", "@"), 2)
    assert "--data @: name the file after the @" in run.stderr, str(run)


def test_a_change_of_config_is_rolled_out_and_apply_says_so(cluster: CliCluster) -> None:
    """A config change replaces the running instances (as a new version does): apply names the keys that
    changed, and `--wait` returns once every instance runs the new config."""
    counter_id = COUNTER.rsplit(":", 1)[0]
    first = f'name = "configured"\n\n[[slices]]\nartifact = "{COUNTER}"\ninstances = 1\n'
    expect(cluster.aether("blueprint", "apply", "-", "--wait", input=first))
    again = expect(cluster.aether("blueprint", "apply", "-", input=first))
    assert "note:" not in again.stderr, str(again)
    changed = first + '\n[slices.config]\nstate_file = "elsewhere.txt"\n'
    (cluster.cwd / "configured.toml").write_text(changed)
    diff = expect(cluster.aether("blueprint", "diff", "configured.toml"))
    assert "    config: state_file added; 1 running instance with another config replaced\n" in diff.stdout, (
        str(diff)
    )
    run = expect(cluster.aether("blueprint", "apply", "-", "--wait", input=changed))
    assert run.stderr.startswith(
        f"note: {counter_id}: config changed (state_file added): the running instances are replaced with"
        " it (rolling update)\n"
    ), str(run)
    assert f"converged: {COUNTER} 1/1" in run.stdout, str(run)
    (status,) = expect(cluster.aether("blueprint", "status", "configured", "--json")).json()["slices"]
    serving = [i["config_digest"] for i in status["instances"] if i["state"] == "ACTIVE"]
    assert serving == [status["config_digest"]], status  # (the old one may still be on its way out)
    as_json = expect(cluster.aether("blueprint", "apply", "-", "--json", input=first))
    assert as_json.json()["notes"] == [as_json.stderr.removeprefix("note: ").rstrip("\n")], str(as_json)
    assert "state_file removed" in as_json.stderr, str(as_json)
    expect(cluster.aether("blueprint", "delete", "configured"))


def test_a_config_the_slice_refuses_stops_apply_wait_and_the_old_config_keeps_serving(
    cluster: CliCluster,
) -> None:
    """A refused config is reported like a failed upgrade: `--wait` gives up saying why, the instance
    with the old config keeps serving."""
    good = (
        'name = "refused"\n\n[[slices]]\nartifact = "org.aether:faulty:1.0.0"\ninstances = 1\n\n'
        '[slices.config]\nmode = "ok"\n'
    )
    expect(cluster.aether("blueprint", "apply", "-", "--wait", input=good, timeout=180))
    bad = good.replace('"ok"', '"fail_start"')
    run = expect(cluster.aether("blueprint", "apply", "-", "--wait", input=bad, timeout=180), 1)
    assert "blueprint 'refused' cannot converge" in run.stderr, str(run)
    assert "config change of 1.0.0 is stuck" in run.stderr, str(run)
    assert "faulty: start failed on purpose" in run.stderr, str(run)
    (status,) = expect(cluster.aether("blueprint", "status", "refused", "--json"), 4).json()["slices"]
    serving = [i for i in status["instances"] if i["state"] == "ACTIVE"]
    assert len(serving) == 1 and serving[0]["config_digest"] != status["config_digest"], status
    expect(cluster.aether("blueprint", "delete", "refused"))


def test_the_ingress_port_is_named_as_not_a_management_api(cluster: CliCluster) -> None:
    ingress = f"http://{cluster.local.nodes[0].ingress}"
    for command in (("cluster", "status"), ("blueprint", "list"), ("cluster", "status", "--watch")):
        run = expect(cluster.aether(*command, "--cluster", ingress, timeout=30), 2)
        assert run.stderr == (
            f"aether: error: {ingress} (--cluster) answers (HTTP 404 'Not Found') but is not an Aether"
            " management API (is it the ingress port?)\n"
        ), str(run)


def test_diff_of_a_slice_no_node_can_hold_says_added_and_why_it_cannot_be_placed(cluster: CliCluster) -> None:
    huge = (
        'name = "huge"\n\n[[slices]]\nartifact = "org.aether:greeter:1.0.0"\ninstances = 2\n\n'
        "[slices.resources]\ncpu = 64\n"
    )
    run = expect(cluster.aether("blueprint", "diff", "-", input=huge))
    lines = run.stdout.splitlines()
    assert lines[:2] == [
        "blueprint 'huge' (a new blueprint): changes",
        "  org.aether:greeter: added, 2 cannot be placed; instances 0 → 0; version - → 1.0.0; +0 added,"
        " 0 moved, -0 removed, 0 replaced",
    ], str(run)
    largest = max(n["cpu"] for n in expect(cluster.aether("cluster", "nodes", "--json")).json())
    assert lines[2] == (
        "    problem: 2 of 2 instances of org.aether:greeter:1.0.0 fit on no live node (1 node; needs cpu 64"
        f" each; the largest node has cpu {largest:g})"
    ), str(run)
    (change,) = expect(cluster.aether("blueprint", "diff", "-", "--json", input=huge)).json()["slices"]
    assert (change["change"], change["unplaced"], change["kept"]) == ("added", 2, 0)


def test_a_key_sent_to_a_cluster_that_checks_none_is_warned_of_and_the_command_still_works(
    cluster: CliCluster, tmp_path: Path
) -> None:
    """A dev cluster without keys is open: a key sent to it is not checked. The command works (the key
    weakens nothing and is refused nowhere), and stderr says the key went unchecked, once, naming where
    the key came from; a run without a key is not warned. (A cluster with keys says nothing: it checks
    them, `test_cli_logs_describe`.)"""
    (url,) = cluster.urls.split(",")
    unchecked = f"aether: warning: {url} checks no API keys (open: a dev-mode cluster with none made);"
    run = expect(cluster.aether("cluster", "status", "--json", "--api-key", "mistyped-key-0123"), ANSWERED)
    assert run.json()["leader"] == "node-1"  # stdout stays the answer
    assert run.stderr == (
        f"{unchecked} the key given with --api-key (or AETHER_API_KEY) was not checked (mistyped, or meant"
        " for another cluster?)\n"
    ), str(run)
    assert expect(cluster.aether("cluster", "status"), ANSWERED).stderr == ""

    # a context that holds a key: `context add` says so once, then each command naming the context
    added = expect(run_aether("context", "add", "keyed", url, "--api-key", "-", cwd=tmp_path, input="k" * 20))
    assert "checks no API keys (open: a dev-mode cluster with none made): the key is saved" in added.stderr
    listed = expect(run_aether("blueprint", "list", "--context", "keyed", cwd=tmp_path))
    assert (
        listed.stderr.startswith(unchecked) and "the key of context 'keyed' was not checked" in listed.stderr
    )
    assert listed.stderr.count("\n") == 1, str(listed)
