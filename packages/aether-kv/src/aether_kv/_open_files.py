"""A server process's limit on open files: raised to what the system allows at start, and named when it
runs out.

A login shell or a service manager usually starts a process with a soft limit of 1,024 open files and a
hard limit far above it (systemd: 524,288). A node holds two or three per instance (its socket, its
output's pipe, and its log file once it writes) besides its connections. So at the soft limit a node ran
out at ~500 instances: every load after that failed with "[Errno 24] Too many open files", and the node
could open no connection to the KV or a peer either. The soft limit is a default for programs that do
not expect many files; a server may raise it up to the hard limit on its own (as Go's runtime and uv do
at start), and the processes it starts inherit it. The hard limit stays the operator's (`LimitNOFILE=`
in a systemd unit, `ulimit -Hn`).
"""

from __future__ import annotations

import errno
import logging
import resource

log = logging.getLogger("aether_kv.open_files")

_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE})


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (unlimited: left as it is, and
    never above what the kernel takes), saying so on the log; returns the soft limit now. Never raises:
    where the system refuses, the limit stays as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as error:  # (a kernel whose nr_open is below the hard limit: EPERM)
        log.warning("open files: the limit stays %d (raising it to %d was refused: %s)", soft, hard, error)
        return soft
    log.info("open files: limit raised from %d to %d (the hard limit)", soft, hard)
    return hard


def out_of_files_hint(error: BaseException) -> str | None:
    """For an error that says this process (EMFILE) or the whole system (ENFILE) has no file descriptor
    left: what to do about it, naming the limit; None for any other error."""
    if not isinstance(error, OSError) or error.errno not in _OUT_OF_FILES:
        return None
    if error.errno == errno.ENFILE:
        return (
            "the system has as many files open as it allows (fs.file-max): raise it, or run fewer processes"
        )
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        f"this process has as many files open as its limit allows ({soft}): raise its hard limit"
        " (LimitNOFILE= in its systemd unit, `ulimit -Hn` where it is started), or place fewer instances here"
    )
