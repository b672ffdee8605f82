"""The template's fork: `os.fork` without the at-fork work a process of one thread does not need.

Around the kernel's fork, `os.fork` runs what the modules imported registered with
`os.register_at_fork`: in the template, threading's and logging's hooks, which put back in order the
locks another thread may have held at the fork, and random's reseed once `random` is imported. In a
process of one thread no other thread holds a lock, so the lock hooks change nothing, yet they walk
threading's and logging's bookkeeping: ~60 pages each child touches, each a copy of a page it shares
with the template (~1.3 µs each, ~10 % of an instance's start).

`Forker.fork` forks through libc instead (ctypes, holding the GIL; on CPython 3.11 only, the version
whose after-fork work in C was checked to change nothing in a process of one thread, but for three
things it skips: a signal the template caught just before the fork, whose Python handler has not run
yet, has it run in the child too (os.fork clears it there: the template's only handler, SIGCHLD's, does
nothing); the C thread state keeps the template's native thread id (read by debuggers and profilers
only; `threading`'s copy is set here); no `os.fork` audit event is raised) and runs every
registered hook itself but those lock resets, from the interpreter's own lists of hooks (found once,
by their known members: they are read, never changed), in the order `os.fork` runs them. It forks with
`os.fork` while another thread runs (then the lock resets matter) and where it found no lists. What
it runs is kept per list length (a list only grows), so a fork touches nothing else in the template:
each page the template writes after a fork is a copy too. The template (`host.py`) is its one user.
"""

from __future__ import annotations

import _thread
import ctypes
import gc
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

Hook = Callable[[], object]

_NATIVE_FORK_VERSIONS = ((3, 11),)


def lock_resets() -> list[Any]:
    """The hooks, of the modules imported now, that only reset locks after a fork or hold them across
    it: nothing to do where no other thread can hold them."""
    resets: list[Any] = [
        threading._after_fork,  # type: ignore[attr-defined]
        logging._acquireLock,  # type: ignore[attr-defined]
        logging._releaseLock,  # type: ignore[attr-defined]
        logging._after_at_fork_child_reinit_locks,  # type: ignore[attr-defined]
    ]
    futures_thread = sys.modules.get("concurrent.futures.thread")
    shutdown_lock = getattr(futures_thread, "_global_shutdown_lock", None)
    if shutdown_lock is not None:
        resets += [shutdown_lock.acquire, shutdown_lock.release, shutdown_lock._at_fork_reinit]
    return resets


def _hook_list_holding(hook: Any) -> list[Any] | None:
    """The one list, of the objects the collector tracks, that holds `hook`: the interpreter's own list
    of at-fork hooks of a kind, for a hook only that kind has (None if not exactly one)."""
    lists = [referrer for referrer in gc.get_referrers(hook) if type(referrer) is list]
    return lists[0] if len(lists) == 1 else None


def _one_thread() -> bool:
    """Whether the kernel counts one thread in this process (`/proc/self/task` has two links more than
    it has threads); False if it cannot tell."""
    try:
        return os.stat("/proc/self/task").st_nlink == 3
    except OSError:
        return False


def _run_hooks(hooks: list[Hook]) -> None:
    """Run each hook as the interpreter does: whatever it raises (SystemExit and KeyboardInterrupt too:
    the interpreter reports them all as unraisable) is printed and the next hook runs."""
    for hook in hooks:
        try:
            hook()
        except BaseException:  # (else a hook's SystemExit would unwind a child as a template)
            print(f"Exception ignored in at-fork hook {hook!r}:", file=sys.stderr)
            traceback.print_exc()


class _Hooks:
    """One of the interpreter's hook lists, and the hooks of it to run (its lock resets left out),
    worked out again only when the list has grown."""

    def __init__(self, registered: list[Any], *, reverse: bool = False) -> None:
        self.registered = registered
        self.reverse = reverse
        self.known = -1
        self.to_run: list[Hook] = []

    def current(self) -> list[Hook]:
        if len(self.registered) != self.known:
            resets = lock_resets()
            hooks = [hook for hook in self.registered if not any(hook == reset for reset in resets)]
            self.to_run = hooks[::-1] if self.reverse else hooks
            self.known = len(self.registered)
        return self.to_run


class Forker:
    """`fork()`: os.fork's result, forked as cheaply as what the interpreter would run allows."""

    def __init__(self) -> None:
        self._libc_fork: Any = None
        self._alone = False  # the kernel counted one thread here (`native`)
        if sys.implementation.name != "cpython" or sys.version_info[:2] not in _NATIVE_FORK_VERSIONS:
            return
        before = _hook_list_holding(logging._acquireLock)  # type: ignore[attr-defined]
        in_parent = _hook_list_holding(logging._releaseLock)  # type: ignore[attr-defined]
        in_child = _hook_list_holding(threading._after_fork)  # type: ignore[attr-defined]
        if before is None or in_parent is None or in_child is None:
            return
        self._before = _Hooks(before, reverse=True)  # (os.fork runs them newest first)
        self._in_parent = _Hooks(in_parent)
        self._in_child = _Hooks(in_child)
        self._libc_fork = ctypes.PyDLL(None, use_errno=True).fork

    @property
    def native(self) -> bool:
        """Whether the next fork goes through libc (False: os.fork): while the process has one thread, of
        Python's (`_thread._count()`: none started) and of the kernel's (a thread started from C, or one
        of Python's still ending, holding its thread state)."""
        if self._libc_fork is None or _thread._count():
            return False
        # The kernel's count is read until it says one thread, then no more (a stat per fork would be ~10
        # page copies in the template): the template runs no code of the slice's once it forks, so no
        # thread starts in it from then on.
        if not self._alone:
            self._alone = _one_thread()
        return self._alone

    def fork(self) -> int:
        """Fork: 0 in the child, its pid in the parent (OSError if the kernel refused), the registered
        hooks that do something run as os.fork runs them."""
        if not self.native:
            return os.fork()
        # (worked out here, in the template: a child does not work them out again each)
        before, in_parent, in_child = (
            self._before.current(),
            self._in_parent.current(),
            self._in_child.current(),
        )
        if before:
            _run_hooks(before)
        pid = self._libc_fork()
        if pid == 0:
            threading._main_thread._native_id = _thread.get_native_id()  # type: ignore[attr-defined]
            if in_child:
                _run_hooks(in_child)
            return 0
        error = ctypes.get_errno() if pid < 0 else 0
        if in_parent:  # (a refused fork too, as os.fork: a `before` may hold a lock its pair releases)
            _run_hooks(in_parent)
        if pid < 0:
            raise OSError(error, os.strerror(error))
        return pid
