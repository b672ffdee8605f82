"""The `slice_host` fixture (aether_slice.testing, loaded by pytest through aether-slice's pytest11 entry
point): sample slices run in real slice host processes, with their answers and every kind of failure.
The slices run from a virtualenv of their own (`slice_python`), given to the fixture as `python=`."""

from __future__ import annotations

import functools
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import uv

from aether_slice import SliceCallError
from aether_slice.testing import SliceHostError, SliceInstance
from support import live_processes

SliceHost = Callable[..., SliceInstance]


@pytest.fixture
def host(slice_host: SliceHost, slice_python: str) -> SliceHost:
    return functools.partial(slice_host, python=slice_python)


def host_processes() -> list[int]:
    """Live `aether_slice.host` processes that this test process started (templates) or that they forked."""
    found: list[int] = []
    for process in sorted(live_processes(), key=lambda p: p.pid):
        if "aether_slice.host" in process.cmdline and (process.ppid == os.getpid() or process.ppid in found):
            found.append(process.pid)
    return found


def test_a_slice_answers_with_its_entry_points_version_and_instance(host: SliceHost) -> None:
    echo = host("org.aether:echo", instance=3)
    assert echo.coordinates == "org.aether:echo:1.0.0"  # the installed distribution's version
    assert echo.entry_points == {"echo": True, "info": True}
    assert echo.invoke("echo", {"hello": ["aether", 1, None]}) == {"hello": ["aether", 1, None]}
    info = echo.invoke("info")
    assert info["version"] == "1.0.0" and info["instance"] == 3
    assert info["pid"] == echo.pid != os.getpid()


def test_calls_to_other_slices_are_answered_by_the_test(host: SliceHost) -> None:
    greeter = host("org.aether:greeter", calls={"org.aether:echo/echo": lambda payload: payload})
    assert greeter.invoke("greet", {"name": "you"}) == {"greeting": "hello you", "via": {"name": "you"}}
    assert greeter.calls == [("org.aether:echo", "echo", {"name": "you"})]


def test_a_call_without_a_handler_or_with_a_failing_one_is_an_error_in_the_slice(
    host: SliceHost,
) -> None:
    def refuse(payload: object) -> object:
        raise SliceCallError("timeout", "echo took too long")

    lonely = host("org.aether:greeter")
    with pytest.raises(SliceHostError) as raised:
        lonely.invoke("greet", {"name": "you"})
    assert (raised.value.kind, raised.value.remote_type) == ("raised", "SliceCallError")
    assert "no handler for org.aether:echo/echo" in raised.value.message
    refused = host("org.aether:greeter", calls={"org.aether:echo/echo": refuse})
    with pytest.raises(SliceHostError, match="echo took too long"):
        refused.invoke("greet", {"name": "you"})


def test_a_slice_that_raises_reports_the_kind_type_and_traceback(host: SliceHost) -> None:
    faulty = host("org.aether:faulty", config={"mode": "raise"})
    with pytest.raises(SliceHostError) as raised:
        faulty.invoke("work", {})
    error = raised.value
    assert (error.kind, error.remote_type, error.message) == (
        "raised",
        "ValueError",
        "faulty: work failed on purpose",
    )
    assert error.detail is not None and "org_aether_faulty" in error.detail
    assert faulty.health()["pid"] == faulty.pid  # the instance lives on after a raise
    with pytest.raises(SliceHostError) as missing:
        faulty.invoke("nope")
    assert missing.value.kind == "no_entry"
    entries = "block, collect, compute, impersonate, imported, odd_result, orphan, record, spawn, work"
    assert f"(it has: {entries})" in missing.value.message


@pytest.mark.parametrize("kind", ["stopped", "no_entry", "protocol"])
def test_a_slice_that_raises_the_runtimes_own_error_is_said_to_have_raised_it(
    host: SliceHost, kind: str
) -> None:
    """A `HostError` raised by the slice's code (the runtime's own class: the host's `__main__` module's)
    does not speak for the runtime: "stopped" would tell the caller the call did not run, and a router
    would send it again (a call run twice)."""
    faulty = host("org.aether:faulty")
    with pytest.raises(SliceHostError) as raised:
        faulty.invoke("impersonate", kind)
    assert (raised.value.kind, raised.value.remote_type) == ("raised", "HostError")
    assert raised.value.message == "faulty: raised with the runtime's own error class"


NOT_JSON = "the message is not JSON"
NOT_FINITE = f"{NOT_JSON}: it holds NaN or Infinity, which JSON has no value for"


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        pytest.param("nan", NOT_FINITE, id="nan"),
        pytest.param("infinity", NOT_FINITE, id="infinity"),
        pytest.param("set", f"{NOT_JSON}: Object of type set is not JSON serializable", id="set"),
        pytest.param("huge", "bytes is over the limit of 16777216", id="over-the-frame-limit"),
    ],
)
def test_a_result_json_cannot_carry_is_a_bad_result_naming_the_entry_point(
    host: SliceHost, payload: str, why: str
) -> None:
    """NaN and Infinity used to come back as nan and inf, though no node can answer them (JSON has no
    such value); the cluster now says `bad_result` with the same message (tests/integration)."""
    faulty = host("org.aether:faulty")
    with pytest.raises(SliceHostError) as refused:
        faulty.invoke("odd_result", payload)
    assert refused.value.kind == "bad_result"
    assert refused.value.message.startswith("the result of entry point 'odd_result' cannot be sent: ")
    assert why in refused.value.message
    assert faulty.invoke("odd_result", [1.5]) == [1.5]  # the instance serves on


def test_a_handler_answering_what_json_cannot_carry_is_a_bad_result_in_the_slice(host: SliceHost) -> None:
    """As the cluster answers a call whose slice returned NaN: the calling slice gets a `bad_result`
    SliceCallError (here greeter lets it out: raised), not the fixture a protocol error of its own."""
    greeter = host("org.aether:greeter", calls={"org.aether:echo/echo": lambda payload: math.nan})
    with pytest.raises(SliceHostError) as raised:
        greeter.invoke("greet", {"name": "you"})
    assert (raised.value.kind, raised.value.remote_type) == ("raised", "SliceCallError")
    assert raised.value.message == (
        f"the result of the handler of org.aether:echo/echo cannot be sent: {NOT_FINITE}"
    )


def test_start_and_stop_hooks_run(host: SliceHost, tmp_path: Path) -> None:
    state = tmp_path / "counter.txt"
    counter = host("org.aether:counter", config={"state_file": str(state)})
    assert [counter.invoke("increment") for _ in range(3)] == [1, 2, 3]
    assert state.read_text() == "3"
    counter.close()  # runs aether_stop
    assert state.read_text() == "stopped"
    assert host_processes() == []


def test_a_slice_not_started_yet_is_started_when_asked(host: SliceHost, tmp_path: Path) -> None:
    counter = host("org.aether:counter", start=False, config={"state_file": str(tmp_path / "c")})
    with pytest.raises(SliceHostError, match="not started"):
        counter.invoke("increment")
    counter.start()
    assert counter.invoke("increment") == 1


def test_a_slice_that_is_not_installed_is_a_clear_error_and_leaves_nothing_running(
    host: SliceHost,
) -> None:
    with pytest.raises(SliceHostError) as raised:
        host("org.example:nowhere")
    assert raised.value.kind == "entry_point"
    assert "no entry point 'org.example:nowhere'" in raised.value.message
    assert "install the slice project" in raised.value.message
    assert host_processes() == []


def test_a_slice_name_no_distribution_declares_lists_the_slices_declared_there(host: SliceHost) -> None:
    # (a typo in the entry point's name in pyproject.toml, or in the test: the right name is in the list)
    with pytest.raises(SliceHostError) as raised:
        host("org.aether:ehco")
    assert raised.value.kind == "entry_point"
    message = raised.value.message
    assert "this environment declares: " in message
    declared = message.split("this environment declares: ", 1)[1].split(")", 1)[0].split(", ")
    assert "org.aether:echo" in declared and "org.aether:greeter" in declared
    assert "is named exactly 'org.aether:ehco'" in message
    assert host_processes() == []


@pytest.mark.parametrize("name", ["nowhere", "a:b:c", ":echo", "org.aether:"])
def test_a_malformed_slice_name_is_refused_before_anything_starts(host: SliceHost, name: str) -> None:
    with pytest.raises(ValueError, match="expected group:artifact"):
        host(name)
    assert host_processes() == []


def test_a_slice_that_fails_to_import_or_start_says_so(host: SliceHost) -> None:
    with pytest.raises(SliceHostError) as imported:
        host("org.aether:faulty", config={"mode": "fail_import"})
    assert imported.value.kind == "import"
    assert "faulty: import failed on purpose" in imported.value.message
    with pytest.raises(SliceHostError) as started:
        host("org.aether:faulty", config={"mode": "fail_start"})
    assert (started.value.kind, started.value.remote_type) == ("raised", "RuntimeError")
    assert host_processes() == []


def test_a_failed_import_or_start_hook_leaves_its_traceback_in_the_instance_log(
    host: SliceHost, tmp_path: Path
) -> None:
    # (the node's FAILED record holds the message alone: the log, `aether slice logs`, says where)
    with pytest.raises(SliceHostError):
        host("org.aether:faulty", config={"mode": "fail_import"})
    imported = (tmp_path / "slice-logs" / "org.aether.faulty-1.log").read_text()
    assert "aether_slice.host: load failed:\nTraceback (most recent call last):" in imported
    assert "org_aether_faulty/__init__.py" in imported
    assert imported.rstrip().endswith("RuntimeError: faulty: import failed on purpose")
    faulty = host("org.aether:faulty", config={"mode": "fail_start"}, start=False)
    with pytest.raises(SliceHostError):
        faulty.start()
    assert "aether_slice.host: aether_start failed:\nTraceback (most recent call last):" in faulty.log
    assert "in _start" in faulty.log
    assert faulty.log.rstrip().endswith("RuntimeError: faulty: start failed on purpose")
    # an entry point's error is its caller's, and logged with its traceback (now and then: `RaisedLog`)
    working = host("org.aether:faulty", config={"mode": "raise"})
    with pytest.raises(SliceHostError):
        working.invoke("work")
    assert "aether_slice.host: entry point 'work' raised:\nTraceback (most recent call last):" in working.log
    assert "org_aether_faulty/__init__.py" in working.log


def test_a_call_that_hangs_times_out_and_a_killed_instance_is_reported(host: SliceHost) -> None:
    faulty = host("org.aether:faulty", config={"mode": "hang_work"})
    with pytest.raises(SliceHostError) as hung:
        faulty.invoke("work", timeout=0.3)
    assert hung.value.kind == "timeout"
    assert "did not answer within 0.3 s" in hung.value.message
    assert faulty.pid is not None
    os.kill(faulty.pid, signal.SIGKILL)
    with pytest.raises(SliceHostError) as crashed:
        faulty.invoke("work")
    assert crashed.value.kind == "crashed"
    assert "killed by SIGKILL" in crashed.value.message
    with pytest.raises(SliceHostError, match=r"the instance is gone \(killed by SIGKILL\)"):
        faulty.invoke("work")
    faulty.close()  # no aether_stop for a dead instance: the fixture's teardown does the same, quietly
    assert host_processes() == []


def test_an_interpreter_without_aether_slice_or_none_at_all_is_a_clear_error(
    slice_host: SliceHost, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    subprocess.run([uv.find_uv_bin(), "venv", "--quiet", "--python", sys.executable, str(bare)], check=True)
    with pytest.raises(SliceHostError) as missing:
        slice_host("org.aether:echo", python=str(bare / "bin" / "python"))
    assert missing.value.kind == "crashed"
    assert "-m aether_slice.host` did not start" in missing.value.message
    assert "No module named 'aether_slice'" in missing.value.message
    with pytest.raises(SliceHostError, match=r"did not start.*No such file"):
        slice_host("org.aether:echo", python=str(tmp_path / "nowhere" / "python"))
    assert host_processes() == []


def test_what_a_slice_logs_is_kept_apart_from_what_another_instance_logs(
    host: SliceHost, tmp_path: Path
) -> None:
    first = host("org.aether:counter", config={"state_file": str(tmp_path / "first")})
    second = host("org.aether:counter", config={"state_file": str(tmp_path / "second")})
    assert first.log_path != second.log_path
    assert first.log.count("counter started") == second.log.count("counter started") == 1


def test_the_busy_slice_burns_cpu_naps_and_refuses_bad_durations(host: SliceHost) -> None:
    busy = host("org.aether:busy", config={"nap_ms": 5})
    burned = busy.invoke("burn", {"ms": 50})
    assert burned["burned_ms"] == 50.0 and burned["cpu_s"] > 0 and burned["pid"] == busy.pid
    assert busy.invoke("nap")["napped_ms"] == 5.0  # from the config
    assert busy.invoke("burn", None)["burned_ms"] == 10.0  # the default
    for payload, where in [
        ({"ms": -1}, 'the payload\'s "ms"'),
        ({"ms": "x"}, 'the payload\'s "ms"'),
        (7, ""),
    ]:
        with pytest.raises(SliceHostError) as raised:
            busy.invoke("burn", payload)
        assert (raised.value.kind, raised.value.remote_type) == ("raised", "ValueError")
        assert where in raised.value.message
    bad_config = host("org.aether:busy", config={"burn_ms": 99_999})
    with pytest.raises(SliceHostError, match=r"the config's 'burn_ms' must be a number of milliseconds"):
        bad_config.invoke("burn")
    assert busy.invoke("info")["instance"] == busy.invoke("nap", {"ms": 0})["instance"]


def test_an_entry_point_no_url_could_call_fails_the_load_naming_it(host: SliceHost) -> None:
    """The ingress calls `/invoke/{artifact}/{entry}`: a name with "/" was loaded and never callable."""
    with pytest.raises(SliceHostError) as refused:
        host("org.aether:faulty", config={"mode": "bad_entry_name"})
    assert refused.value.kind == "entry_point"
    assert "entry point 'a/b': a name cannot hold \"/\"" in refused.value.message, refused.value.message
    # a name that is no text (a lone surrogate) was loaded, stored, and then never found by a call
    with pytest.raises(SliceHostError) as refused:
        host("org.aether:faulty", config={"mode": "bad_entry_text"})
    assert refused.value.kind == "entry_point"
    assert "a name must be text: it holds a lone UTF-16 surrogate" in refused.value.message, (
        refused.value.message
    )
