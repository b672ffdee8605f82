"""Small file systems for the disk-full tests: a tmpfs (what the first report used: its replica died of
SIGBUS there) or a loop-mounted ext4 image (closer to a real disk: blocks, a journal, delayed
allocation). Mounting needs root (CI runs as root); without it, or without mount, the test is skipped
with the reason. Everything mounted is unmounted, and every image removed, however the test ends."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

KINDS = ("tmpfs", "ext4")


def _skip_unless_possible(kind: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"mounting a small {kind} needs root (CI runs the tests as root)")
    needed = ["mount", "umount"] + (["mkfs.ext4"] if kind == "ext4" else [])
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"mounting a small {kind} needs {', '.join(missing)}")


def _run(command: list[str], kind: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small {kind} here: {' '.join(command)}: {done.stderr.strip()}")


@contextmanager
def small_filesystem(directory: Path, *, mib: int, kind: str = "tmpfs") -> Iterator[Path]:
    """Mount a `mib` MiB file system of `kind` at `directory` (created) for the block; skip the test
    when it cannot be mounted."""
    _skip_unless_possible(kind)
    directory.mkdir(parents=True, exist_ok=True)
    image = directory.with_name(directory.name + ".img")
    if kind == "tmpfs":
        _run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(directory)], kind)
    else:
        with open(image, "wb") as file:
            file.truncate(mib << 20)
        # -m 0: no blocks reserved for root (the replicas run as root in CI and would write into them)
        try:
            _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], kind)
            _run(["mount", "-o", "loop", str(image), str(directory)], kind)
        except BaseException:
            image.unlink(missing_ok=True)
            raise
    try:
        yield directory
    finally:
        done = subprocess.run(["umount", str(directory)], capture_output=True, timeout=60)
        if done.returncode != 0:  # still busy (a process that outlived the test): detach it anyway
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=60)
        image.unlink(missing_ok=True)


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file into `directory` until its file system has no room left; returns the file."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 64 << 10, 4 << 10, 512, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as error:
                    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    break
        os.fsync(fd)
    finally:
        os.close(fd)
    return path
