"""The template's fork (`aether_slice._fork.Forker`): what os.fork would run still runs, whichever way
it forks. Each case runs in a fresh interpreter of one thread, as a template is (this test process may
have threads of its own, which would make every fork an os.fork)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the template forks on Linux")

NATIVE = sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)

# What every case's script starts with: a Forker made as the template makes it, and `in_child(f)`,
# which forks, runs `f` in the child and returns what the child printed (JSON) once it has ended.
PRELUDE = """
import json, os, sys, threading
from aether_slice._fork import Forker

def in_child(forker, f):
    read, write = os.pipe()
    pid = forker.fork()
    if pid == 0:
        os.close(read)
        os.write(write, json.dumps(f()).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        said = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(said)
"""


def run(script: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {"out": json.loads(done.stdout.splitlines()[-1]), "err": done.stderr}


def test_a_child_draws_other_random_numbers_than_its_template_and_its_siblings():
    got = run("""
        forker = Forker()
        native = forker.native
        import random  # after the Forker, as a slice's import: its reseed is registered through it
        first = in_child(forker, random.random)
        second = in_child(forker, random.random)
        print(json.dumps({"native": native, "draws": [first, second, random.random()]}))
    """)["out"]
    assert got["native"] is NATIVE
    assert len(set(got["draws"])) == 3


def test_random_imported_before_the_forker_is_reseeded_too():
    got = run("""
        import random
        forker = Forker()
        native = forker.native
        draws = [in_child(forker, random.random), in_child(forker, random.random)]
        print(json.dumps({"native": native, "draws": draws}))
    """)["out"]
    assert got["native"] is NATIVE
    assert len(set(got["draws"])) == 2


def test_hooks_registered_after_it_run_where_and_in_the_order_os_fork_runs_them_and_only_once():
    got = run("""
        forker = Forker()
        said = []
        for name in ("a", "b"):
            os.register_at_fork(
                before=lambda name=name: said.append("before " + name),
                after_in_parent=lambda name=name: said.append("parent " + name),
                after_in_child=lambda name=name: said.append("child " + name),
            )
        native = forker.native
        child = in_child(forker, lambda: said)
        parent = list(said)
        said.clear()
        reference = in_child(type("OsFork", (), {"fork": staticmethod(os.fork)}), lambda: said)
        print(json.dumps({"native": native, "child": child, "parent": parent, "reference": reference,
                          "reference_parent": said}))
    """)["out"]
    assert got["native"] is NATIVE
    assert got["child"] == got["reference"] == ["before b", "before a", "child a", "child b"]
    assert got["parent"] == got["reference_parent"] == ["before b", "before a", "parent a", "parent b"]


def test_a_hook_registered_with_a_reference_taken_before_it_still_runs():
    got = run("""
        register = os.register_at_fork
        forker = Forker()
        said = []
        register(after_in_child=lambda: said.append("child"))
        print(json.dumps({"native": forker.native, "child": in_child(forker, lambda: said)}))
    """)["out"]
    assert got == {"native": NATIVE, "child": ["child"]}


def test_with_a_second_thread_it_forks_as_os_fork_and_the_child_has_one_thread():
    got = run("""
        forker = Forker()
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        native = forker.native
        child = in_child(forker, lambda: [threading.active_count(), thread.is_alive()])
        stop.set()
        thread.join()
        # (join returns once Python is done with the thread; the kernel may count it a moment longer)
        import time
        deadline = time.monotonic() + 30
        while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        print(json.dumps({"native": native, "child": child, "native_after": forker.native}))
    """)["out"]
    assert got == {"native": False, "child": [1, False], "native_after": NATIVE}


def test_the_child_knows_its_own_thread_id():
    got = run("""
        forker = Forker()
        child = in_child(
            forker, lambda: [threading.main_thread().native_id, threading.get_native_id(), os.getpid()]
        )
        print(json.dumps({"child": child, "template": threading.main_thread().native_id}))
    """)["out"]
    main_id, native_id, pid = got["child"]
    assert main_id == native_id == pid != got["template"]


def test_a_failing_hook_is_reported_and_the_fork_goes_on():
    done = run("""
        forker = Forker()
        said = []
        def fails():
            raise RuntimeError("this hook fails")
        os.register_at_fork(after_in_child=fails)
        os.register_at_fork(after_in_child=lambda: said.append("next"))
        print(json.dumps(in_child(forker, lambda: said)))
    """)
    assert done["out"] == ["next"]
    assert "RuntimeError: this hook fails" in done["err"]


def test_a_hook_raising_system_exit_is_reported_as_os_fork_reports_it_and_the_fork_goes_on():
    # os.fork reports whatever a hook raises, SystemExit and KeyboardInterrupt included, and goes on: a
    # hook's SystemExit must not end the template, nor unwind a child through the template's own code.
    done = run("""
        forker = Forker()
        said = []
        def exits():
            raise SystemExit("this hook exits")
        os.register_at_fork(before=exits, after_in_parent=exits, after_in_child=exits)
        os.register_at_fork(after_in_child=lambda: said.append("next"))
        child = in_child(forker, lambda: said)
        reference = in_child(type("OsFork", (), {"fork": staticmethod(os.fork)}), lambda: said)
        print(json.dumps({"child": child, "reference": reference}))
    """)
    assert done["out"] == {"child": ["next"], "reference": ["next"]}
    # before, parent, child; twice. (os.fork's parent and child write their reports in pieces, at once:
    # "SystemExit" and ": this hook exits" can be apart, another report between them.)
    assert done["err"].count("this hook exits") == 6


@pytest.mark.skipif(not NATIVE, reason="Forker forks through libc on CPython 3.11 only")
def test_a_fork_the_kernel_refuses_runs_the_parent_hooks_as_os_fork_does():
    # os.fork runs the after_in_parent hooks whether or not the kernel forked: a before/after_in_parent
    # pair holding a lock across the fork must not leave it held (the next fork's `before` would hang).
    done = run("""
        import ctypes, errno
        forker = Forker()
        lock = threading.Lock()
        os.register_at_fork(before=lock.acquire, after_in_parent=lock.release)
        def refused():
            ctypes.set_errno(errno.EAGAIN)
            return -1
        forker._libc_fork = refused  # the kernel's refusal, as libc reports it
        try:
            forker.fork()
        except OSError as error:
            refusal = error.errno
        print(json.dumps({"refusal": refusal, "held": lock.locked()}))
    """)
    assert done["out"] == {"refusal": errno.EAGAIN, "held": False}
