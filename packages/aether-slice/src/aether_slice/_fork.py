"""The template's fork: `os.fork` without the at-fork work a process of one thread does not need.

Around the kernel's fork, `os.fork` runs what the interpreter and the modules it imported registered
(`os.register_at_fork`): in the template, threading's and logging's, which put back in order the locks
another thread may have held at the fork, and random's reseed once `random` is imported. In a process
of one thread no other thread holds a lock, so the lock hooks change nothing, yet they walk threading's
and logging's bookkeeping: ~120 pages each child touches, each a copy of a page it shares with the
template (~1.3 µs each, ~25 % of an instance's start), and ~15 in the template per fork.

`Forker.fork` forks through libc instead (ctypes, holding the GIL, on CPython 3.11 only: the version
whose after-fork work in C was checked to change nothing in a process of one thread), and runs itself
the hooks that do something: every hook registered after the Forker was made (it wraps
`os.register_at_fork`), in the order the interpreter would run them, except those it knows are lock
resets. It falls back to `os.fork` whenever it cannot tell what that would run: a hook it did not see
registered (the interpreter's hook lists, found once, hold more than it counted), a second thread, an
interpreter of another version, or hook lists it could not find. Pure of any node concern: the template
(`host.py`) is its one user.
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


def _lock_resets() -> list[Any]:
    """The hooks, registered by modules imported now, that only reset locks after a fork or hold them
    across it: nothing to do where no other thread can hold them."""
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


def _is_lock_reset(hook: Any) -> bool:
    return any(hook == known for known in _lock_resets())


def _hook_list_holding(hook: Any) -> list[Any] | None:
    """The one list, of the objects the collector tracks, that holds `hook`: the interpreter's own list
    of at-fork hooks of a kind, for a hook only one kind has (None if not exactly one)."""
    lists = [referrer for referrer in gc.get_referrers(hook) if type(referrer) is list]
    return lists[0] if len(lists) == 1 else None


def _run_hooks(hooks: list[Hook]) -> None:
    """Run each hook as the interpreter does: an exception is printed and the next hook runs."""
    for hook in hooks:
        try:
            hook()
        except Exception:
            print(f"Exception ignored in at-fork hook {hook!r}:", file=sys.stderr)
            traceback.print_exc()


class Forker:
    """`fork()`: os.fork's result, forked as cheaply as what the interpreter would run allows."""

    def __init__(self) -> None:
        self._before: list[Hook] = []  # hooks registered since, to run (before: in reverse)
        self._in_parent: list[Hook] = []
        self._in_child: list[Hook] = []
        self._lists: tuple[list[Any], list[Any], list[Any]] | None = None
        self._counted = [0, 0, 0]  # hooks each of those lists should hold: what we know of
        self._libc_fork: Any = None
        if sys.implementation.name != "cpython" or sys.version_info[:2] not in _NATIVE_FORK_VERSIONS:
            return
        before = _hook_list_holding(logging._acquireLock)  # type: ignore[attr-defined]
        in_parent = _hook_list_holding(logging._releaseLock)  # type: ignore[attr-defined]
        in_child = _hook_list_holding(threading._after_fork)  # type: ignore[attr-defined]
        if before is None or in_parent is None or in_child is None:
            return
        if not all(_is_lock_reset(hook) for hook in (*before, *in_parent, *in_child)):
            return  # a hook registered before us that does more: os.fork runs it
        self._lists = (before, in_parent, in_child)
        self._counted = [len(before), len(in_parent), len(in_child)]
        self._libc_fork = ctypes.PyDLL(None, use_errno=True).fork
        self._wrap_registration()

    def _wrap_registration(self) -> None:
        register = os.register_at_fork

        def register_at_fork(
            *,
            before: Hook | None = None,
            after_in_child: Hook | None = None,
            after_in_parent: Hook | None = None,
        ) -> None:
            given = {"before": before, "after_in_child": after_in_child, "after_in_parent": after_in_parent}
            # The interpreter's checks and lists, as ever (os.fork runs them all).
            register(**{kind: hook for kind, hook in given.items() if hook is not None})
            for index, (hooks, hook) in enumerate(
                ((self._before, before), (self._in_parent, after_in_parent), (self._in_child, after_in_child))
            ):
                if hook is not None:
                    self._counted[index] += 1
                    if not _is_lock_reset(hook):
                        hooks.append(hook)

        register_at_fork.__doc__ = register.__doc__
        os.register_at_fork = register_at_fork

    @property
    def native(self) -> bool:
        """Whether the next fork goes through libc (False: os.fork)."""
        return self._libc_fork is not None and not _thread._count() and not self._unseen_hooks()

    def _unseen_hooks(self) -> bool:
        """Whether the interpreter's lists hold hooks registered past the wrapper (each page the
        template writes between two forks is a copy: no object made, none but these touched)."""
        before, in_parent, in_child = self._lists  # type: ignore[misc]
        counted = self._counted
        return len(before) != counted[0] or len(in_parent) != counted[1] or len(in_child) != counted[2]

    def fork(self) -> int:
        """Fork: 0 in the child, its pid in the parent (OSError if the kernel refused), the registered
        hooks that do something run as os.fork runs them."""
        if not self.native:
            return os.fork()
        if self._before:
            _run_hooks(self._before[::-1])
        pid = self._libc_fork()
        if pid == 0:
            threading._main_thread._native_id = _thread.get_native_id()  # type: ignore[attr-defined]
            if self._in_child:
                _run_hooks(self._in_child)
        elif pid > 0:
            if self._in_parent:
                _run_hooks(self._in_parent)
        else:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
        return pid
